"""Tinker concurrency control: the ``max_concurrent`` cap and the retry backoff, through the real
tinker SDK against `tp serve` (in this process, port 0) with injected 429/502/503/504 answers.

The cap is checked where it matters, at the server: its futures table counts the requests
accepted and not yet finished (``high_water``)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from textpolicy.cli import main
from textpolicy.engines.base import SamplingParams
from textpolicy.engines.local import TINY_MODEL
from textpolicy.engines.tinker_engine import TinkerEngine
from textpolicy.engines.tinker_limits import BACKOFF_BASE_S, BACKOFF_CAP_S, Backoff
from textpolicy.runner.toml_out import dumps as toml_dumps
from textpolicy.serve import FaultPlan, FaultRule, TinkerServer, served_models
from textpolicy.training import make_config, run_training

#: metrics that measure time, not the run
TIMING = re.compile(r"(^|_)(time|seconds|sec|wall|elapsed)|_s$|_ms$|per_s")
EXACT = frozenset({"step", "mean_reward", "correct_rate", "running_correct_rate",
                   "max_token_hit_rate", "num_datums", "mean_completion_tokens",
                   "duplicate_completion_rate", "lr"})


@pytest.fixture(autouse=True)
def _tinker_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory,
                ) -> None:
    monkeypatch.setenv("TINKER_API_KEY", "tml-local")
    monkeypatch.setenv("TINKER_TELEMETRY", "0")
    monkeypatch.setenv("TEXTPOLICY_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


def _server(tmp: Path, *fail: str, poison: tuple[str, ...] = ()) -> TinkerServer:
    from textpolicy.engines.local import LocalEngine

    faults = FaultPlan(fail=[FaultRule.parse(t, flag="--fail-request") for t in fail],
                       poison=[FaultRule.parse(t, flag="--poison-request") for t in poison])
    return TinkerServer(lambda: LocalEngine(device="cpu", state_dir=tmp / "states"),
                        models=served_models(), state_dir=tmp, faults=faults).start()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    started: list[TinkerServer] = []

    def start(*fail: str, poison: tuple[str, ...] = ()) -> TinkerServer:
        server = _server(tmp_path / f"serve{len(started)}", *fail, poison=poison)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _run(log_dir: Path, url: str, **options: Any) -> list[dict[str, Any]]:
    config = make_config(log_dir=str(log_dir), task="arithmetic", engine="tinker",
                         engine_options={"base_url": url, **options}, max_steps=2, seed=5,
                         eval_every=0, save_every=1)
    outcome = run_training(config, progress="off")
    assert outcome.status == "finished" and outcome.steps_done == 2
    with open(log_dir / "metrics.jsonl", encoding="utf-8") as fh:
        return [{k: v for k, v in json.loads(line).items() if not TIMING.search(k)}
                for line in fh]


def test_backoff_is_full_jitter_from_its_own_seeded_generator() -> None:
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    a, b = Backoff([0, 1]), Backoff([0, 1])
    draws = [a.delay(k) for k in range(12)]
    assert draws == [b.delay(k) for k in range(12)]  # the seed decides every draw
    assert draws != [Backoff([0, 2]).delay(k) for k in range(12)]  # engines differ
    for k, d in enumerate(draws):
        assert 0.0 <= d <= min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**k)
    assert max(draws[6:]) > BACKOFF_BASE_S * 2  # the ceiling grows
    assert np.random.random() == expected  # the global generator was not used


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "four"])
def test_bad_max_concurrent_is_one_line_exit_2(tmp_path: Path, value: str) -> None:
    log_dir = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "train", "--engine", "tinker", "--base-url", "http://127.0.0.1:9", "--task",
        "arithmetic", "--log-dir", str(log_dir), "--engine-option", f"max_concurrent={value}"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "max_concurrent" in lines[0] and value in lines[0], lines
    assert "Traceback" not in result.output and not log_dir.exists()


@pytest.mark.parametrize(("command", "option", "says"), [
    ("campaign", "max_concurrent=0", "max_concurrent=0"),
    ("sweep", "max_concurrent=four", "max_concurrent='four'"),
    ("campaign", "max_concurrent", "--engine-option expects KEY=VALUE"),
])
def test_bad_engine_option_of_sweep_and_campaign_is_one_line_exit_2(
        tmp_path: Path, command: str, option: str, says: str) -> None:
    root = tmp_path / "out"
    where = [f"--{command}-root", str(root)]
    result = CliRunner().invoke(main, [
        command, "--engine", "tinker", "--base-url", "http://127.0.0.1:9", "--task",
        "arithmetic", *where, "--engine-option", option])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], lines
    assert "Traceback" not in result.output and not root.exists()


def test_bad_max_concurrent_in_a_spec_is_one_line_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "out"
    spec = tmp_path / "spec.toml"
    spec.write_text(toml_dumps({
        "kind": "campaign", "name": "cap", "output": str(out), "task": "arithmetic",
        "seeds": [0], "training": {"max_steps": 2},
        "engine": {"name": "tinker", "options": {"base_url": "http://127.0.0.1:9",
                                                 "max_concurrent": 0}},
        "arms": [{"name": "grpo", "pipeline": "grpo"}, {"name": "full", "pipeline": "full"}],
        "analysis": {"enabled": False}}))
    result = CliRunner().invoke(main, ["run", str(spec), "--dry-run"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "max_concurrent=0" in lines[0], lines
    assert not out.exists()


def test_run_survives_busy_statuses_with_identical_files(serve: Any, tmp_path: Path) -> None:
    clean = _run(tmp_path / "clean", serve().url)
    injected = ("forward_backward:2:503", "asample:3:429", "optim_step:1:502",
                "retrieve_future:4:504")
    faulty = serve(*injected)
    t0 = time.monotonic()
    rows = _run(tmp_path / "faulty", faulty.url)
    elapsed = time.monotonic() - t0
    # the same samples, rewards and updates: counts and rates exactly; values computed from
    # sampler logprobs (losses, KL, entropy) may move in the last float32 digits, because the
    # server batches concurrent samples as they arrive (clean runs differ the same way)
    assert [sorted(r) for r in rows] == [sorted(r) for r in clean]
    for got, want in zip(rows, clean, strict=True):
        for key, value in want.items():
            if key in EXACT or not isinstance(value, float):
                assert got[key] == value, key
            else:
                assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    # every injected status was answered, and the SDK waited (>= 1 s) before each retry
    # (they may overlap, so only one wait is a sure lower bound)
    assert elapsed >= 1.0
    seen = faulty._httpd.faults._by_endpoint
    for rule in injected:
        endpoint, n, _ = rule.split(":")
        assert seen[endpoint] >= int(n) + 1, (rule, dict(seen))


def test_textpolicy_retry_waits_its_backoff(serve: Any, caplog: pytest.LogCaptureFixture,
                                            ) -> None:
    """A failed sample is resubmitted by textpolicy after a full-jitter wait: the measured
    time to the answer is at least the drawn wait."""
    server = serve(poison=("asample:1",))
    engine = TinkerEngine(base_url=server.url)
    try:
        tc = engine.create_training_client(TINY_MODEL, lora_rank=None, seed=0)
        sampler = tc.sampling_client("s")
        tokens = tc.get_tokenizer().encode("1+1=")
        with caplog.at_level("WARNING", logger="textpolicy.engines.tinker_engine"):
            t0 = time.monotonic()
            out = sampler.sample(tokens, 1, SamplingParams(max_tokens=4, seed=1)).result()
            elapsed = time.monotonic() - t0
    finally:
        engine.close()
    assert len(out) == 1
    waits = [float(w) for w in re.findall(r"retrying in ([0-9.]+) s", caplog.text)]
    assert len(waits) == 1 and 0 < waits[0] <= BACKOFF_BASE_S
    assert elapsed >= waits[0]


def test_max_concurrent_caps_requests_in_flight_at_the_server(serve: Any,
                                                              tmp_path: Path) -> None:
    uncapped = serve()
    _run(tmp_path / "uncapped", uncapped.url)
    # per-sample seeds: a group's requests are all in flight at once without a cap
    assert uncapped.service.futures.high_water > 1

    capped = serve()
    results: dict[int, list[dict[str, Any]]] = {}

    def run(i: int) -> None:  # how `tp run` runs remote-engine runs in parallel: threads
        results[i] = _run(tmp_path / f"capped{i}", capped.url, max_concurrent=1)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert sorted(results) == [0, 1]
    assert capped.service.futures.high_water == 1
    assert capped.service.futures.in_flight == 0


def test_file_slots_are_shared_by_processes_and_freed_when_a_holder_dies(
        tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    from textpolicy.engines.tinker_limits import FileSlots

    slots = FileSlots(tmp_path / "slots", 2)
    a, b = slots.acquire(timeout=1.0), slots.acquire(timeout=1.0)
    assert a is not None and b is not None
    assert slots.acquire(timeout=0.05) is None  # both taken: a third request waits
    slots.release(a)
    c = slots.acquire(timeout=1.0)
    assert c is not None
    slots.release(b)
    slots.release(c)
    # another process takes both slots and then dies without releasing them
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from pathlib import Path\n"
         "from textpolicy.engines.tinker_limits import FileSlots\n"
         f"s = FileSlots(Path({str(tmp_path / 'slots')!r}), 2)\n"
         "held = [s.acquire(timeout=5.0), s.acquire(timeout=5.0)]\n"
         "print(all(h is not None for h in held), flush=True)\n"
         "time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "True"
        assert slots.acquire(timeout=0.2) is None  # this process counts the other's slots
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(30)
        freed = slots.acquire(timeout=5.0)
        assert freed is not None  # the kernel gave the dead holder's slots back
        slots.release(freed)
    finally:
        if holder.poll() is None:
            holder.kill()


def test_max_concurrent_caps_process_workers_of_a_campaign(serve: Any, tmp_path: Path) -> None:
    """`tp campaign --workers process`: two worker processes, one cap for both."""
    import os
    import subprocess
    import sys

    server = serve()
    root = tmp_path / "campaign"
    result = subprocess.run(
        [sys.executable, "-c", "from textpolicy.cli import main; main()", "campaign",
         "--engine", "tinker", "--base-url", server.url, "--task", "arithmetic",
         "--campaign-root", str(root), "--seeds", "0-1", "--max-steps", "2",
         "--eval-every", "0", "--execute", "--parallel", "2", "--workers", "process",
         "--engine-option", "max_concurrent=1", "--progress", "plain"],
        env={**os.environ, "WANDB_MODE": "disabled"}, capture_output=True, text=True,
        timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--engine-option max_concurrent=1" in (root / "run_commands.sh").read_text()
    assert len(list(root.rglob("metrics.jsonl"))) == 4
    assert server.service.futures.high_water == 1
    assert server.service.futures.in_flight == 0


def test_a_freed_slot_goes_to_the_waiter_not_to_a_holder_asking_again(tmp_path: Path) -> None:
    """cap 1: a thread that gives its slot back and asks again at once (a training loop's next
    request) must not keep a request that was already waiting from ever getting it."""
    import threading
    import time

    from textpolicy.engines.tinker_limits import FileSlots

    slots = FileSlots(tmp_path / "slots", 1)
    stop = threading.Event()
    rounds = 0

    def busy_run() -> None:
        nonlocal rounds
        while not stop.is_set():
            fd = slots.acquire(timeout=10.0)
            assert fd is not None
            time.sleep(0.02)  # a request in flight
            slots.release(fd)
            rounds += 1

    thread = threading.Thread(target=busy_run)
    thread.start()
    try:
        while rounds < 2:
            time.sleep(0.005)
        waiter = slots.acquire(timeout=3.0)  # (it got none in 5 s before the gate)
        assert waiter is not None  # the other run's next request did not take it first
        slots.release(waiter)
    finally:
        stop.set()
        thread.join(15)
