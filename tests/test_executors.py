"""Executors with the real engines: a real local Ray instance (127.0.0.1, 2 CPUs) and
submitit's local executor each run a 2 arms × 2 seeds local-engine campaign whose run files
equal the ``local`` executor's; failure (--continue-on-error), cancellation (Ctrl-C, a stop
event) and resume for both; bad input refused in one line with nothing written."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from textpolicy.cli import main
from textpolicy.errors import ConfigError
from textpolicy.runner import Options, run_spec
from textpolicy.runner.executors import RunJob, require, run_job
from textpolicy.runner.results import iter_jsonl
from textpolicy.runner.spec import load_spec
from textpolicy.runner.toml_out import dumps

HAS_RAY = importlib.util.find_spec("ray") is not None
HAS_SUBMITIT = importlib.util.find_spec("submitit") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="ray is not installed "
                               "(pip install 'textpolicy[ray]')")
needs_submitit = pytest.mark.skipif(not HAS_SUBMITIT, reason="submitit is not installed "
                                    "(pip install 'textpolicy[slurm]')")
RUNS = [f"{arm}/seed{seed}" for seed in (0, 1) for arm in ("baseline", "candidate")]
SLURM_LOCAL = {"name": "slurm", "options": {"cluster": "local", "timeout_min": 5}}
RAY_LOCAL = {"name": "ray", "options": {"address": "local", "local_cpus": 2}}


def campaign_raw(executor: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "kind": "campaign", "name": "ex", "engine": "local", "task": "arithmetic",
        "seeds": [0, 1], "output": "out", "parallel": 2, "training": {"max_steps": 2},
        "eval": {"every": 0}, "analysis": {"enabled": False}, **extra}
    if executor is not None:
        raw["executor"] = executor
    return raw


@contextlib.contextmanager
def inside(directory: Path) -> Iterator[Path]:
    """Run with ``directory`` as the working directory (the runs' paths are relative, so
    two campaigns in two directories have the same config.json)."""
    directory.mkdir(parents=True, exist_ok=True)
    before = os.getcwd()
    os.chdir(directory)
    try:
        yield directory
    finally:
        os.chdir(before)


def run(raw: dict[str, Any], **opts: Any) -> int:
    lines: list[str] = []
    outcome = run_spec(load_spec(raw), Options(progress="off", **opts), echo=lines.append)
    return outcome.exit_code


def manifest(root: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / "manifest.json").read_text())
    return data


def statuses(root: Path) -> dict[str, str]:
    return {r["log_dir"]: r["status"] for a in manifest(root)["arms"] for r in a["runs"]}


# Written by the run, not by what it trained: the wall clock (started_at, saved_at, step
# times, and so the digest of the last metrics row a checkpoint records, which a resume
# checks against the row itself) and a checkpoint's snapshot of the process-wide python,
# numpy and torch RNGs, which depends on what the process ran before (with `local`, a thread
# slot's earlier runs; with Ray or Slurm, a fresh worker): training draws from its own
# generators seeded by the run, so weights, samples, metrics and data order are unaffected.
def _normalized(path: Path) -> bytes:
    if path.name == "metrics.jsonl":
        rows = [{k: v for k, v in r.items() if k != "step_time_s"} for r in iter_jsonl(path)]
        return json.dumps(rows).encode()
    if path.name == "checkpoints.jsonl":
        rows = []
        for r in iter_jsonl(path):
            rows.append({k: v for k, v in r.items()
                         if k not in ("saved_at", "row_sha256", "rng_state")})
        return json.dumps(rows).encode()
    if path.name == "config.json" and path.parent.name.startswith("seed"):
        data = json.loads(path.read_text())
        data.pop("started_at", None)
        return json.dumps(data).encode()
    return path.read_bytes()


def run_files(root: Path) -> dict[str, bytes]:
    out = {}
    for key in RUNS:
        run_dir = root / key
        for path in sorted(run_dir.rglob("*")):
            rel = path.relative_to(run_dir)
            if path.is_file() and rel.parts[0] != ".executor" and path.name != ".textpolicy.lock":
                out[f"{key}/{rel}"] = _normalized(path)
    return out


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    with inside(tmp_path_factory.mktemp("local")) as here:
        assert run(campaign_raw(None)) == 0
        files = run_files(here / "out")
    assert len([k for k in files if k.endswith("model.safetensors")]) == 4
    return files


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    if not HAS_RAY:
        yield
        return
    import ray

    # the executor joins an instance that is already up (and leaves it up)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    try:
        yield
    finally:
        ray.shutdown()


def _steps(root: Path, key: str) -> list[int]:
    return [r["step"] for r in iter_jsonl(root / key / "metrics.jsonl")]


# --------------------------------------------------------------------------- equal files
@needs_ray
def test_ray_campaign_files_equal_local(tmp_path: Path, local_reference: dict[str, bytes],
                                        ray_instance: None) -> None:
    with inside(tmp_path) as here:
        assert run(campaign_raw(RAY_LOCAL)) == 0
        root = here / "out"
        assert set(statuses(root).values()) == {"finished"}
        assert run_files(root) == local_reference
        log = (root / "baseline/seed0/.executor/job.log").read_text()
        assert "start baseline/seed0" in log and "finished after 2 steps" in log
        assert manifest(root)["spec"]["executor"]["name"] == "ray"
        assert (root / "run_commands.sh").is_file()


@needs_submitit
def test_slurm_local_campaign_files_equal_local(tmp_path: Path,
                                                local_reference: dict[str, bytes]) -> None:
    with inside(tmp_path) as here:
        assert run(campaign_raw(SLURM_LOCAL)) == 0
        root = here / "out"
        assert set(statuses(root).values()) == {"finished"}
        assert run_files(root) == local_reference
        job_dir = root / "candidate/seed1/.executor"
        assert "finished after 2 steps" in (job_dir / "job.log").read_text()
        assert list((job_dir / "slurm").glob("*_log.out"))  # submitit's own log, per run


# --------------------------------------------------------------------------- failure, resume
def _break_run(root: Path) -> None:
    broken = root / "baseline" / "seed0"
    broken.mkdir(parents=True)  # run files without config.json: training refuses this run
    (broken / "metrics.jsonl").write_text(json.dumps({"step": 0}) + "\n")


@pytest.mark.parametrize("executor", [
    pytest.param(RAY_LOCAL, marks=needs_ray, id="ray"),
    pytest.param(SLURM_LOCAL, marks=needs_submitit, id="slurm")])
def test_failed_worker_is_that_runs_failure_and_rerun_resumes(
        tmp_path: Path, executor: dict[str, Any], request: pytest.FixtureRequest) -> None:
    from textpolicy.training.dirlock import DirLock

    if executor["name"] == "ray":
        request.getfixturevalue("ray_instance")
    with inside(tmp_path) as here:
        root = here / "out"
        _break_run(root)
        # another writer holds candidate/seed1: the worker must not write it (one writer)
        with DirLock(root / "candidate/seed1", what="run"):
            assert run(campaign_raw(executor, continue_on_error=True)) == 1
        state = statuses(root)
        assert state.pop("baseline/seed0") == "failed"
        assert state.pop("candidate/seed1") == "failed"
        assert set(state.values()) == {"finished"}
        errors = {r["log_dir"]: r["error"] for a in manifest(root)["arms"] for r in a["runs"]
                  if "error" in r}
        assert "\n" not in errors["baseline/seed0"] and errors["baseline/seed0"]
        assert "one writer at a time" in errors["candidate/seed1"], errors
        assert not (root / "candidate/seed1/metrics.jsonl").exists()
        (root / "baseline/seed0/metrics.jsonl").unlink()
        assert run(campaign_raw(executor)) == 0  # the fixed runs run, the others are skipped
        state = statuses(root)
        assert state["baseline/seed0"] == state["candidate/seed1"] == "finished"
        assert {state["candidate/seed0"], state["baseline/seed1"]} == {"skipped"}
        assert _steps(root, "baseline/seed0") == [0, 1]
        assert _steps(root, "candidate/seed1") == [0, 1]


@needs_ray
def test_ray_stop_event_stops_runs_after_a_step_and_rerun_resumes(
        tmp_path: Path, ray_instance: None) -> None:
    raw = campaign_raw(RAY_LOCAL, training={"max_steps": 40, "save_every": 1}, seeds=[0])
    stop = threading.Event()
    with inside(tmp_path) as here:
        root = here / "out"
        codes: list[int] = []
        spec = load_spec(raw)
        worker = threading.Thread(target=lambda: codes.append(run_spec(
            spec, Options(progress="off"), echo=lambda _l: None, stop=stop).exit_code))
        worker.start()
        first = root / "baseline/seed0/metrics.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(iter_jsonl(first))) < 2:
            time.sleep(0.05)
        stop.set()
        worker.join(timeout=60)
        assert codes == [130]
        assert set(statuses(root).values()) == {"stopped"}
        made = _steps(root, "baseline/seed0")
        assert 2 <= len(made) < 40 and made == list(range(len(made)))
        assert run(raw) == 0  # resumes each run from its checkpoint
        assert _steps(root, "baseline/seed0") == list(range(40))
        assert _steps(root, "candidate/seed0") == list(range(40))


@needs_submitit
def test_slurm_local_ctrl_c_stops_runs_cleanly_and_rerun_resumes(tmp_path: Path) -> None:
    raw = campaign_raw(SLURM_LOCAL, training={"max_steps": 40, "save_every": 1}, seeds=[0])
    (tmp_path / "spec.toml").write_text(dumps(raw))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    tp = [sys.executable, "-c", "from textpolicy.cli import main; main()", "run", "spec.toml",
          "--progress", "off"]
    proc = subprocess.Popen(tp, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    first = tmp_path / "out/baseline/seed0/metrics.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(iter_jsonl(first))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "Stopped" in output
    root = tmp_path / "out"
    assert set(statuses(root).values()) == {"stopped"}
    made = _steps(root, "baseline/seed0")
    assert 2 <= len(made) < 40
    again = subprocess.run(tp, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    for key in ("baseline/seed0", "candidate/seed0"):
        assert _steps(root, key) == list(range(40))


# --------------------------------------------------------------------------- bad input, dry run
def test_worker_that_cannot_see_the_output_fails_in_one_line(tmp_path: Path) -> None:
    job = RunJob(key="baseline/seed0", config={"log_dir": "out/baseline/seed0"},
                 cwd=str(tmp_path / "elsewhere"), root="out")
    result = run_job(job)
    assert result["status"] == "failed"
    assert "cannot see the output directory" in result["error"]
    assert "\n" not in result["error"]


def test_missing_package_names_the_install_command() -> None:
    with pytest.raises(ConfigError, match=r"pip install 'textpolicy\[ray\]'"):
        require("textpolicy_no_such_module", "ray")


def _cli(tmp_path: Path, raw: dict[str, Any], *args: str) -> Any:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "spec.toml").write_text(dumps(raw))
    with inside(tmp_path):
        return CliRunner().invoke(main, ["run", "spec.toml", *args])


@pytest.mark.parametrize(("executor", "args", "expected"), [
    ({"name": "rayy"}, (), "executor.name: 'rayy': unknown executor (did you mean 'ray'?)"),
    ({"name": "ray", "options": {"num_gpus": "one"}}, (),
     "executor.options.num_gpus: 'one': must be a number >= 0"),
    ({"name": "slurm", "options": {"partion": "gpu"}}, (),
     "executor.options.partion: unknown key (did you mean 'partition'?)"),
    (None, ("--executor", "ray", "--executor-option", "num_cpus=abc"),
     "--executor-option num_cpus: 'abc': must be a number >= 0"),
    (None, ("--executor", "nope"), "--executor: 'nope': unknown executor"),
])
def test_bad_executor_is_one_line_and_writes_nothing(
        tmp_path: Path, executor: dict[str, Any] | None, args: tuple[str, ...],
        expected: str) -> None:
    result = _cli(tmp_path, campaign_raw(executor), *args)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


@needs_ray
def test_unreachable_ray_address_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    result = _cli(tmp_path, campaign_raw({"name": "ray", "options": {
        "address": "127.0.0.1:9"}}))
    assert result.exit_code == 2, result.output
    assert "executor ray: address '127.0.0.1:9' cannot be reached" in result.output
    assert not (tmp_path / "out").exists()


@needs_submitit
def test_slurm_without_sbatch_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    if subprocess.run(["which", "sbatch"], capture_output=True).returncode == 0:
        pytest.skip("this machine has sbatch")
    result = _cli(tmp_path, campaign_raw({"name": "slurm"}))
    assert result.exit_code == 2, result.output
    assert "sbatch not found" in result.output and "cluster = 'local'" in result.output
    assert not (tmp_path / "out").exists()


@needs_submitit
def test_dry_run_says_what_would_be_submitted_where(tmp_path: Path) -> None:
    result = _cli(tmp_path, campaign_raw(None), "--dry-run", "--executor", "slurm",
                  "--executor-option", "partition=gpu", "--executor-option", "gpus_per_node=1")
    assert result.exit_code == 0, result.output
    assert ("Executor slurm: would submit 4 runs to Slurm partition gpu, one job per run "
            "(gpus_per_node=1, cpus_per_task=1, timeout_min=60), at most 2 at a time: "
            + ", ".join(RUNS)) in result.output
    assert (tmp_path / "out/manifest.json").is_file()  # a dry run writes the plan, as ever
    assert not list((tmp_path / "out").glob("*/seed*/.executor"))  # and submits nothing


def test_campaign_command_takes_the_executor_flags(tmp_path: Path) -> None:
    base = ["campaign", "--engine", "local", "--task", "arithmetic", "--campaign-root",
            str(tmp_path / "c"), "--seeds", "0-1", "--max-steps", "2", "--eval-every", "0",
            "--progress", "off"]
    bad = CliRunner().invoke(main, [*base, "--executor", "ray", "--executor-option",
                                    "local_cpus=0.5", "--execute"])
    assert bad.exit_code == 2, bad.output
    assert "--executor-option local_cpus: 0.5: must be an integer > 0" in bad.output
    assert not (tmp_path / "c").exists()
    malformed = CliRunner().invoke(main, [*base, "--executor-option", "num_gpus"])
    assert malformed.exit_code == 2
    assert "--executor-option: 'num_gpus': expected KEY=VALUE" in malformed.output


@needs_submitit
def test_executor_option_flags_override_the_specs_options(tmp_path: Path) -> None:
    raw = campaign_raw({"name": "slurm", "options": {"partition": "a100", "timeout_min": 30}})
    result = _cli(tmp_path, raw, "--dry-run", "--executor-option", "gpus_per_node=2")
    assert result.exit_code == 0, result.output
    assert ("to Slurm partition a100, one job per run (gpus_per_node=2, cpus_per_task=1, "
            "timeout_min=30)") in result.output
    # another executor on the command line takes none of the spec's options
    other = _cli(tmp_path / "other", raw, "--dry-run", "--executor", "ray")
    assert other.exit_code == 0, other.output
    assert "to a local Ray instance, one task per run (num_cpus=1, num_gpus=0)" in other.output
