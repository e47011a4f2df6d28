"""Sampling diagnostics: duplicate completions per group, sampler–learner KL, token entropy.

The estimators are checked against their definitions on known distributions; the training loop
logs them per step on the local engine (tiny model) and on the tinker engine through the real
tinker SDK against `tp serve`, whose ``--duplicate-samples`` fault makes a sampler that
collapses groups: the metric reads 1 and the run warns in one line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.stats import entropy as scipy_entropy

from textpolicy.cli import main as cli_main
from textpolicy.engines.local import TINY_MODEL
from textpolicy.engines.tinker_engine import TinkerEngine, readiness
from textpolicy.errors import ConfigError
from textpolicy.serve import FaultPlan, TinkerServer, served_models
from textpolicy.training import make_config, run_training
from textpolicy.training.diagnostics import (
    duplicate_completion_rate,
    expected_duplicate_rate,
    sampler_learner_kl,
)

STEPS = 2


def rows(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


# ------------------------------------------------------------------------------ estimators
def test_duplicate_rate_compares_whole_sequences_within_groups() -> None:
    # group 0: two identical, one differing only by length (a trailing real 0 token);
    # group 1: the same tokens as group 0's pair, but a single copy in its own group
    tokens = np.array([[5, 6, 0], [5, 6, 0], [5, 6, 0], [5, 6, 0], [7, 0, 0]])
    lengths = np.array([2, 2, 3, 2, 1])
    groups = np.array([0, 0, 0, 1, 1])
    assert duplicate_completion_rate(groups, tokens, lengths) == pytest.approx(2 / 5)
    assert duplicate_completion_rate(np.zeros(4, int), np.ones((4, 2), int),
                                     np.full(4, 2)) == 1.0
    assert duplicate_completion_rate(np.array([], int), np.zeros((0, 0), int),
                                     np.array([], int)) == 0.0


def test_expected_duplicate_rate_matches_honest_sampling() -> None:
    """Groups of G draws of a categorical 'sequence' distribution: the observed rate averages
    to the rate predicted from the draws' own probabilities."""
    rng = np.random.default_rng(0)
    probs = np.array([0.5, 0.2, 0.1, 0.1, 0.05, 0.05])
    groups, size = 2000, 4
    draws = rng.choice(len(probs), size=(groups, size), p=probs)
    group_ids = np.repeat(np.arange(groups), size)
    tokens = draws.reshape(-1, 1)
    observed = duplicate_completion_rate(group_ids, tokens, np.ones(groups * size, int))
    expected = expected_duplicate_rate(group_ids, np.log(probs[tokens]))
    exact = float(np.sum(probs * (1 - (1 - probs) ** (size - 1))))
    assert expected == pytest.approx(exact, abs=0.01)
    assert observed == pytest.approx(expected, abs=0.02)
    # a collapsed sampler: every group is one draw repeated
    collapsed = np.repeat(draws[:, :1], size, axis=1).reshape(-1, 1)
    assert duplicate_completion_rate(group_ids, collapsed, np.ones(groups * size, int)) == 1.0
    assert expected_duplicate_rate(group_ids, np.log(probs[collapsed])) < 0.7


def test_kl_estimators_estimate_kl_sampler_to_learner() -> None:
    """Tokens drawn from the sampler q: k1 and k3 both converge to KL(q ‖ p) (not KL(p ‖ q))."""
    rng = np.random.default_rng(1)
    q = np.array([0.9, 0.05, 0.04, 0.01])
    p = np.array([0.25, 0.25, 0.25, 0.25])
    x = rng.choice(len(q), size=200_000, p=q)
    out = sampler_learner_kl([np.log(q[x])], [np.log(p[x])])
    forward = float(scipy_entropy(q, p))  # KL(q ‖ p)
    assert abs(forward - float(scipy_entropy(p, q))) > 0.05  # the two directions differ
    assert out["kl_sampler_learner_k1"] == pytest.approx(forward, abs=0.01)
    assert out["kl_sampler_learner_k3"] == pytest.approx(forward, abs=0.01)
    assert out["importance_ratio_mean"] == pytest.approx(1.0, abs=0.01)  # E_q[p/q] = 1
    assert out["kl_tokens"] == x.size
    same = sampler_learner_kl([np.log(q[x[:10]])], [np.log(q[x[:10]])])
    assert same["kl_sampler_learner_k1"] == 0.0 and same["kl_sampler_learner_k3"] == 0.0
    assert sampler_learner_kl([], [])["kl_sampler_learner_k1"] is None
    with pytest.raises(ValueError, match="differ in length"):
        sampler_learner_kl([np.zeros(3)], [np.zeros(2)])


