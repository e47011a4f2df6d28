"""Hardened inputs, owned randomness, clean stops and a hardened `tp serve` (issue 11, 6–10).

Real components throughout: the `tp` CLI in subprocesses, the local engine, real files."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

TP = [sys.executable, "-c", "from textpolicy.cli import main; main()"]


def _tp(args: list[str], cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 300, **kw: Any) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
                "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([*TP, *args], env=full_env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, **kw)


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------------------------------------
# 8. Each run owns its randomness

#: fields that are wall-clock measurements, not results
# row_sha256 is the checkpoint row's checksum, over saved_at too
TIMING_KEYS = {"step_time_s", "saved_at", "row_sha256"}


def _run_files(root: Path) -> dict[str, Any]:
    """Every run file under ``root`` (rows without timing fields) and every checkpoint state
    file's bytes, keyed by path relative to ``root``."""
    out: dict[str, Any] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or rel.split("/")[0] not in ("baseline", "candidate"):
            continue
        if path.suffix == ".jsonl":
            out[rel] = [{k: v for k, v in r.items() if k not in TIMING_KEYS}
                        for r in _rows(path)]
        elif "/checkpoints/" in f"/{rel}" and path.suffix in (".safetensors", ".pt", ".bin"):
            out[rel] = path.read_bytes()
    return out


@pytest.mark.slow
def test_parallel_setting_does_not_change_any_run_file(tmp_path: Path) -> None:
    """A campaign at parallel=1 and at parallel=2 (threads of one process) writes identical
    run files: metrics, steps, generations, eval rows, checkpoint rows and LoRA weights."""
    args = ["campaign", "--engine", "local", "--task", "arithmetic", "--seeds", "0-1",
            "--max-steps", "2", "--eval-every", "1", "--eval-samples", "2",
            "--eval-prompts", "3", "--lora-rank", "4", "--lr", "5e-3", "--save-every", "1",
            "--resamples", "200", "--execute", "--progress", "off"]
    results = {}
    for parallel in (1, 2):
        out = tmp_path / f"p{parallel}"
        result = _tp([*args, "--campaign-root", str(out), "--parallel", str(parallel),
                      "--workers", "thread"], tmp_path, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
        results[parallel] = _run_files(out)
    one, two = results[1], results[2]
    assert sorted(one) == sorted(two)
    assert any(k.endswith("metrics.jsonl") for k in one)
    assert any(isinstance(v, bytes) for v in one.values()), sorted(one)
    for key in one:
        assert one[key] == two[key], key
    # seed 0 and seed 1 differ (the LoRA init and the data order come from the seed)
    assert one["baseline/seed0/metrics.jsonl"] != one["baseline/seed1/metrics.jsonl"]


def test_run_neither_seeds_nor_relies_on_global_rngs(tmp_path: Path) -> None:
    """Training leaves Python's and NumPy's global generators exactly as they were, never seeds
    torch's from --seed (its state afterwards does not depend on --seed), and gives the same
    files whatever state torch's global generator was in (a run that relied on global state
    would depend on what other threads did); checkpoint rows carry no global RNG state."""
    import torch

    from textpolicy.training import make_config, run_training

    def train(name: str, seed: int, torch_seed: int) -> tuple[Any, list[dict[str, Any]]]:
        random.seed(123)
        np.random.seed(123)
        torch.manual_seed(torch_seed)
        before = (random.getstate(), np.random.get_state()[1].copy())
        config = make_config(log_dir=str(tmp_path / name), max_steps=2, seed=seed,
                             eval_every=0, lora_rank=2, save_every=1, lr=5e-3)
        assert run_training(config, progress="off").status == "finished"
        assert random.getstate() == before[0]
        assert np.array_equal(np.random.get_state()[1], before[1])
        rows = [{k: v for k, v in r.items() if k not in TIMING_KEYS}
                for r in _rows(tmp_path / name / "metrics.jsonl")]
        return torch.get_rng_state().clone(), rows

    state_a, rows_a = train("a", seed=5, torch_seed=1)
    state_b, rows_b = train("b", seed=6, torch_seed=1)
    _state_c, rows_c = train("c", seed=5, torch_seed=2)
    assert torch.equal(state_a, state_b)  # not seeded from --seed
    assert rows_a == rows_c  # not relied upon
    assert rows_a != rows_b
    checkpoints = _rows(tmp_path / "a" / "checkpoints.jsonl")
    assert checkpoints and all("rng_state" not in r for r in checkpoints)
    record = json.loads((tmp_path / "a" / "config.json").read_text())
    assert "step-rng" in record["randomness"]["stage_rng"]


def test_stages_get_the_runs_generator_through_the_step_context() -> None:
    """``StepContext.rng`` is the generator the caller passed (the loop passes
    ``step_rng(seed, step)``), deterministic per (seed, step) and different across seeds."""
    import attrs

    from textpolicy.plugins import build_registry, hookimpl
    from textpolicy.records import AdvantageStage
    from textpolicy.testing import make_rollouts
    from textpolicy.training.seeds import step_rng

    drawn: list[float] = []

    @attrs.frozen
    class NoParams:
        pass

    def noisy(credit: Any, rollouts: Any, ctx: Any, params: Any) -> Any:
        drawn.append(float(ctx.rng.random()))
        return credit

    class Plugin:
        @hookimpl
        def textpolicy_register_stages(self) -> list[AdvantageStage]:
            return [AdvantageStage(name="noisy", level="token", fn=noisy, params=NoParams,
                                   doc="draws one number from ctx.rng")]

    from textpolicy.pipeline import build_pipeline

    registry = build_registry(extra_plugins=[("noisy", Plugin())], load_entry_points=False)
    rollouts = make_rollouts(rewards=[1, 0, 0, 1], group_size=2, length=4)
    for seed in (0, 0, 1):
        pipe = build_pipeline("grpo>noisy", {}, registry=registry)
        pipe(rollouts, step=3, rng=step_rng(seed, 3))
    assert drawn[0] == drawn[1] != drawn[2]
    assert drawn[0] == float(step_rng(0, 3).random())


# ---------------------------------------------------------------------------------------------
# 6. Numbers and sizes


@pytest.mark.parametrize("flags", [
    ["--temperature", "inf"], ["--eval-temperature", "nan"], ["--lr", "nan"],
    ["--lr", "-inf"], ["--gtpo-beta", "nan", "--algorithm", "full"], ["--seed", str(2**40)],
])
def test_train_rejects_non_finite_and_out_of_range_numbers(tmp_path: Path,
                                                           flags: list[str]) -> None:
    from click.testing import CliRunner

    from textpolicy.cli import main

    log_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--log-dir", str(log_dir), "--max-steps", "1",
                                       "--eval-every", "0", *flags])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert flags[0] in lines[0]
    assert not log_dir.exists()


