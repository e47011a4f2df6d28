"""The tinker engine end to end: the real tinker SDK against `tp serve` (started here, port 0).

Everything goes through the unmodified SDK over HTTP on loopback: a training run whose correct
rate rises, save + resume with optimizer state, recovery from a poisoned client and from
transient HTTP 5xx, the same seeded run on `local` and on `tinker`-via-serve, and `tp train
--engine tinker --base-url ...` from the command line.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from textpolicy.engines.base import build_rl_datum
from textpolicy.engines.local import TINY_MODEL
from textpolicy.engines.tinker_engine import TinkerEngine, to_sdk_datum
from textpolicy.errors import EngineError
from textpolicy.serve import FaultPlan, FaultRule, TinkerServer, served_models
from textpolicy.training import make_config, run_training

API_KEY = "tml-local"
TP = str(Path(sys.executable).with_name("tp"))
START_TIMEOUT_S = 120


def rows(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


class ServeProcess:
    """`tp serve --port 0 ...` in a subprocess; the URL is parsed from its first line."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self._log = open(log, "w", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [TP, "serve", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=self._log, text=True, env=env)
        self.url = ""
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                if not self.url and "listening on " in line:
                    self.url = line.split("listening on ")[1].split()[0]
                    self.first_line = line.strip()
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(START_TIMEOUT_S) or not self.url:
            self.stop()
            raise RuntimeError(f"tp serve did not start: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    mp = pytest.MonkeyPatch()
    mp.setenv("TEXTPOLICY_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tp-cache"))
    mp.setenv("TINKER_API_KEY", API_KEY)
    mp.setenv("TINKER_TELEMETRY", "0")
    yield dict(os.environ)
    mp.undo()


