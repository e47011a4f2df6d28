"""Run data you can trust: one writer per run and per output, verified resume, a damaged
checkpoint index refused, no symlink followed out of a run, no secret written or sent.

Real processes, signals, locks and files: two `tp` processes on one directory (the first
stopped with SIGSTOP while the second tries), a lock holder killed with SIGKILL, files cut
mid-line, overwritten with random bytes, symlinked out of the run, and a listener on 127.0.0.1
standing in for a foreign host (reached as ``127.1``, which is not loopback as written:
see textpolicy.urls).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from textpolicy.cli import main
from textpolicy.errors import ConfigError, LockedError, RunDamagedError
from textpolicy.runner.toml_out import dumps as toml_dumps
from textpolicy.training import make_config, run_training
from textpolicy.training.dirlock import LOCK_NAME, DirLock

TP = [sys.executable, "-c", "from textpolicy.cli import main; main()"]
TRAIN = ["--max-steps", "8", "--save-every", "2", "--eval-every", "4", "--eval-samples", "2",
         "--eval-prompts", "4", "--batch-size", "2", "--group-size", "2", "--seed", "1"]
SETTINGS: dict[str, Any] = {"max_steps": 8, "save_every": 2, "eval_every": 4,
                            "eval_samples": 2, "eval_prompts": 4, "batch_size": 2,
                            "group_size": 2, "seed": 1}


def rows(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def steps(path: Path) -> list[int]:
    return [r["step"] for r in rows(path)]


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (links as links) → a digest of its bytes."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _stop(pid: int) -> None:
    """SIGSTOP ``pid`` and wait until every thread of it is stopped: the signal is delivered
    asynchronously, and a process still running for a moment (a checkpoint being written)
    would change the files after the test's snapshot."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = []
        for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
            try:  # the state follows the command name in parentheses
                states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
            except (OSError, IndexError):
                continue
        if states and all(state in "tT" for state in states):
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not stop within 30 s")


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp),
            "PYTHONUNBUFFERED": "1"}