def test_library_config_rejects_non_finite_values() -> None:
    from textpolicy.errors import ConfigError
    from textpolicy.training import make_config

    for key in ("lr", "temperature", "eval_temperature"):
        for bad in (float("nan"), float("inf")):
            with pytest.raises(ConfigError, match=f"{key} must be a finite number"):
                make_config(log_dir="unused", **{key: bad})


BAD_SPEC = """\
kind = "campaign"
engine = "local"
task = "arithmetic"
seeds = [0, 1]
[training]
lr = nan
temperature = inf
[eval]
temperature = -inf
[stage_params.gtpo]
beta = nan
[analysis]
resamples = 9223372036854775807
[[arms]]
name = "X"
pipeline = "grpo"
[[arms]]
name = "x"
pipeline = "full"
"""


def test_spec_rejects_non_finite_values_huge_sizes_and_case_twins(tmp_path: Path) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text(BAD_SPEC)
    result = _tp(["run", str(spec), "--progress", "off"], tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    err = result.stderr
    for key in ("training.lr: nan", "training.temperature: inf", "eval.temperature: -inf",
                "stage_params.gtpo.beta: nan"):
        assert f"{key}: not a finite number" in err, err
    assert "analysis.resamples: 9223372036854775807: must be at most 10,000,000" in err
    assert "arms[1].name: 'x': duplicate arm name 'x' (same as 'X' ignoring case)" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]  # nothing written


@pytest.mark.parametrize("case", ["bom", "nested", "seeds", "seed_range", "long_name",
                                  "huge_file"])