def _serve(env: dict[str, str], tmp: Path, *args: str) -> Iterator[ServeProcess]:
    server = ServeProcess(["--state-dir", str(tmp / "state"), *args], env, tmp / "serve.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[ServeProcess]:
    yield from _serve(env, tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def faulty_server(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
                  ) -> Iterator[TinkerServer]:
    """Transient 500s on a forward_backward, a sample and a poll, and a poisoned
    forward_backward (its future fails, and so does everything later on that model).

    The same server as `tp serve` (TinkerServer + LocalEngine), run in this process to spare
    a second start-up of torch; the flags' parsing is the CLI's, tested below."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401 - import once

    from textpolicy.engines.local import LocalEngine

    tmp = tmp_path_factory.mktemp("faulty")
    faults = FaultPlan(
        fail=[FaultRule.parse(t, flag="--fail-request")
              for t in ("forward_backward:2", "asample:5", "retrieve_future:9")],
        poison=[FaultRule.parse("forward_backward:5", flag="--poison-request")])
    server = TinkerServer(lambda: LocalEngine(device="cpu", state_dir=tmp / "states"),
                          models=served_models(), state_dir=tmp, faults=faults).start()
    yield server
    server.stop()


def _config(log_dir: Path, engine: str, url: str | None = None, **settings: Any) -> Any:
    options = {"base_url": url} if url else {}
    values: dict[str, Any] = {"max_steps": 6, "seed": 3, "eval_every": 0, "save_every": 3}
    values.update(settings)
    return make_config(log_dir=str(log_dir), task="arithmetic", engine=engine,
                       engine_options=options, **values)


@pytest.fixture(scope="module")
def clean_tinker_run(server: ServeProcess, tmp_path_factory: pytest.TempPathFactory,
                     ) -> list[dict[str, Any]]:
    log_dir = tmp_path_factory.mktemp("clean") / "run"
    outcome = run_training(_config(log_dir, "tinker", server.url), progress="off")
    assert outcome.status == "finished" and outcome.steps_done == 6
    return rows(log_dir / "metrics.jsonl")


def _assert_same_metrics(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        for key in ("correct_rate", "mean_reward", "num_datums", "mean_completion_tokens",
                    "max_token_hit_rate"):
            assert ra[key] == pytest.approx(rb[key], abs=1e-9), (ra["step"], key)
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-4, abs=1e-4), ra["step"]


def test_serve_says_it_listens_on_loopback(server: ServeProcess) -> None:
    assert server.first_line.startswith("tp serve listening on http://127.0.0.1:")
    assert server.first_line.endswith("(loopback only)")


def test_sdk_round_trip_save_and_resume_with_optimizer(server: ServeProcess) -> None:
    import tinker
    from tinker import types

    service = tinker.ServiceClient(base_url=server.url)
    try:
        tc = service.create_lora_training_client(TINY_MODEL, rank=4, seed=1).result()
        assert tc.get_info().lora_rank == 4
        tok = tc.get_tokenizer()  # the SDK's own AutoTokenizer load, offline
        prompts = [[tok.bos_token_id, *tok.encode(f"{a}+{b}=", add_special_tokens=False)]
                   for a, b in [(1, 2), (3, 4), (5, 6)]]
        sampler = tc.save_weights_and_get_sampling_client().result()
        params = types.SamplingParams(max_tokens=4, temperature=1.0, seed=0)
        futures = [sampler.sample(types.ModelInput.from_ints(p), 4, params) for p in prompts]
        responses = [f.result() for f in futures]
        seq = responses[0].sequences[0]
        assert all(len(r.sequences) == 4 for r in responses)
        assert len(seq.logprobs) == len(seq.tokens) > 0 and seq.stop_reason in ("stop",
                                                                                "length")
        datum = to_sdk_datum(build_rl_datum(prompts[0], seq.tokens, seq.logprobs,
                                            np.ones(len(seq.tokens))))
        adam = types.AdamParams(learning_rate=1e-2)
        fb, opt = tc.forward_backward([datum], "importance_sampling"), tc.optim_step(adam)
        assert np.isfinite(fb.result().metrics["loss:sum"])
        opt.result()
        path = tc.save_state("after-one-step").result().path
        assert path.startswith("tinker://")
        resumed = service.create_training_client_from_state_with_optimizer(path).result()
        assert resumed.model_id != tc.model_id

        # the same update on both: equal losses after it only if weights AND Adam moments
        # were restored (a fresh Adam's first step is ~lr * sign(g), a different update)
        for client in (tc, resumed):
            client.forward_backward([datum], "importance_sampling")
            client.optim_step(adam)
        loss_a = tc.forward_backward([datum], "importance_sampling").result().metrics
        loss_b = resumed.forward_backward([datum], "importance_sampling").result().metrics
        assert loss_a["loss:sum"] == pytest.approx(loss_b["loss:sum"], rel=1e-5, abs=1e-6)
    finally:
        service.close("success").result()


def test_tinker_run_learns(server: ServeProcess, tmp_path: Path) -> None:
    log_dir = tmp_path / "run"
    config = _config(log_dir, "tinker", server.url, max_steps=20, save_every=10, seed=0)
    outcome = run_training(config, progress="off")
    assert outcome.status == "finished" and outcome.steps_done == 20
    metrics = rows(log_dir / "metrics.jsonl")
    first = sum(m["correct_rate"] for m in metrics[:5]) / 5
    last = sum(m["correct_rate"] for m in metrics[-5:]) / 5
    assert last > first + 0.1, (first, last)
    checkpoints = rows(log_dir / "checkpoints.jsonl")
    assert checkpoints and all(c["state_path"].startswith("tinker://") for c in checkpoints)


def test_local_and_tinker_runs_agree(clean_tinker_run: list[dict[str, Any]],
                                     tmp_path: Path) -> None:
    outcome = run_training(_config(tmp_path / "local", "local"), progress="off")
    assert outcome.status == "finished"
    _assert_same_metrics(rows(tmp_path / "local" / "metrics.jsonl"), clean_tinker_run)


def test_recovers_from_poisoned_client_and_transient_5xx(
        faulty_server: TinkerServer, clean_tinker_run: list[dict[str, Any]],
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    engine = TinkerEngine(base_url=faulty_server.url)
    log_dir = tmp_path / "run"
    with caplog.at_level("WARNING", logger="textpolicy.engines.tinker_engine"):
        outcome = run_training(_config(log_dir, "tinker", faulty_server.url), engine=engine,
                               progress="off")
    engine.close()
    assert outcome.status == "finished" and outcome.steps_done == 6
    assert engine.recoveries == 1
    assert "recreating it from tinker://" in caplog.text  # from the step-3 checkpoint
    # replaying the logged requests on the recreated client loses and repeats nothing
    _assert_same_metrics(rows(log_dir / "metrics.jsonl"), clean_tinker_run)


def test_resume_a_tinker_run(server: ServeProcess, clean_tinker_run: list[dict[str, Any]],
                             tmp_path: Path) -> None:
    """Stop after 3 steps (checkpoint at 3), resume to 6: same metrics as one 6-step run."""
    log_dir = tmp_path / "run"
    stop = threading.Event()

    def on_step(row: dict[str, Any]) -> None:
        if row["step"] == 2:
            stop.set()

    first = run_training(_config(log_dir, "tinker", server.url), on_step=on_step, stop=stop,
                         progress="off")
    assert first.status == "stopped" and first.steps_done == 3
    second = run_training(_config(log_dir, "tinker", server.url), progress="off")
    assert second.status == "finished" and second.steps_done == 6
    _assert_same_metrics(rows(log_dir / "metrics.jsonl"), clean_tinker_run)


def test_parallel_runs_share_one_server(server: ServeProcess, tmp_path: Path) -> None:
    """Runs in threads of one process (how the runner runs remote engines in parallel), each
    with its own engine: the server loads their models one at a time and serves them side by
    side."""
    outcomes: dict[int, Any] = {}

    def run(i: int) -> None:
        config = _config(tmp_path / f"run{i}", "tinker", server.url, max_steps=2,
                         save_every=0, seed=i, lr=1e-3 * (i + 1))
        outcomes[i] = run_training(config, progress="off")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert sorted(outcomes) == [0, 1, 2]
    assert all(o.status == "finished" and o.steps_done == 2 for o in outcomes.values())


def test_tp_train_engine_tinker_needs_only_base_url(server: ServeProcess, env: dict[str, str],
                                                   tmp_path: Path) -> None:
    log_dir = tmp_path / "cli"
    result = subprocess.run(
        [TP, "train", "--engine", "tinker", "--base-url",
         server.url, "--task", "arithmetic", "--log-dir", str(log_dir), "--max-steps", "2"],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(rows(log_dir / "metrics.jsonl")) == 2
    config = json.loads((log_dir / "config.json").read_text())
    assert config["engine"]["name"] == "tinker"
    for path in log_dir.rglob("*"):  # the API key is never written anywhere
        if path.is_file():
            assert API_KEY not in path.read_text(errors="replace"), path
    assert API_KEY not in result.stdout + result.stderr


def test_unreachable_server_fails_fast(env: dict[str, str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(EngineError, match="cannot reach Tinker"):
        TinkerEngine(base_url=f"http://127.0.0.1:{port}")
    assert time.perf_counter() - t0 < 10


def test_missing_api_key_is_a_clear_error(env: dict[str, str], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TINKER_API_KEY")
    monkeypatch.delenv("TINKER_CREDENTIAL_CMD", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(EngineError, match="no Tinker API key"):
        TinkerEngine(base_url="http://127.0.0.1:1")


def test_serve_rejects_bad_fault_flags(env: dict[str, str]) -> None:
    result = subprocess.run(
        [TP, "serve", "--fail-request", "often"],
        env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("Error: --fail-request 'often'")
    assert "Traceback" not in result.stderr
