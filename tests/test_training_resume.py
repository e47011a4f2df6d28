"""Crash safety: run files are cut back to the last checkpoint, and a run killed with SIGKILL at
random moments resumes to the same result as an uninterrupted one."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from textpolicy.training import make_config, run_training
from textpolicy.training.integrity import Expected, apply_recovery, plan_recovery
from textpolicy.training.run_record import REDACTED, config_differences, redact
from textpolicy.training.runfiles import RunFiles, read_jsonl, scan_jsonl


def rows(path: Path) -> list[dict[str, Any]]:
    return read_jsonl(path)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# file-level recovery


EXPECT = Expected(per_step={"metrics.jsonl": 1, "emergence/steps.jsonl": 1,
                           "emergence/generations.jsonl": 1},
                  eval_every=2, eval_rows=2, save_every=0)


def test_a_half_written_last_line_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    write(path, '{"step": 0}\n{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    scan = scan_jsonl(path)
    assert scan.steps == (0, 1, 2) and scan.torn and scan.damaged_line is None
    assert [r["step"] for r in rows(path)] == [0, 1, 2]
    files = RunFiles(tmp_path)
    files.cut("metrics.jsonl", scan.end)
    assert path.read_text() == '{"step": 0}\n{"step": 1}\n{"step": 2}\n'


def test_a_complete_json_line_without_newline_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    write(path, '{"step": 0}\n{"step": 1}')
    assert [r["step"] for r in rows(path)] == [0]
    assert scan_jsonl(path).steps == (0,) and scan_jsonl(path).torn


def test_recovery_follows_the_resume_rule(tmp_path: Path) -> None:
    files = RunFiles(tmp_path)
    steps = "".join(json.dumps({"step": s}) + "\n" for s in range(6))
    for name in ("metrics.jsonl", "emergence/steps.jsonl", "emergence/generations.jsonl"):
        write(tmp_path / name, steps + '{"step": 6')
    write(tmp_path / "eval.jsonl",
          "".join(json.dumps({"step": s, "sample": j}) + "\n" for s in (0, 2, 4) for j in (0, 1)))
    write(tmp_path / "checkpoints.jsonl", '{"step": 2}\n{"step": 4}\n{"step": 6, "na')
    recovery = plan_recovery(files, EXPECT)
    assert recovery.checkpoint == {"step": 4}
    apply_recovery(files, recovery)
    for name in ("metrics.jsonl", "emergence/steps.jsonl", "emergence/generations.jsonl"):
        assert [r["step"] for r in rows(tmp_path / name)] == [0, 1, 2, 3]
    assert [r["step"] for r in rows(tmp_path / "eval.jsonl")] == [0, 0, 2, 2, 4, 4]
    assert [r["step"] for r in rows(tmp_path / "checkpoints.jsonl")] == [2, 4]
    apply_recovery(files, plan_recovery(files, EXPECT, restart_from=2))  # asked to roll back
    assert [r["step"] for r in rows(tmp_path / "metrics.jsonl")] == [0, 1]
    assert [r["step"] for r in rows(tmp_path / "eval.jsonl")] == [0, 0, 2, 2]
    assert [r["step"] for r in rows(tmp_path / "checkpoints.jsonl")] == [2]
    apply_recovery(files, plan_recovery(files, EXPECT, restart_from=0))  # start over
    assert rows(tmp_path / "eval.jsonl") == []
    assert rows(tmp_path / "checkpoints.jsonl") == []
    assert rows(tmp_path / "metrics.jsonl") == []


def test_secrets_are_redacted_and_ignored_when_comparing() -> None:
    opts = {"base_url": "http://x", "api_key": "tml-secret", "nested": {"auth_token": "t"},
            "device": "cpu"}
    assert redact(opts) == {"base_url": "http://x", "api_key": REDACTED,
                            "nested": {"auth_token": REDACTED}, "device": "cpu"}
    old = {"lr": 1e-3, "max_steps": 10, "log_dir": "a", "engine_options": {"base_url": "u1"}}
    new = {"lr": 2e-3, "max_steps": 20, "log_dir": "b", "engine_options": {"base_url": "u2"}}
    assert config_differences(old, new) == ["lr"]


def test_config_json_never_holds_an_api_key(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "tml-do-not-write-this-0123456789"
    monkeypatch.setenv("TINKER_API_KEY", secret)
    config = make_config(log_dir=str(tmp_path / "run"), max_steps=1, eval_every=0,
                         engine_options={"state_dir": str(tmp_path / "st")},
                         task_params={"max_tokens": 4})
    run_training(config, progress="off")
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl"):
            assert secret not in path.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# SIGKILL at random moments, in a subprocess running `tp train`

ARGS = ["--max-steps", "16", "--save-every", "3", "--eval-every", "5", "--seed", "2",
        "--batch-size", "3", "--group-size", "4", "--progress", "plain"]
TP = [sys.executable, "-c", "from textpolicy.cli import main; main()", "train"]


def _lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return fh.read().count(b"\n")
    except FileNotFoundError:
        return 0


def _run_until_killed(log_dir: Path, target: int, delay: float, env: dict[str, str]) -> bool:
    """Start `tp train`, SIGKILL it ``delay`` s after metrics has ``target`` rows.

    Returns False when the process finished before it could be killed."""
    proc = subprocess.Popen([*TP, "--log-dir", str(log_dir), *ARGS], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    metrics = log_dir / "metrics.jsonl"
    while proc.poll() is None and time.monotonic() < deadline:
        if (log_dir / "config.json").exists() and _lines(metrics) >= target:
            break
        time.sleep(0.002)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def test_sigkill_at_random_moments_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log_dir = tmp_path / "killed"
    rng = random.Random(1234)
    kills = 0
    target = 0
    for _ in range(3):
        if not _run_until_killed(log_dir, target, rng.uniform(0.0, 0.06), env):
            break
        kills += 1
        target = _lines(log_dir / "metrics.jsonl") + rng.randint(1, 4)
    assert kills >= 2
    done = subprocess.run([*TP, "--log-dir", str(log_dir), *ARGS], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "finished: 16/16" in done.stdout

    metrics = rows(log_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(16))
    assert [s["step"] for s in rows(log_dir / "emergence" / "steps.jsonl")] == list(range(16))
    gens = rows(log_dir / "emergence" / "generations.jsonl")
    keys = [(g["step"], g["metadata"]["group"], g["metadata"]["sample"]) for g in gens]
    assert keys == [(s, gr, j) for s in range(16) for gr in range(3) for j in range(4)]
    evals = rows(log_dir / "eval.jsonl")
    assert [(e["step"], e["prompt_id"], e["sample"]) for e in evals] == sorted(
        {(e["step"], e["prompt_id"], e["sample"]) for e in evals},
        key=[(e["step"], e["prompt_id"], e["sample"]) for e in evals].index)  # no duplicate
    assert sorted({e["step"] for e in evals}) == [0, 5, 10, 15, 16]
    assert len(evals) == 5 * 30 * 4
    ckpt_steps = [c["step"] for c in rows(log_dir / "checkpoints.jsonl")]
    assert ckpt_steps == sorted(set(ckpt_steps)) and ckpt_steps[-1] == 16

    # the same run without interruption, in this process: identical on CPU
    reference = tmp_path / "reference"
    config = make_config(log_dir=str(reference), max_steps=16, save_every=3, eval_every=5,
                         seed=2, batch_size=3, group_size=4)
    run_training(config, progress="off")
    ref_metrics = rows(reference / "metrics.jsonl")
    for got, want in zip(metrics, ref_metrics, strict=True):
        for key, value in want.items():
            if key == "step_time_s":
                continue
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (got["step"], key)
            else:
                assert got[key] == value, (got["step"], key)
    assert gens == rows(reference / "emergence" / "generations.jsonl")
    assert evals == rows(reference / "eval.jsonl")