# ------------------------------------------------------- learner logprobs from forward_backward
def test_forward_backward_returns_learner_logprobs_per_datum(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """The local engine's forward pass gives each datum's target logprobs (split correctly
    across micro-batches): they equal compute_logprobs on the same weights."""
    from textpolicy.engines.base import build_rl_datum
    from textpolicy.engines.local import TINY_MODEL, LocalEngine

    mp = pytest.MonkeyPatch()
    mp.setenv("TEXTPOLICY_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tp-cache"))
    try:
        engine = LocalEngine(device="cpu", train_tokens_per_batch=16)  # several micro-batches
        tc = engine.create_training_client(TINY_MODEL, lora_rank=None, seed=0)
        tok = tc.get_tokenizer()
        seqs = [[tok.bos_token_id, *tok.encode(f"{a}+{a * 7}=", add_special_tokens=False),
                 4 + a, 5] for a in range(5)]
        datums = [build_rl_datum(s[:-2], s[-2:], [-1.0, -1.0], [1.0, 1.0]) for s in seqs]
        result = tc.forward_backward(datums, "importance_sampling").result()
        reference = tc.sampling_client("ref").compute_logprobs(seqs).result()
        assert result.logprobs is not None and len(result.logprobs) == len(datums)
        for got, ref, datum in zip(result.logprobs, reference, datums, strict=True):
            assert got.shape == (len(datum.model_input),)
            np.testing.assert_allclose(got, ref[1:], atol=1e-5)
        engine.close()
    finally:
        mp.undo()


def test_learner_logprobs_cross_the_wire_as_tinker_sends_them() -> None:
    from tinker.proto.response_conv import deserialize_forward_backward_output

    from textpolicy.engines.tinker_engine import from_sdk_fb_output
    from textpolicy.serve.wire import encode_forward_backward_output

    arrays = [np.array([-0.5, -1.25], np.float32), np.array([-2.0], np.float32)]
    out = deserialize_forward_backward_output(
        encode_forward_backward_output({"loss:sum": 1.0}, 2, arrays))
    assert [o["logprobs"].tolist() for o in out.loss_fn_outputs] == [[-0.5, -1.25], [-2.0]]
    result = from_sdk_fb_output(out)
    assert result.logprobs is not None
    assert [a.tolist() for a in result.logprobs] == [[-0.5, -1.25], [-2.0]]
    bare = from_sdk_fb_output(deserialize_forward_backward_output(
        encode_forward_backward_output({"loss:sum": 1.0}, 2)))
    assert bare.logprobs is None  # a service that returns none: the KL is logged as null


# ------------------------------------------------------------------------- the local engine
def _config(log_dir: Path, engine: str = "local", **settings: Any) -> Any:
    values: dict[str, Any] = {"max_steps": STEPS, "seed": 3, "eval_every": 0, "save_every": 0}
    values.update(settings)
    return make_config(log_dir=str(log_dir), task="arithmetic", engine=engine, **values)