def test_spec_size_bounds_give_one_clear_line_quickly(tmp_path: Path, case: str) -> None:
    import time

    spec = tmp_path / "s.toml"
    head = 'kind = "campaign"\nengine = "local"\ntask = "arithmetic"\n'
    expected = {
        "bom": "byte-order mark (BOM",
        "nested": "nested 50000 deep; allowed: at most 32",
        "seeds": "seeds: [0, 1, 2",
        "seed_range": "more than 1,000 seeds",
        "long_name": "(10,000,",
        "huge_file": "bytes; allowed: a spec file of at most 1,048,576 bytes",
    }[case]
    args = ["run", str(spec), "--dry-run", "--progress", "off"]
    if case == "bom":
        spec.write_bytes(b"\xef\xbb\xbf" + head.encode())
    elif case == "nested":
        spec.write_text(head + "x = " + "[" * 50_000 + "]" * 50_000 + "\n")
    elif case == "seeds":
        spec.write_text(head + "seeds = [" + ",".join(map(str, range(80_000))) + "]\n")
    elif case == "seed_range":
        args = ["campaign", "--engine", "local", "--task", "arithmetic", "--seeds",
                "0-1500000", "--campaign-root", str(tmp_path / "c"), "--progress", "off"]
    elif case == "long_name":
        spec.write_text(head + "[[arms]]\npipeline = \"" + "a" * 1_000_000 + "\"\n"
                        "[[arms]]\npipeline = \"grpo\"\n")
        expected = "(1,000,"
    else:
        spec.write_text(head + "# " + "x" * (1 << 21) + "\n")
    t0 = time.perf_counter()
    result = _tp(args, tmp_path)
    elapsed = time.perf_counter() - t0
    assert result.returncode == 2, result.stderr[-2000:]
    assert expected in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert max(map(len, result.stderr.splitlines())) <= 1000
    assert len(result.stderr) < 4000
    assert elapsed < 30
    assert not (tmp_path / "c").exists()


def test_a_metrics_row_with_a_list_step_is_one_line_naming_file_and_line(
        tmp_path: Path) -> None:
    from textpolicy.errors import AnalysisError
    from textpolicy.runner.results import completed_steps, is_finished

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 0}\n\n{"step": [1]}\n')
    for check in (completed_steps, lambda d: is_finished(d, 2)):
        with pytest.raises(AnalysisError, match=r"metrics\.jsonl: line 3: 'step' is \[1\]"):
            check(run)
    from textpolicy.analysis.jsonl import column

    with pytest.raises(AnalysisError, match=r"x\.jsonl: line 2: key 'step' holds \[1\]"):
        column([{"step": 0}, {"step": [1]}], "step", Path("x.jsonl"))
    with pytest.raises(AnalysisError, match=r"line 1: key 'step' holds \[0\]"):
        column([{"step": [0]}, {"step": [1]}], "step", Path("x.jsonl"))


def test_every_json_file_written_is_strict_json(tmp_path: Path) -> None:
    """NaN / inf values become null: files parse with a strict parser (no NaN tokens)."""
    from textpolicy import strictjson
    from textpolicy.training.runfiles import dumps, write_json_atomic

    data = {"a": float("nan"), "b": [1.0, float("inf")], "c": np.array([np.nan, 2.0]),
            "d": np.float32("-inf"), "e": {"f": (float("nan"),)}}

    def strict(text: str) -> Any:
        def bad(token: str) -> None:
            raise AssertionError(f"non-strict token {token}")
        return json.loads(text, parse_constant=bad)

    expected = {"a": None, "b": [1.0, None], "c": [None, 2.0], "d": None, "e": {"f": [None]}}
    assert strict(strictjson.dumps(data)) == expected
    assert strict(dumps(data)) == expected
    write_json_atomic(tmp_path / "x.json", data)
    assert strict((tmp_path / "x.json").read_text()) == expected


# ---------------------------------------------------------------------------------------------
# 7. Stopping: a dead server, a second interrupt, SIGTERM in thread mode


