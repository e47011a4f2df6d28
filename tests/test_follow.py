"""`tp follow` against real wandb in offline mode; the offline run files are read back.

An offline run is a `.wandb` file: a 7-byte header (":W&B", magic, version) and then records
in LevelDB's log format (32 KiB blocks; each chunk: crc32 (4), length (2), type (1)), each
record a serialised `wandb_internal_pb2.Record`. History records hold the logged steps.
"""

from __future__ import annotations

import json
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from textpolicy.cli import main
from textpolicy.runner.follow import STATE_FILE, Follower, FollowerThread, JsonlTail

BLOCK = 32768
HEADER = 7


def _records(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    out: list[bytes] = []
    pos = HEADER
    pending = b""
    while pos + 7 <= len(data):
        left_in_block = BLOCK - (pos % BLOCK)
        if left_in_block < 7:
            pos += left_in_block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        if kind == 1:
            out.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            out.append(pending + chunk)
            pending = b""
    return out


def logged_history(wandb_dir: Path) -> list[dict[str, Any]]:
    """Every history row of every offline run under ``wandb_dir`` (in file order)."""
    from wandb.proto import wandb_internal_pb2

    rows: list[dict[str, Any]] = []
    for run_file in sorted(wandb_dir.rglob("run-*.wandb")):
        for raw in _records(run_file):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(raw)
            if record.WhichOneof("record_type") != "history":
                continue
            row: dict[str, Any] = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            row["_run_id"] = run_file.stem.removeprefix("run-")
            rows.append(row)
    return rows


def settled_history(wandb_dir: Path, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    """History rows once at least ``count`` are on disk (W&B's service writes them
    asynchronously after ``finish()`` returns), then a moment more to catch duplicates."""
    deadline = time.monotonic() + timeout
    rows = logged_history(wandb_dir)
    while len(rows) < count and time.monotonic() < deadline:
        time.sleep(0.2)
        rows = logged_history(wandb_dir)
    time.sleep(0.5)
    return logged_history(wandb_dir)


def _row(step: int) -> dict[str, Any]:
    return {"step": step, "loss": 0.5 + step, "correct_rate": step / 100,
            "running_correct_rate": step / 200, "condition": "grpo", "sepa_gate_open": True}


def _write(path: Path, steps: range, *, partial: bool = False) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        for s in steps:
            fh.write(json.dumps(_row(s)) + "\n")
        if partial:
            fh.write(json.dumps(_row(steps.stop))[:25])


@pytest.fixture
def wandb_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    import wandb

    wandb.teardown()  # W&B keeps process-wide settings (its directory) until torn down
    d = tmp_path / "wandb_out"
    d.mkdir()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(d))
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield d
    wandb.teardown()


def test_backfill_half_line_and_restart_never_duplicate(tmp_path: Path, wandb_dir: Path) -> None:
    metrics = tmp_path / "run" / "metrics.jsonl"
    metrics.parent.mkdir()
    _write(metrics, range(0, 5), partial=True)  # step 5 half-written
    runner = CliRunner()
    args = ["follow", "--metrics-path", str(metrics), "--no-follow", "--run-name", "r1",
            "--group", "g"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "logged 5 steps (0..4)" in result.output
    state = json.loads((metrics.parent / STATE_FILE).read_text())
    assert state["last_step"] == 4
    # the half line is completed, more rows arrive; a restarted follower resumes the same run
    with open(metrics, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(_row(5))[25:] + "\n")
    _write(metrics, range(6, 8))
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "logged 3 steps (5..7)" in result.output
    # a third pass with nothing new logs nothing
    result = runner.invoke(main, args)
    assert "nothing new" in result.output
    rows = settled_history(wandb_dir, 8)
    steps = [r["_step"] for r in rows]
    assert sorted(steps) == list(range(8))  # each step exactly once, across restarts
    assert {r["_run_id"] for r in rows} == {state["run_id"]}  # one W&B run, resumed
    by_step = {r["_step"]: r for r in rows}
    assert by_step[3]["loss"] == pytest.approx(3.5)
    assert by_step[5]["correct_rate"] == pytest.approx(0.05)
    assert by_step[2]["sepa_gate_open"] == 1
    assert "condition" not in by_step[2]  # strings are not metrics


def test_late_file_and_tail_until_finish(tmp_path: Path, wandb_dir: Path) -> None:
    metrics = tmp_path / "late" / "metrics.jsonl"
    follower = Follower(metrics, run_name="late", poll_seconds=0.05,
                        idle_timeout_seconds=60.0)
    thread = FollowerThread(follower).start()
    time.sleep(0.3)  # the file does not exist yet
    metrics.parent.mkdir()
    _write(metrics, range(0, 3))
    time.sleep(0.5)
    _write(metrics, range(3, 6), partial=True)
    time.sleep(0.3)
    thread.finish()
    assert thread.error is None
    assert thread.result is not None
    assert (thread.result.first_step, thread.result.last_step) == (0, 5)
    steps = sorted(r["_step"] for r in settled_history(wandb_dir, 6))
    assert steps == list(range(6))


def test_idle_timeout_ends_follow(tmp_path: Path, wandb_dir: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    _write(metrics, range(0, 2))
    t0 = time.monotonic()
    result = Follower(metrics, poll_seconds=0.05, idle_timeout_seconds=0.3).run()
    assert result.steps_logged == 2
    assert time.monotonic() - t0 < 30


def test_tail_reader_rewinds_on_truncation(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    tail = JsonlTail(path)
    assert tail.read_new() == []  # missing file
    _write(path, range(0, 4), partial=True)
    assert [r["step"] for r in tail.read_new()] == [0, 1, 2, 3]
    assert tail.read_new() == []
    path.write_text(json.dumps(_row(0)) + "\n")  # a resumed run cut the file back
    assert [r["step"] for r in tail.read_new()] == [0]
    assert tail.rewound


def test_resumed_run_rows_are_not_relogged(tmp_path: Path, wandb_dir: Path) -> None:
    """Training cut the file back to step 3 and re-wrote steps 3..5: W&B keeps the first."""
    metrics = tmp_path / "metrics.jsonl"
    _write(metrics, range(0, 5))
    Follower(metrics, follow=False).run()
    metrics.write_text("".join(json.dumps(_row(s)) + "\n" for s in range(0, 3)))
    _write(metrics, range(3, 7))
    stop = threading.Event()
    result = Follower(metrics, follow=False, stop=stop).run()
    assert (result.first_step, result.last_step) == (5, 6)
    assert sorted(r["_step"] for r in settled_history(wandb_dir, 7)) == list(range(7))


def test_missing_file_is_an_error_without_follow_and_announced_with_it(
        tmp_path: Path, wandb_dir: Path) -> None:
    missing = tmp_path / "nowhere" / "metrics.jsonl"
    once = CliRunner().invoke(main, ["follow", "--metrics-path", str(missing), "--no-follow"])
    assert once.exit_code == 2, once.output
    lines = once.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {missing}: "), once.stderr
    assert "does not exist" in lines[0]
    assert not missing.parent.exists()  # nothing written next to it

    waited = CliRunner().invoke(main, ["follow", "--metrics-path", str(missing),
                                       "--poll-seconds", "0.05",
                                       "--idle-timeout-seconds", "0.2"])
    assert waited.exit_code == 1, waited.output
    assert f"waiting for {missing}" in waited.stderr
    assert waited.stderr.strip().splitlines()[-1].startswith(f"Error: {missing}: ")


def test_backfill_summary_names_the_run(tmp_path: Path, wandb_dir: Path) -> None:
    metrics = tmp_path / "run" / "metrics.jsonl"
    metrics.parent.mkdir()
    _write(metrics, range(0, 1))
    result = CliRunner().invoke(main, ["follow", "--metrics-path", str(metrics),
                                       "--no-follow", "--run-name", "named"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    assert "logged 1 step (0..0) from " + str(metrics.parent) in lines[0]
    assert "W&B run named (" in lines[0]