def _check_row_shapes(metrics: list[dict[str, Any]], log_dir: Path) -> None:
    gens = rows(log_dir / "emergence" / "generations.jsonl")
    for m in metrics:
        assert 0.0 <= m["duplicate_completion_rate"] <= 1.0
        assert 0.0 <= m["expected_duplicate_rate"] <= 1.0
        assert m["mean_token_entropy"] > 0
        step_gens = [g for g in gens if g["step"] == m["step"]]
        if m["num_datums"] == len(step_gens):  # every completion trained: every token in KL
            assert m["kl_tokens"] == sum(g["num_tokens"] for g in step_gens)
        assert 0 < m["kl_tokens"] <= sum(g["num_tokens"] for g in step_gens)


@pytest.fixture(scope="module")
def local_t1(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    log_dir = tmp_path_factory.mktemp("local") / "t1"
    run_training(_config(log_dir), progress="off")
    metrics = rows(log_dir / "metrics.jsonl")
    _check_row_shapes(metrics, log_dir)
    return metrics


def test_on_policy_sampler_and_learner_agree_at_temperature_one(
        local_t1: list[dict[str, Any]]) -> None:
    for m in local_t1:
        assert m["temperature"] == 1.0
        assert abs(m["kl_sampler_learner_k1"]) < 1e-5
        assert 0 <= m["kl_sampler_learner_k3"] < 1e-8
        assert m["importance_ratio_mean"] == pytest.approx(1.0, abs=1e-5)
        assert m["entropy_estimator"] == "sampled_token"


def test_temperature_makes_the_importance_ratio_differ_from_one(
        tmp_path: Path, local_t1: list[dict[str, Any]]) -> None:
    run_training(_config(tmp_path / "run", temperature=0.7), progress="off")
    metrics = rows(tmp_path / "run" / "metrics.jsonl")
    _check_row_shapes(metrics, tmp_path / "run")
    for m in metrics:
        assert m["temperature"] == 0.7
        assert m["kl_sampler_learner_k1"] > 0.05 and m["kl_sampler_learner_k3"] > 0.05
        assert abs(m["importance_ratio_mean"] - 1.0) > 0.01
    # a sharper sampler: lower entropy than at temperature 1
    assert (np.mean([m["mean_token_entropy"] for m in metrics])
            < np.mean([m["mean_token_entropy"] for m in local_t1]))


def test_entropy_from_topk_is_exact_on_a_small_vocabulary(
        tmp_path: Path, local_t1: list[dict[str, Any]]) -> None:
    run_training(_config(tmp_path / "run", pipeline="maxrl+gtpo",
                         pipeline_params={"gtpo": {"signal": "entropy"}}), progress="off")
    metrics = rows(tmp_path / "run" / "metrics.jsonl")
    assert [m["entropy_estimator"] for m in metrics] == ["topk_exact"] * STEPS
    # step 0 samples the same initial weights with the same seeds as local_t1: the exact
    # entropy and the sampled-token estimate of the same distribution agree within noise
    assert metrics[0]["mean_token_entropy"] == pytest.approx(
        local_t1[0]["mean_token_entropy"], rel=0.25)


# ---------------------------------------------------------------- tinker SDK via tp serve
def _server(tmp: Path, duplicate: str) -> TinkerServer:
    from textpolicy.engines.local import LocalEngine

    return TinkerServer(lambda: LocalEngine(device="cpu", state_dir=tmp / "states"),
                        models=served_models(), state_dir=tmp,
                        faults=FaultPlan(duplicate_samples=duplicate)).start()


@pytest.fixture(scope="module")
def tinker_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401 - import once

    mp = pytest.MonkeyPatch()
    mp.setenv("TEXTPOLICY_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tp-cache"))
    mp.setenv("TINKER_API_KEY", "tml-local")
    mp.setenv("TINKER_TELEMETRY", "0")
    yield
    mp.undo()