def _popen_tp(args: list[str], cwd: Path, env: dict[str, str] | None = None
              ) -> subprocess.Popen[str]:
    full_env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
                "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen([*TP, *args], env=full_env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_rows(path: Path, n: int, proc: subprocess.Popen[str], timeout: float = 240) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text(encoding="utf-8").splitlines()) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"{path} never had {n} rows")


@pytest.mark.slow
def test_a_second_interrupt_aborts_train_at_once_and_a_rerun_resumes(tmp_path: Path) -> None:
    import signal
    import time

    log_dir = tmp_path / "run"
    args = ["train", "--log-dir", str(log_dir), "--max-steps", "40", "--eval-every", "0",
            "--save-every", "3", "--progress", "off"]
    proc = _popen_tp(args, tmp_path)
    _wait_rows(log_dir / "metrics.jsonl", 4, proc)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.monotonic() - t0 < 10
    assert "aborted; run the same command again to resume" in err
    assert "Traceback" not in err
    cut = len(_rows(log_dir / "metrics.jsonl"))
    assert cut < 40
    # the same command repairs whatever the abort cut and finishes the run without a gap
    result = _tp(args, tmp_path)
    assert result.returncode == 0, result.stderr
    steps = [r["step"] for r in _rows(log_dir / "metrics.jsonl")]
    assert steps == list(range(40)), steps


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["thread", "process"])
def test_tp_run_sigterm_stops_and_a_second_signal_exits_130(tmp_path: Path,
                                                             workers: str) -> None:
    import signal
    import time

    out = tmp_path / "c"
    args = ["campaign", "--engine", "local", "--task", "arithmetic", "--seeds", "0",
            "--max-steps", "400", "--eval-every", "0", "--save-every", "5", "--execute",
            "--parallel", "2", "--workers", workers, "--progress", "plain",
            "--campaign-root", str(out)]
    proc = _popen_tp(args, tmp_path)
    _wait_rows(out / "baseline" / "seed0" / "metrics.jsonl", 2, proc)
    proc.send_signal(signal.SIGTERM)
    if workers == "thread":  # one SIGTERM: every run stops after its step, with a checkpoint
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["status"] == "incomplete"
        rows = _rows(out / "baseline" / "seed0" / "checkpoints.jsonl")
        steps = [r["step"] for r in _rows(out / "baseline" / "seed0" / "metrics.jsonl")]
        assert rows[-1]["step"] == len(steps) < 400
        return
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert time.monotonic() - t0 < 20
    assert "Traceback" not in err


class _Serve:
    """`tp serve` on a fixed port (so it can be restarted there) with its own state dir."""

    def __init__(self, tmp: Path, port: int | None = None) -> None:
        import socket

        if port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.tmp = tmp
        self.log = tmp / "serve.log"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        env = {**os.environ, "TINKER_TELEMETRY": "0", "PYTHONUNBUFFERED": "1"}
        with open(self.log, "a", encoding="utf-8") as log:
            self.proc = subprocess.Popen(
                [*TP, "serve", "--port", str(self.port), "--state-dir", str(self.tmp / "st")],
                stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        assert self.proc.stdout is not None
        assert "listening on" in self.proc.stdout.readline(), self.log.read_text()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)


TINKER_ENV = {"TINKER_API_KEY": "tml-local", "TINKER_TELEMETRY": "0"}


def _tinker_train(url: str, log_dir: Path, budget: float, steps: int = 6) -> list[str]:
    return ["train", "--engine", "tinker", "--base-url", url, "--task", "arithmetic",
            "--log-dir", str(log_dir), "--max-steps", str(steps), "--save-every", "2",
            "--eval-every", "0", "--progress", "off",
            "--engine-option", f"unreachable_timeout_s={budget:g}"]


@pytest.mark.slow
def test_a_dead_server_stops_the_run_with_one_line_in_bounded_time(tmp_path: Path) -> None:
    import time

    serve = _Serve(tmp_path)
    serve.start()
    log_dir = tmp_path / "run"
    proc = _popen_tp(_tinker_train(serve.url, log_dir, budget=3, steps=200), tmp_path,
                     env=TINKER_ENV)
    try:
        _wait_rows(log_dir / "metrics.jsonl", 5, proc)
    finally:
        serve.kill()
    t0 = time.monotonic()
    _out, err = proc.communicate(timeout=120)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, err
    assert elapsed < 20, elapsed
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    saved = _rows(log_dir / "checkpoints.jsonl")[-1]["step"]
    assert last.startswith(f"Error: the Tinker service at {serve.url} was unreachable for "), last
    assert f"the last checkpoint is step {saved} in {log_dir}" in last
    assert last.endswith("run the same command again to resume")
    steps = [r["step"] for r in _rows(log_dir / "metrics.jsonl")]
    assert steps == list(range(len(steps)))