def _wait_for_rows(path: Path, proc: subprocess.Popen[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_bytes().count(b"\n") >= 1:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the first writer ended early: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError(f"no row in {path} after {timeout} s")


def _first_metrics(root: Path) -> Path | None:
    found = sorted(root.rglob("metrics.jsonl"))
    return found[0] if found else None


# ---------------------------------------------------------------------------------------------
# 1. one writer per run directory and per output


def test_two_tp_train_on_one_log_dir_the_second_is_refused_and_writes_nothing(
        tmp_path: Path) -> None:
    log_dir = tmp_path / "run"
    env = _env(tmp_path)
    first = subprocess.Popen(
        [*TP, "train", "--log-dir", str(log_dir), "--lr", "1e-3", *TRAIN,
         "--max-steps", "30", "--save-every", "10", "--progress", "off"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_rows(log_dir / "metrics.jsonl", first)
        _stop(first.pid)  # it holds the lock, mid-run
        before = snapshot(log_dir)
        t0 = time.monotonic()
        second = subprocess.run(
            [*TP, "train", "--log-dir", str(log_dir), "--lr", "3e-3", *TRAIN,
             "--max-steps", "30", "--save-every", "10", "--progress", "off"],
            env=env, capture_output=True, text=True, timeout=120)
        elapsed = time.monotonic() - t0
        assert snapshot(log_dir) == before  # wrote nothing
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=300)
    assert second.returncode != 0
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and f"process {first.pid}" in lines[0], second.stderr
    assert "one writer at a time" in lines[0] and second.stdout == ""
    assert elapsed < 60  # at once: no model is loaded
    assert first.returncode == 0, err
    assert "finished: 30/30" in out
    assert steps(log_dir / "metrics.jsonl") == list(range(30))  # each step once
    assert {r["lr"] for r in rows(log_dir / "metrics.jsonl")} == {1e-3}
    assert json.loads((log_dir / "config.json").read_text())["config"]["lr"] == 1e-3
    assert [c["step"] for c in rows(log_dir / "checkpoints.jsonl")] == [10, 20, 30]


def _campaign_spec(out: Path) -> dict[str, Any]:
    return {"kind": "campaign", "name": "locks", "output": str(out), "engine": "local",
            "task": "arithmetic", "seeds": [0],
            "training": {"max_steps": 6, "batch_size": 2, "group_size": 2, "save_every": 3},
            "eval": {"every": 3, "samples": 2, "prompts": 4},
            "arms": [{"name": "grpo", "pipeline": "grpo", "lr": 1e-3},
                     {"name": "full", "pipeline": "full", "lr": 1e-3}],
            "analysis": {"enabled": False}}


def test_two_tp_run_on_one_output_the_second_is_refused_and_writes_nothing(
        tmp_path: Path) -> None:
    out = tmp_path / "out"
    spec = tmp_path / "spec.toml"
    spec.write_text(toml_dumps(_campaign_spec(out)))
    env = _env(tmp_path)
    first = subprocess.Popen([*TP, "run", str(spec), "--progress", "off"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while (metrics := _first_metrics(out)) is None and time.monotonic() < deadline:
            assert first.poll() is None, first.communicate()
            time.sleep(0.05)
        assert metrics is not None
        _wait_for_rows(metrics, first)
        _stop(first.pid)
        before = snapshot(out)
        second = subprocess.run([*TP, "run", str(spec), "--progress", "off"], env=env,
                                capture_output=True, text=True, timeout=120)
        assert snapshot(out) == before
    finally:
        os.kill(first.pid, signal.SIGCONT)
    stdout, stderr = first.communicate(timeout=300)
    assert second.returncode != 0
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and f"process {first.pid}" in lines[0], second.stderr
    assert str(out) in lines[0] and "output directory" in lines[0]
    assert first.returncode == 0, stdout + stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    for arm in ("grpo", "full"):
        assert steps(out / arm / "seed0" / "metrics.jsonl") == list(range(6))
        assert [c["step"] for c in rows(out / arm / "seed0" / "checkpoints.jsonl")] == [3, 6]


HOLD = ("import sys, time\n"
        "from textpolicy.training.dirlock import DirLock\n"
        "DirLock(sys.argv[1], what='run').acquire()\n"
        "print('locked', flush=True)\n"
        "time.sleep(600)\n")


def test_each_run_is_locked_and_a_killed_holder_frees_it(tmp_path: Path) -> None:
    """A `tp train` (here: a process holding the run's lock) owns one run of a campaign: that
    run fails with the holder's PID, the other finishes; once the holder is SIGKILLed the
    same command finishes the run."""
    from textpolicy.runner import Options, Spec, run_spec

    out = tmp_path / "out"
    raw = _campaign_spec(out)
    raw["training"]["max_steps"] = 3
    spec = Spec.from_dict(raw, source="test")
    busy = out / "full" / "seed0"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(busy)], env=_env(tmp_path),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        lines: list[str] = []
        outcome = run_spec(spec, Options(continue_on_error=True, progress="off"),
                           echo=lines.append)
        assert outcome.exit_code == 1
        failed = [line for line in lines if line.startswith("FAILED")]
        assert len(failed) == 1 and "full/seed0" in failed[0]
        assert f"process {holder.pid}" in failed[0]
        assert not (busy / "metrics.jsonl").exists()  # the run was not touched
        assert steps(out / "grpo" / "seed0" / "metrics.jsonl") == [0, 1, 2]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    outcome = run_spec(spec, Options(progress="off"), echo=lambda _line: None)
    assert outcome.exit_code == 0
    assert steps(busy / "metrics.jsonl") == [0, 1, 2]


def test_the_lock_excludes_threads_of_one_process_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "new" / "run"
    with DirLock(target, what="run") as lock:
        assert (target / LOCK_NAME).read_text().strip() == str(os.getpid())
        with pytest.raises(LockedError, match=r"process \d+ \(this process\)"):
            DirLock(target, what="run").acquire()
        assert lock.path.exists()
    assert not target.exists()  # created by the lock, nothing written: removed again
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "config.json").write_text("{}")
    with DirLock(tmp_path / "kept"):
        pass
    assert (tmp_path / "kept" / "config.json").exists()
    assert (tmp_path / "kept" / LOCK_NAME).read_text() == ""  # no stale PID left


# ---------------------------------------------------------------------------------------------
# 2-4. resume checks the files; a damaged index is an error; no symlink is followed


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 8-step run: checkpoints at 2, 4, 6, 8; evals at 0, 4, 8 (4 prompts x 2 samples)."""
    log_dir = tmp_path_factory.mktemp("made") / "run"
    outcome = run_training(make_config(log_dir=str(log_dir), **SETTINGS), progress="off")
    assert outcome.status == "finished"
    return log_dir


@pytest.fixture
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(finished_run, target, symlinks=True)
    return target


def _resume(log_dir: Path, max_steps: int = 10, **kw: Any) -> Any:
    config = make_config(log_dir=str(log_dir), **{**SETTINGS, "max_steps": max_steps})
    return run_training(config, progress="off", **kw)


def _refused(log_dir: Path, match: str, **kw: Any) -> str:
    before = snapshot(log_dir)
    with pytest.raises(RunDamagedError) as info:
        _resume(log_dir, **kw)
    message = str(info.value)
    assert "\n" not in message and "nothing was changed" in message
    assert snapshot(log_dir) == before  # refused: nothing changed
    assert match in message, message
    return message


def _same_rows(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    """Equal rows, but for the timing and the final eval (only the last step of a run
    ending there carries it)."""
    def strip(rs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items()
                 if k != "step_time_s" and not k.startswith("final_eval_")} for r in rs]
    assert strip(a) == strip(b)


def test_a_file_cut_mid_line_is_refused_then_rolled_back_when_asked(
        run_copy: Path, finished_run: Path) -> None:
    metrics = run_copy / "metrics.jsonl"
    data = metrics.read_bytes()
    starts = [0, *[i + 1 for i, b in enumerate(data) if b == 0x0A]]
    metrics.write_bytes(data[: starts[4] + 17])  # rows 0-3, then half of row 4
    message = _refused(run_copy, "rows of steps 4-7 are missing")
    assert str(metrics) in message and "--restart-from-step 4" in message
    outcome = _resume(run_copy, restart_from=4)
    assert outcome.status == "finished" and outcome.resumed_from == 4
    assert steps(metrics) == list(range(10))  # no gap, each step once
    original = rows(finished_run / "metrics.jsonl")
    _same_rows(rows(metrics)[:8], original)  # steps 4-7 redone exactly
    assert steps(run_copy / "emergence" / "steps.jsonl") == list(range(10))
    assert [c["step"] for c in rows(run_copy / "checkpoints.jsonl")] == [2, 4, 6, 8, 10]


def test_random_bytes_over_a_file_are_refused(run_copy: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    (run_copy / "emergence" / "generations.jsonl").write_bytes(noise)
    message = _refused(run_copy, "generations.jsonl: line 1 is not an intact row")
    assert "--restart-from-step" in message


def test_duplicated_rows_are_refused(run_copy: Path) -> None:
    path = run_copy / "emergence" / "steps.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:3] + lines[2:]))  # step 2 twice (a second writer)
    _refused(run_copy, "steps.jsonl: rows of step 2 appear more than once")


def test_only_a_torn_final_line_is_repaired_silently(run_copy: Path,
                                                     finished_run: Path) -> None:
    with open(run_copy / "metrics.jsonl", "ab") as fh:
        fh.write(b'{"step": 8, "loss": 0.')  # a crash mid-write
    with open(run_copy / "checkpoints.jsonl", "ab") as fh:
        fh.write(b'{"step": 10, "na')
    outcome = _resume(run_copy)
    assert outcome.status == "finished" and outcome.resumed_from == 8
    assert steps(run_copy / "metrics.jsonl") == list(range(10))
    _same_rows(rows(run_copy / "metrics.jsonl")[:8], rows(finished_run / "metrics.jsonl"))


def test_a_changed_first_byte_of_the_index_is_refused_not_a_restart(run_copy: Path) -> None:
    index = run_copy / "checkpoints.jsonl"
    data = bytearray(index.read_bytes())
    data[0] = ord("X")
    index.write_bytes(bytes(data))
    message = _refused(run_copy, "checkpoints.jsonl: line 1 is not an intact row")
    assert "--restart-from-step 0" in message
    result = CliRunner().invoke(main, ["train", "--log-dir", str(run_copy), *TRAIN,
                                       "--max-steps", "10", "--progress", "off"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "line 1" in lines[0]


def test_a_corrupted_middle_row_of_the_index_is_refused_not_a_rollback(
        run_copy: Path) -> None:
    index = run_copy / "checkpoints.jsonl"
    lines = index.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2][: len(lines[2]) // 2] + b"\n"  # the row of step 6, cut short
    index.write_bytes(b"".join(lines))
    message = _refused(run_copy, "checkpoints.jsonl: line 3 is not an intact row")
    assert "step 4" in message and "--restart-from-step 4" in message
    outcome = _resume(run_copy, restart_from=4)  # asked for: roll back
    assert outcome.resumed_from == 4 and outcome.steps_done == 10
    assert [c["step"] for c in rows(index)] == [2, 4, 6, 8, 10]
    assert steps(run_copy / "metrics.jsonl") == list(range(10))


def test_a_row_changed_but_still_valid_json_is_refused(run_copy: Path) -> None:
    index = run_copy / "checkpoints.jsonl"
    lines = index.read_bytes().splitlines(keepends=True)
    assert b'"data_cursor": 8,' in lines[1]  # the row of step 4 (batch size 2)
    lines[1] = lines[1].replace(b'"data_cursor": 8,', b'"data_cursor": 9,')
    index.write_bytes(b"".join(lines))
    message = _refused(run_copy, "checkpoints.jsonl: line 2 was changed after it was written")
    assert "--restart-from-step 2" in message


def test_lost_index_rows_are_refused(run_copy: Path) -> None:
    index = run_copy / "checkpoints.jsonl"
    index.write_bytes(b"".join(index.read_bytes().splitlines(keepends=True)[:1]))
    _refused(run_copy, "checkpoint due at step 4: checkpoint rows are missing")
    index.write_bytes(b"")  # no checkpoint at all, 8 steps of rows: not a fresh start
    _refused(run_copy, "holds no checkpoint")


def test_restart_from_step_needs_an_intact_checkpoint(run_copy: Path) -> None:
    with pytest.raises(ConfigError, match=r"no intact checkpoint at that step .*2, 4, 6, 8"):
        _resume(run_copy, restart_from=5)
    outcome = _resume(run_copy, max_steps=8, restart_from=0)  # start over, when asked
    assert outcome.resumed_from is None and outcome.steps_done == 8
    assert steps(run_copy / "metrics.jsonl") == list(range(8))


@pytest.mark.parametrize("link", ["emergence/steps.jsonl", "emergence", "checkpoints"])
def test_no_symlink_is_followed_out_of_a_run(run_copy: Path, tmp_path: Path,
                                             link: str) -> None:
    inside = run_copy / link
    outside = tmp_path / "outside" / Path(link).name
    outside.parent.mkdir()
    shutil.move(inside, outside)
    inside.symlink_to(outside, target_is_directory=outside.is_dir())
    before = snapshot(outside.parent)
    with pytest.raises(ConfigError, match="is a symbolic link"):
        _resume(run_copy)
    assert snapshot(outside.parent) == before  # the target is untouched


# ---------------------------------------------------------------------------------------------
# 5. secrets


SECRET = "tml-userinfo-secret-0123456789"


def test_url_userinfo_is_redacted_in_every_file_a_plan_writes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    raw = _campaign_spec(out)
    raw["engine"] = {"name": "tinker", "options": {"base_url": f"http://me:{SECRET}@127.0.0.1:9"}}
    spec = tmp_path / "spec.toml"
    spec.write_text(toml_dumps(raw))
    result = CliRunner().invoke(main, ["run", str(spec), "--dry-run"])
    assert result.exit_code == 0, result.output
    written = {p.name: p.read_text() for p in out.rglob("*") if p.is_file()}
    assert {"manifest.json", "run_commands.sh"} <= set(written)
    for name, text in written.items():
        assert SECRET not in text, name
    assert "http://<redacted>@127.0.0.1:9" in written["run_commands.sh"]
    assert SECRET not in result.output


def test_url_userinfo_never_reaches_a_run_directory_or_an_error_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real run on the tinker engine through `tp serve`'s server (in this process), its
    base URL carrying a key as userinfo: config.json has it redacted (three places)."""
    from textpolicy.engines.local import LocalEngine
    from textpolicy.serve import TinkerServer, served_models

    monkeypatch.setenv("TINKER_API_KEY", "tml-local")
    monkeypatch.setenv("TINKER_TELEMETRY", "0")
    server = TinkerServer(lambda: LocalEngine(device="cpu", state_dir=tmp_path / "states"),
                          models=served_models(), state_dir=tmp_path / "serve").start()
    try:
        url = server.url.replace("http://", f"http://me:{SECRET}@")
        log_dir = tmp_path / "run"
        config = make_config(log_dir=str(log_dir), engine="tinker", max_steps=2,
                             eval_every=0, engine_options={"base_url": url})
        assert run_training(config, progress="off").steps_done == 2
    finally:
        server.stop()
    for path in log_dir.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path
    text = (log_dir / "config.json").read_text()
    assert text.count("http://<redacted>@127.0.0.1") == 3, text
    result = CliRunner().invoke(main, ["train", "--engine", "tinker", "--base-url", url,
                                       "--log-dir", str(tmp_path / "other")])  # server gone
    assert result.exit_code != 0 and "cannot reach Tinker at http://<redacted>@" in result.output
    assert SECRET not in result.output


class _Listener:
    """An HTTP listener on 127.0.0.1 recording every connection and X-API-Key header."""

    def __init__(self) -> None:
        self.connections = 0
        self.keys: list[str | None] = []
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                listener.keys.append(self.headers.get("X-API-Key"))
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(401)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = _any

            def log_message(self, *_args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            def verify_request(self, request: Any, address: Any) -> bool:
                listener.connections += 1
                return True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Listener]:
    monkeypatch.setenv("TINKER_API_KEY", SECRET)
    monkeypatch.setenv("TINKER_TELEMETRY", "0")
    server = _Listener()
    yield server
    server.close()


def test_a_foreign_host_gets_no_key_without_opt_in(listener: _Listener,
                                                    tmp_path: Path) -> None:
    log_dir = tmp_path / "run"
    url = f"http://user:{SECRET}@127.1:{listener.port}"  # 127.1: not loopback as written
    result = CliRunner().invoke(main, ["train", "--engine", "tinker", "--base-url", url,
                                       "--log-dir", str(log_dir), "--max-steps", "2"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "'127.1'" in lines[0] and "--trust-host 127.1" in lines[0]
    assert SECRET not in result.output
    assert listener.connections == 0 and listener.keys == []  # nothing was sent
    assert not log_dir.exists()  # nothing was written


def test_tp_train_trust_host_sends_the_key_with_one_warning(listener: _Listener,
                                                           tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [
        "train", "--engine", "tinker", "--task", "arithmetic", "--base-url",
        f"http://127.1:{listener.port}", "--trust-host", "127.1",
        "--log-dir", str(tmp_path / "run"), "--max-steps", "2"])
    assert result.exit_code != 0  # the listener answers 401
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "to 127.1" in warnings[0]
    assert SECRET in listener.keys
    assert SECRET not in result.output


def test_a_trusted_foreign_host_gets_the_key_with_a_warning(
        listener: _Listener, capfd: pytest.CaptureFixture[str]) -> None:
    from textpolicy.engines.tinker_engine import TinkerEngine
    from textpolicy.errors import EngineError

    url = f"http://127.1:{listener.port}"
    with pytest.raises(ConfigError, match="is not the host of base_url"):
        TinkerEngine(base_url=url, trusted_host="evil.example")
    assert listener.connections == 0
    engine = TinkerEngine(base_url=url, trusted_host="127.1")
    warning = capfd.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning: sending the Tinker API key "
                                                       "to 127.1")
    with pytest.raises(EngineError):  # the listener answers 401
        engine.create_training_client("m", lora_rank=1, seed=0)
    assert SECRET in listener.keys  # sent, as asked


def test_loopback_is_decided_by_the_host_as_written() -> None:
    from textpolicy.urls import is_loopback_host, is_tinker_host, redact_url

    assert all(map(is_loopback_host, ["localhost", "127.0.0.1", "127.3.2.1", "::1",
                                      "[::1]", "::ffff:127.0.0.1", "LOCALHOST"]))
    assert not any(map(is_loopback_host, ["127.1", "2130706433", "localhost.evil.com",
                                          "vm", "10.0.0.1", "0.0.0.0"]))
    assert is_tinker_host("tinker.thinkingmachines.dev")
    assert not is_tinker_host("thinkingmachines.dev.evil.com")
    assert redact_url("GET http://u:p@h:1/x and https://k@h2") == \
        "GET http://<redacted>@h:1/x and https://<redacted>@h2"


def test_an_eval_cut_short_at_the_checkpoint_is_run_again(tmp_path: Path) -> None:
    """A crash during a resume's first eval (at the checkpoint's step, after its last sync)
    leaves some of its rows: they are dropped and the eval runs again; a short eval before
    the checkpoint is refused."""
    from textpolicy.training.integrity import Expected, apply_recovery, plan_recovery
    from textpolicy.training.runfiles import RunFiles, sealed

    def jsonl(name: str, items: list[dict[str, Any]], tail: str = "") -> None:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in items) + tail)

    for name in ("metrics.jsonl", "emergence/steps.jsonl", "emergence/generations.jsonl"):
        jsonl(name, [{"step": s} for s in range(4)])
    jsonl("checkpoints.jsonl", [sealed({"step": 2}), sealed({"step": 4})])
    evals = [{"step": s, "sample": j} for s in (0, 2) for j in range(3)]
    jsonl("eval.jsonl", [*evals, {"step": 4, "sample": 0}], '{"step": 4, "sam')
    exp = Expected(per_step={"metrics.jsonl": 1, "emergence/steps.jsonl": 1,
                             "emergence/generations.jsonl": 1},
                   eval_every=2, eval_rows=3, save_every=2)
    files = RunFiles(tmp_path)
    recovery = plan_recovery(files, exp)
    assert recovery.step == 4
    apply_recovery(files, recovery)
    assert [(r["step"], r["sample"]) for r in rows(tmp_path / "eval.jsonl")] == \
        [(r["step"], r["sample"]) for r in evals]
    jsonl("eval.jsonl", evals[:5])  # the eval at step 2 lost a row
    with pytest.raises(RunDamagedError, match="the eval at step 2 does not have its 3 rows"):
        plan_recovery(files, exp)


def test_trust_host_flag_reaches_the_plan(tmp_path: Path) -> None:
    root = tmp_path / "camp"
    result = CliRunner().invoke(main, [
        "campaign", "--engine", "tinker", "--task", "arithmetic", "--campaign-root", str(root),
        "--base-url", "http://127.1:9", "--trust-host", "127.1", "--lr", "1e-3"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["arms"][0]["runs"][0]["config"]["engine_options"] == {
        "base_url": "http://127.1:9", "trusted_host": "127.1"}
    assert "--trust-host 127.1" in (root / "run_commands.sh").read_text()