def test_tinker_groups_do_not_collapse_on_a_sampler_that_repeats_seeded_samples(
        tinker_env: None, tmp_path: Path, local_t1: list[dict[str, Any]]) -> None:
    """`--duplicate-samples seeded` answers a seeded request for N samples with N copies
    (Tinker's reported behaviour). The engine sends one seeded request per sample, so the run
    equals the local engine's (which draws sample j of a seeded request the same way)."""
    import tinker
    from tinker import types

    server = _server(tmp_path, "seeded")
    try:
        # the fault is the reported bug: one seeded request for 4 samples, 4 copies
        service = tinker.ServiceClient(base_url=server.url)
        try:
            tc = service.create_lora_training_client(TINY_MODEL, rank=0, seed=1).result()
            sampler = tc.save_weights_and_get_sampling_client().result()
            prompt = types.ModelInput.from_ints([1, 2, 3])
            seeded = sampler.sample(prompt, 4, types.SamplingParams(max_tokens=8, seed=5))
            assert len({tuple(q.tokens) for q in seeded.result().sequences}) == 1
            unseeded = sampler.sample(prompt, 4, types.SamplingParams(max_tokens=8))
            assert len({tuple(q.tokens) for q in unseeded.result().sequences}) > 1
        finally:
            service.close("success").result()
        log_dir = tmp_path / "run"
        run_training(_config(log_dir, "tinker", engine_options={"base_url": server.url}),
                     progress="off")
        unseeded_dir = tmp_path / "unseeded"
        run_training(_config(unseeded_dir, "tinker", engine_options={
            "base_url": server.url, "sample_seeds": "none"}), progress="off")
    finally:
        server.stop()
    # without seeds: one request per group, not collapsed either (Tinker's own randomness)
    assert all(m["duplicate_completion_rate"] < 0.5
               for m in rows(unseeded_dir / "metrics.jsonl"))
    assert json.loads((unseeded_dir / "config.json").read_text())["engine"][
        "sample_seeds"] == "none"
    metrics = rows(log_dir / "metrics.jsonl")
    _check_row_shapes(metrics, log_dir)
    for got, want in zip(metrics, local_t1, strict=True):
        for key in ("duplicate_completion_rate", "expected_duplicate_rate", "correct_rate",
                    "num_datums", "kl_tokens"):
            assert got[key] == pytest.approx(want[key], abs=1e-6), key
        assert got["duplicate_completion_rate"] < 0.5
        # learner logprobs came back through the wire (loss_fn_outputs): on-policy, KL ≈ 0
        assert abs(got["kl_sampler_learner_k1"]) < 1e-5
    engine = json.loads((log_dir / "config.json").read_text())["engine"]
    assert engine["sample_seeds"] == "per_sample"


def test_a_collapsing_sampler_is_measured_and_warned_about(
        tinker_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = _server(tmp_path, "all")
    try:
        log_dir = tmp_path / "run"
        run_training(_config(log_dir, "tinker", engine_options={"base_url": server.url}),
                     progress="plain")
    finally:
        server.stop()
    metrics = rows(log_dir / "metrics.jsonl")
    assert [m["duplicate_completion_rate"] for m in metrics] == [1.0] * STEPS
    # far above what an honest sampler of this policy gives by chance: the warning's rule
    assert all(m["duplicate_completion_rate"] - m["expected_duplicate_rate"] > 0.25
               for m in metrics)
    assert all(m["num_datums"] == 0 for m in metrics)  # identical groups: nothing to learn
    assert all(m["kl_sampler_learner_k1"] is None for m in metrics)
    warnings = [line for line in capsys.readouterr().err.splitlines()
                if line.startswith("warning: step 0: 100% of completions")]
    assert len(warnings) == 1, warnings  # one line, once per session
    assert "collapsing groups" in warnings[0]


def test_serve_duplicate_flag_and_engine_option_are_checked() -> None:
    result = CliRunner().invoke(cli_main, ["serve", "--duplicate-samples", "some"])
    assert result.exit_code == 2 and "'off', 'seeded', 'all'" in result.output
    for check in (lambda: readiness(None, 3, "group"),
                  lambda: TinkerEngine(base_url="http://127.0.0.1:9", sample_seeds="group")):
        with pytest.raises(ConfigError, match="sample_seeds='group': allowed: per_sample, none"):
            check()