@pytest.mark.slow
def test_a_serve_restart_recovers_from_the_last_checkpoint_exactly(tmp_path: Path) -> None:
    """After `tp serve` restarts (same port and state dir), `404 unknown session` recovers by
    recreating the session and the clients from the last checkpoint: the run finishes with
    the rows an uninterrupted run writes."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    reference = _Serve(tmp_path / "a")
    reference.start()
    try:
        done = _tp(_tinker_train(reference.url, tmp_path / "ref", budget=60), tmp_path,
                   env=TINKER_ENV)
    finally:
        reference.kill()
    assert done.returncode == 0, done.stderr

    serve = _Serve(tmp_path / "b")
    serve.start()
    log_dir = tmp_path / "run"
    proc = _popen_tp(_tinker_train(serve.url, log_dir, budget=60), tmp_path, env=TINKER_ENV)
    try:
        _wait_rows(log_dir / "metrics.jsonl", 3, proc)
        serve.kill()
        serve.start()
        _out, err = proc.communicate(timeout=180)
    finally:
        serve.kill()
    assert proc.returncode == 0, err
    assert "does not know this session any more" in err

    def rows(run: Path, name: str) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k not in TIMING_KEYS}
                for r in _rows(run / name)]

    assert rows(log_dir, "emergence/generations.jsonl") == rows(
        tmp_path / "ref", "emergence/generations.jsonl")
    # the loss of one datum set differs in the last float bits between two server processes
    got, want = rows(log_dir, "metrics.jsonl"), rows(tmp_path / "ref", "metrics.jsonl")
    # and so does every number computed from logprobs (loss, KL, entropy, expected
    # duplicates): floats agree to rounding, everything else exactly
    assert [sorted(r) for r in got] == [sorted(r) for r in want]
    for g, w in zip(got, want, strict=True):
        for key, value in w.items():
            if isinstance(value, float):
                assert g[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (g["step"], key)
            else:
                assert g[key] == value, (g["step"], key)


# ---------------------------------------------------------------------------------------------
# 9. Nothing left behind


def _dead_pid() -> int:
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


def _cache_copy(tmp_path: Path) -> Path:
    """A private cache dir holding a copy of the built tiny model (no rebuild)."""
    import shutil

    from textpolicy.engines.local.cache import cache_root
    from textpolicy.engines.local.tiny import tiny_model_path

    built = tiny_model_path()
    cache = tmp_path / "cache"
    shutil.copytree(built, cache / built.relative_to(cache_root()))
    return cache


def test_leftovers_of_dead_processes_are_removed_at_the_next_start(tmp_path: Path) -> None:
    import time

    from textpolicy.engines.local.tiny import tiny_model_path

    cache = _cache_copy(tmp_path)
    name = tiny_model_path().name
    dead = _dead_pid()
    leftovers = [cache / f".{name}.build-{dead}-x1", cache / f".{name}.trash-{dead}-x2"]
    ckpt = tmp_path / "run" / "checkpoints"
    leftovers += [ckpt / f".step_1.saving-{dead}-a", ckpt / f".step_2.old-{dead}-b",
                  ckpt / ".step_3.saving-legacy"]
    alive = ckpt / f".step_4.saving-{os.getpid()}-c"  # a live process's save: kept
    for d in [*leftovers, alive]:
        (d / "model").mkdir(parents=True)
        (d / "model" / "part.safetensors").write_bytes(b"\0" * 1000)
    hour_ago = time.time() - 7200
    os.utime(ckpt / ".step_3.saving-legacy", (hour_ago, hour_ago))
    result = _tp(["train", "--log-dir", str(tmp_path / "run"), "--max-steps", "1",
                  "--eval-every", "0", "--progress", "off"], tmp_path,
                 env={"TEXTPOLICY_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.stderr
    assert [d for d in leftovers if d.exists()] == []
    assert alive.exists()
    assert (ckpt / "step_1").is_dir()


@pytest.mark.slow
def test_a_full_disk_during_a_save_is_one_line_and_resume_stays_exact(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.strip()}")
    try:
        args = ["--max-steps", "2", "--save-every", "1", "--eval-every", "0", "--progress",
                "off"]
        log_dir = mount / "run"
        full = _tp(["train", "--log-dir", str(log_dir), *args], tmp_path)
        assert full.returncode == 1, full.stderr
        lines = full.stderr.strip().splitlines()
        assert len(lines) == 1, full.stderr
        assert lines[-1].startswith(f"Error: {log_dir.resolve()}/checkpoints/step_1: no "
                                    "space left on device while saving the checkpoint")
        assert "Traceback" not in full.stderr
        assert [p.name for p in (log_dir / "checkpoints").iterdir()] == []
        subprocess.run(["mount", "-o", "remount,size=16m", str(mount)], check=True)
        again = _tp(["train", "--log-dir", str(log_dir), *args], tmp_path)
        assert again.returncode == 0, again.stderr
        ref = _tp(["train", "--log-dir", str(tmp_path / "ref"), *args], tmp_path)
        assert ref.returncode == 0, ref.stderr

        def rows(run: Path) -> list[dict[str, Any]]:
            return [{k: v for k, v in r.items() if k not in TIMING_KEYS}
                    for r in _rows(run / "metrics.jsonl")]

        assert rows(log_dir) == rows(tmp_path / "ref")
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_wandb_offline_files_go_next_to_the_run_not_into_cwd(tmp_path: Path) -> None:
    run = tmp_path / "out" / "run"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"step": 0, "loss": 1.0}\n{"step": 1, "loss": 0.5}\n')
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "WANDB_DIR"}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true")
    result = subprocess.run([*TP, "follow", "--metrics-path", str(run / "metrics.jsonl"),
                             "--no-follow"], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert list(cwd.iterdir()) == []
    assert list((run / "wandb").glob("offline-run-*")), sorted(run.rglob("*"))


# ---------------------------------------------------------------------------------------------
# 10. tp serve hardened


@pytest.fixture(scope="module")
def hard_serve(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("hard_serve")
    env = {**os.environ, "TINKER_TELEMETRY": "0", "PYTHONUNBUFFERED": "1"}
    log = open(tmp / "serve.log", "w", encoding="utf-8")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([*TP, "serve", "--port", "0", "--state-dir", str(tmp / "st"),
                             "--max-body-mb", "1", "--max-threads", "8"],
                            stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    url = first.split("listening on ")[1].split()[0]
    port = int(url.rsplit(":", 1)[1])
    yield {"proc": proc, "port": port, "url": url, "tmp": tmp, "log": tmp / "serve.log"}
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    log.close()


def _raw(port: int, head: str, body: bytes = b"", timeout: float = 10) -> tuple[int, str]:
    """Send a raw HTTP request; return (status, body text)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head_bytes, _, rest = data.partition(b"\r\n\r\n")
        status = int(head_bytes.split(b" ")[1])
        length = int(next((line.split(b":")[1] for line in head_bytes.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), b"0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, rest.decode("utf-8", "replace")


def _post(path: str, length: int | str, key: str | None = "tml-x", extra: str = "") -> str:
    lines = [f"POST /api/v1/{path} HTTP/1.1", "Host: x", f"Content-Length: {length}"]
    if key:
        lines.append(f"X-API-Key: {key}")
    return "\r\n".join(lines) + "\r\n" + extra


def test_serve_checks_the_key_and_the_size_before_reading_a_body(hard_serve: Any) -> None:
    port = hard_serve["port"]
    # 200 MB announced, 1 kB sent: answered at once, nothing read or buffered
    status, text = _raw(port, _post("create_session", 200_000_000, key=None), b"x" * 1000)
    assert status == 401 and "X-API-Key" in text
    status, text = _raw(port, _post("create_session", 200_000_000), b"x" * 1000)
    assert status == 413 and "at most 1,048,576" in text
    for bad in ("abc", "-5", "1e9", "99999999999999999999999"):
        status, text = _raw(port, _post("create_session", bad), b"{}")
        assert status == 400 and "malformed Content-Length" in text, (bad, text)


def test_serve_answers_400_to_malformed_json_and_zstd_and_bounds_decompression(
        hard_serve: Any) -> None:
    import zstandard

    port = hard_serve["port"]
    for body in (b"{not json", b"[1, 2]", b"\xff\xfe"):
        status, text = _raw(port, _post("create_session", len(body)), body)
        assert status == 400, (body, status, text)
    junk = b"\x28\xb5\x2f\xfd" + b"garbage" * 10
    status, text = _raw(port, _post("forward_backward", len(junk),
                                    extra="Content-Encoding: zstd\r\n"), junk)
    assert status == 400 and "malformed zstd" in text, text
    comp = zstandard.ZstdCompressor(level=1).compressobj()
    zero = bytes(1 << 20)
    bomb = b"".join(comp.compress(zero) for _ in range(300)) + comp.flush()
    assert len(bomb) < 64_000  # 300 MB of zeros in a few kB
    status, text = _raw(port, _post("forward_backward", len(bomb),
                                    extra="Content-Encoding: zstd\r\n"), bomb)
    assert status == 400 and "decompresses to more than" in text, text


def test_serve_bounds_its_threads_and_logs_disconnects_in_one_line(hard_serve: Any) -> None:
    import socket
    import time

    proc, port = hard_serve["proc"], hard_serve["port"]

    def threads() -> int:
        return len(os.listdir(f"/proc/{proc.pid}/task"))

    before = threads()
    slow = []
    for _ in range(100):  # slow clients: a connection and half a request line each
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"POST /api/v1/create_session HT")
        slow.append(sock)
    time.sleep(1.0)
    assert threads() <= before + 8, (before, threads())
    for sock in slow:
        sock.close()
    # clients that leave mid-body: one log line each, no traceback; the server goes on
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(_post("create_session", 100).encode() + b"\r\n{")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            status, _text = _raw(port, _post("create_session", 2), b"{}", timeout=5)
            break
        except OSError:
            time.sleep(0.5)
    assert status == 200
    log = hard_serve["log"].read_text()
    assert "Traceback" not in log, log[-3000:]
    assert " disconnected (" in log, log[-3000:]  # e.g. "client 127.0.0.1:N disconnected (...)"


def test_serve_loads_weights_only_from_its_own_state_dir(hard_serve: Any,
                                                         tmp_path: Path) -> None:
    import time

    port = hard_serve["port"]
    status, text = _raw(port, _post("create_session", 2), b"{}")
    session = json.loads(text)["session_id"]
    outside = tmp_path / "elsewhere"
    (outside / "model").mkdir(parents=True)
    (outside / "state.json").write_text("{}")
    body = json.dumps({"path": str(outside), "optimizer": True, "session_id": session,
                       "model_seq_id": 0}).encode()
    status, text = _raw(port, _post("load_weights", len(body)), body)
    assert status == 200, text
    request_id = json.loads(text)["request_id"]
    deadline = time.monotonic() + 60
    while True:
        ask = json.dumps({"request_id": request_id}).encode()
        status, text = _raw(port, _post("retrieve_future", len(ask)), ask, timeout=30)
        if status != 408 or time.monotonic() > deadline:
            break
    assert status == 200 and "only the checkpoints under its own state directory" in text, text


@pytest.mark.slow
def test_serve_sigterm_after_serving_training_exits_cleanly(tmp_path: Path) -> None:
    import signal

    serve = _Serve(tmp_path)
    serve.start()
    assert serve.proc is not None
    try:
        done = _tp(_tinker_train(serve.url, tmp_path / "run", budget=30, steps=2),
                   tmp_path, env=TINKER_ENV)
        assert done.returncode == 0, done.stderr
        serve.proc.send_signal(signal.SIGTERM)
        assert serve.proc.wait(30) == 0
    finally:
        if serve.proc.poll() is None:
            serve.kill()
    log = serve.log.read_text()
    assert "terminate called" not in log and "Traceback" not in log, log[-3000:]
