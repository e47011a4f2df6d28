"""The local engine's primitives on the built-in tiny model (CPU, fp32)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from textpolicy.engines.base import (
    AdamParams,
    Datum,
    SamplingParams,
    build_rl_datum,
    build_sft_datum,
)
from textpolicy.engines.local import TINY_MODEL, LocalEngine
from textpolicy.engines.local.training_client import LocalTrainingClient
from textpolicy.errors import ConfigError, EngineError


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEngine]:
    mp = pytest.MonkeyPatch()
    mp.setenv("TEXTPOLICY_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tp-cache"))
    eng = LocalEngine(device="cpu", state_dir=tmp_path_factory.mktemp("states"))
    yield eng
    eng.close()
    mp.undo()


@pytest.fixture()
def tc(engine: LocalEngine) -> LocalTrainingClient:
    return engine.create_training_client(TINY_MODEL, lora_rank=None, seed=0)


def prompt(tc: LocalTrainingClient, text: str) -> list[int]:
    tok = tc.get_tokenizer()
    return [tok.bos_token_id, *tok.encode(text, add_special_tokens=False)]


def weights(tc: LocalTrainingClient) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in tc.trainable}


def completion_logprobs(tc: LocalTrainingClient, p: list[int], c: list[int]) -> np.ndarray:
    lp = tc.sampling_client("probe").compute_logprobs([p + c]).result()[0]
    return np.asarray(lp[len(p):])


# Finite differences in float32: the loss is a sum of a few log-probabilities (|L| ≈ 1–20,
# rounding ≈ 1e-6), the step moves the weights by FD_STEP along the unit gradient, so rounding
# contributes ≈ 1e-4 and curvature ≈ FD_STEP² of the directional derivative. FD_REL bounds both
# on every CPU; a wrong shift, weight or sign changes the derivative by O(1).
FD_STEP = 1e-2
FD_REL = 2e-2


def gradients(tc: LocalTrainingClient) -> dict[str, torch.Tensor]:
    out = {}
    for n, p in tc.trainable:
        assert p.grad is not None, n
        out[n] = p.grad.detach().clone()
    return out


def squared_norm(grad: dict[str, torch.Tensor]) -> float:
    return float(sum(float((g.double() ** 2).sum()) for g in grad.values()))


def finite_difference(tc: LocalTrainingClient, grad: dict[str, torch.Tensor],
                      loss: Callable[[], float]) -> float:
    """Central difference of ``loss`` along ``grad``, scaled to d loss / d t at θ + t·grad."""
    norm = squared_norm(grad) ** 0.5
    saved = weights(tc)
    values = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for n, p in tc.trainable:
                p.copy_(saved[n] + sign * FD_STEP * grad[n] / norm)
        values.append(loss())
    with torch.no_grad():
        for n, p in tc.trainable:
            p.copy_(saved[n])
    return (values[0] - values[1]) / (2 * FD_STEP) * norm


def same_gradient(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float32 re-association: 1e-4 of the tensor's largest entry (≈ 840 ulps of it;
    measured differences between batchings are ≈ 1e-6 of it, a missing datum ≈ 0.1–1)."""
    return bool(torch.allclose(a, b, rtol=0.0, atol=1e-4 * float(a.abs().max())))


def test_sampler_and_learner_logprobs_agree(tc: LocalTrainingClient) -> None:
    sc = tc.sampling_client("s")
    prompts = [prompt(tc, f"{a}+{b}=") for a, b in [(1, 2), (7, 8), (9, 9)]]
    futures = [sc.sample(p, 8, SamplingParams(max_tokens=4, seed=i))
               for i, p in enumerate(prompts)]
    seqs = [f.result() for f in futures]
    full = [p + list(s.tokens) for p, group in zip(prompts, seqs, strict=True) for s in group]
    learner = sc.compute_logprobs(full).result()
    worst = 0.0
    for (p, group), start in zip(zip(prompts, seqs, strict=True), range(0, 24, 8), strict=True):
        for j, s in enumerate(group):
            assert len(s.tokens) == len(s.logprobs) >= 1
            got = np.asarray(learner[start + j][len(p):])
            worst = max(worst, float(np.abs(got - np.asarray(s.logprobs)).max()))
    assert worst <= 1e-5


def test_deferred_batching_and_stop_reasons(tc: LocalTrainingClient) -> None:
    sc = tc.sampling_client("s")
    tok = tc.get_tokenizer()
    f1 = sc.sample(prompt(tc, "2+2="), 16, SamplingParams(max_tokens=4, seed=1))
    f2 = sc.sample(prompt(tc, "9+8="), 16, SamplingParams(max_tokens=1, seed=2),
                   topk_logprobs=3)
    assert not f1.done() and not f2.done()  # nothing ran yet: one batch on first result()
    first = f1.result()
    assert f2.done()
    for s in first:
        assert (s.stop_reason == "stop") == (s.tokens[-1] == tok.eos_token_id)
        assert s.stop_reason == "stop" or len(s.tokens) == 4
        assert s.topk_logprobs is None
    for s in f2.result():
        assert len(s.tokens) == 1
        assert s.topk_logprobs is not None and len(s.topk_logprobs[0]) == 3
        lps = [lp for _, lp in s.topk_logprobs[0]]
        assert lps == sorted(lps, reverse=True)
        top = dict(s.topk_logprobs[0])
        if s.tokens[0] in top:
            assert abs(top[s.tokens[0]] - s.logprobs[0]) < 1e-6


def test_sampling_is_seeded_per_sequence(tc: LocalTrainingClient) -> None:
    p = prompt(tc, "3+4=")
    params = SamplingParams(max_tokens=4, seed=123)
    alone = tc.sampling_client("a").sample(p, 8, params).result()
    sc = tc.sampling_client("b")
    other = sc.sample(prompt(tc, "5+5="), 8, SamplingParams(max_tokens=4, seed=9))
    together = sc.sample(p, 8, params)
    other.result()
    assert [s.tokens for s in together.result()] == [s.tokens for s in alone]
    changed = tc.sampling_client("c").sample(p, 8, SamplingParams(max_tokens=4, seed=124))
    assert [s.tokens for s in changed.result()] != [s.tokens for s in alone]


def test_temperature_topk_and_greedy(tc: LocalTrainingClient) -> None:
    sc = tc.sampling_client("t")
    p = prompt(tc, "1+1=")
    greedy = sc.sample(p, 4, SamplingParams(max_tokens=3, temperature=0.0)).result()
    assert len({s.tokens for s in greedy}) == 1 and greedy[0].tokens[0] == tc.get_tokenizer(
        ).encode("2", add_special_tokens=False)[0]
    assert all(lp == 0.0 for lp in greedy[0].logprobs)
    top1 = sc.sample(p, 8, SamplingParams(max_tokens=1, top_k=1, seed=5)).result()
    assert {s.tokens for s in top1} == {greedy[0].tokens[:1]}
    assert all(abs(s.logprobs[0]) < 1e-6 for s in top1)  # renormalised onto one token
    # temperature changes the reported logprob: it is the sampling distribution's
    hot = sc.sample(p, 1, SamplingParams(max_tokens=1, temperature=2.0, seed=7)).result()[0]
    learner = completion_logprobs(tc, p, list(hot.tokens))
    assert abs(hot.logprobs[0] - learner[0]) > 1e-3


def test_sampler_is_a_snapshot(tc: LocalTrainingClient) -> None:
    p = prompt(tc, "4+4=")
    before = tc.sampling_client("before")
    ref = before.sample(p, 8, SamplingParams(max_tokens=4, seed=3)).result()
    tc.forward_backward([build_sft_datum(p, [5, 2])], "cross_entropy")
    tc.optim_step(AdamParams(learning_rate=5e-2))
    again = before.sample(p, 8, SamplingParams(max_tokens=4, seed=3)).result()
    assert [(s.tokens, s.logprobs) for s in again] == [(s.tokens, s.logprobs) for s in ref]
    after = tc.sampling_client("after").compute_logprobs([[*p, 5, 2]]).result()[0]
    old = before.compute_logprobs([[*p, 5, 2]]).result()[0]
    assert abs(after[-2] - old[-2]) > 1e-3  # the new client sees the stepped weights


def test_cross_entropy_targets_the_next_token(tc: LocalTrainingClient) -> None:
    """The loss of build_sft_datum(p, c) is -Σ log p(c_i | p, c_<i): with an unshifted datum
    (model_input = p + c, targets = p + c) the value and the trained token both change."""
    tok = tc.get_tokenizer()
    p, c = prompt(tc, "6+7="), [*tok.encode("13", add_special_tokens=False), tok.eos_token_id]
    expected = -completion_logprobs(tc, p, c).sum()
    got = tc.forward_backward([build_sft_datum(p, c)], "cross_entropy").result()
    assert got.loss == pytest.approx(expected, rel=1e-5)
    assert got.metrics["loss:sum"] == got.loss
    full = p + c
    unshifted = Datum(model_input=full, loss_fn_inputs={
        "target_tokens": np.asarray(full, dtype=np.int64),
        "weights": np.asarray([0.0] * len(p) + [1.0] * len(c), dtype=np.float32)})
    wrong = tc.forward_backward([unshifted], "cross_entropy").result()
    assert abs(wrong.loss - expected) > 0.1
    tc.optim_step(AdamParams(learning_rate=0.0))  # discard accumulated gradients
    # the gradient is the gradient of that value: a central finite difference of
    # -Σ log p(c_i | p, c_<i) along it matches |g|² (a bug in the shift or the weights would not)
    tc.forward_backward([build_sft_datum(p, c)], "cross_entropy")
    grad = gradients(tc)
    along = finite_difference(tc, grad, lambda: -float(completion_logprobs(tc, p, c).sum()))
    assert along == pytest.approx(squared_norm(grad), rel=FD_REL)


def test_importance_sampling_and_ppo_are_sums(tc: LocalTrainingClient) -> None:
    sc = tc.sampling_client("is")
    prompts = [prompt(tc, "2+3="), prompt(tc, "8+9=")]
    futures = [sc.sample(p, 4, SamplingParams(max_tokens=4, seed=i))
               for i, p in enumerate(prompts)]
    rng = np.random.default_rng(0)
    datums, hand_is, hand_ppo, hand_ppo_wide = [], 0.0, 0.0, 0.0
    for p, f in zip(prompts, futures, strict=True):
        for s in f.result():
            adv = rng.normal(size=len(s.tokens))
            # pretend the sampler was a little different so ratios are not all 1
            q = np.asarray(s.logprobs) + rng.normal(scale=0.3, size=len(s.tokens))
            datums.append(build_rl_datum(p, list(s.tokens), q, adv))
            logp = completion_logprobs(tc, p, list(s.tokens))
            q32 = q.astype(np.float32).astype(np.float64)
            adv32 = adv.astype(np.float32).astype(np.float64)
            ratio = np.exp(logp - q32)
            hand_is += float(-(ratio * adv32).sum())
            hand_ppo += float(-np.minimum(ratio * adv32,
                                          np.clip(ratio, 0.8, 1.2) * adv32).sum())
            hand_ppo_wide += float(-np.minimum(ratio * adv32,
                                               np.clip(ratio, 0.5, 1.5) * adv32).sum())
    got = tc.forward_backward(datums, "importance_sampling").result()
    assert got.loss == pytest.approx(hand_is, rel=1e-5, abs=1e-5)
    assert got.metrics["num_datums"] == len(datums)
    ppo = tc.forward_backward(datums, "ppo").result()
    assert ppo.loss == pytest.approx(hand_ppo, rel=1e-5, abs=1e-5)
    wide = tc.forward_backward(datums, "ppo", {"clip_low_threshold": 0.5,
                                               "clip_high_threshold": 1.5}).result()
    assert wide.loss == pytest.approx(hand_ppo_wide, rel=1e-5, abs=1e-5)
    # sum, not mean: the loss of the batch is the sum of the losses of its halves
    half1 = tc.forward_backward(datums[:3], "importance_sampling").result().loss
    half2 = tc.forward_backward(datums[3:], "importance_sampling").result().loss
    assert half1 + half2 == pytest.approx(got.loss, rel=1e-5, abs=1e-5)


def test_importance_sampling_gradient_lands_on_the_sampled_token(
        tc: LocalTrainingClient) -> None:
    """A positive advantage on one completion token raises exactly that token's
    probability at that position, the next-token shift of build_rl_datum."""
    tok = tc.get_tokenizer()
    p = prompt(tc, "0+5=")
    c = [tok.encode("z", add_special_tokens=False)[0]]  # an unlikely answer token
    before = completion_logprobs(tc, p, c)
    datum = build_rl_datum(p, c, before.astype(np.float32), [1.0])
    assert datum.loss_fn_inputs["advantages"][len(p) - 1] == 1.0
    tc.forward_backward([datum], "importance_sampling")
    grad = gradients(tc)
    # at ratio 1 the gradient of -ratio·A with A = 1 is -∇ log p(c | p): descending it raises
    # exactly that token's log-probability at that position, by |g|² per unit step
    along = finite_difference(tc, grad, lambda: -float(completion_logprobs(tc, p, c)[0]))
    assert along == pytest.approx(squared_norm(grad), rel=FD_REL)
    # and not the log-probability of the same token one position later (an unshifted datum)
    later = finite_difference(
        tc, grad, lambda: -float(completion_logprobs(tc, [*p, c[0]], c)[0]))
    assert abs(later - along) > 0.1 * along


def test_micro_batching_does_not_change_gradients(engine: LocalEngine,
                                                  tc: LocalTrainingClient) -> None:
    small = LocalEngine(device="cpu", train_tokens_per_batch=8)
    tc2 = small.create_training_client(TINY_MODEL, lora_rank=None, seed=0)
    datums = [build_sft_datum(prompt(tc, f"{a}+{a}="), [4 + a]) for a in range(5)]
    l1 = tc.forward_backward(datums, "cross_entropy").result().loss
    l2 = tc2.forward_backward(datums, "cross_entropy").result().loss
    assert l1 == pytest.approx(l2, rel=1e-5)  # ≈ 84 float32 ulps; a dropped datum is ≈ 20 %
    full, micro = gradients(tc), gradients(tc2)
    for n in full:
        assert same_gradient(full[n], micro[n]), n
    # the tolerance still sees a real micro-batching bug: losing one of the five datums
    tc3 = small.create_training_client(TINY_MODEL, lora_rank=None, seed=0)
    tc3.forward_backward(datums[:-1], "cross_entropy")
    assert not all(same_gradient(full[n], g) for n, g in gradients(tc3).items())


def _step(tc: LocalTrainingClient, k: int) -> None:
    datums = [build_sft_datum(prompt(tc, f"{k}+{b}="), [3 + (k + b) % 10, 2])
              for b in range(4)]
    tc.forward_backward(datums, "cross_entropy")
    tc.optim_step(AdamParams(learning_rate=3e-3, weight_decay=0.01, grad_clip_norm=1.0))


def test_save_and_resume_reproduce_the_next_step(engine: LocalEngine,
                                                 tmp_path: Path) -> None:
    a = engine.create_training_client(TINY_MODEL, lora_rank=None, seed=0)
    _step(a, 1)
    _step(a, 2)
    path = a.save_state(str(tmp_path / "ckpt")).result()
    assert (Path(path) / "optimizer.pt").is_file()
    _step(a, 3)
    b = engine.resume_training_client(path)
    assert b.optim_steps == 2
    _step(b, 3)
    for (n, pa), (_, pb) in zip(a.trainable, b.trainable, strict=True):
        assert torch.equal(pa, pb), n
    # without the optimizer state the same step lands elsewhere
    c = engine.resume_training_client(path)
    c.optimizer.state.clear()
    _step(c, 3)
    assert any(not torch.equal(pa, pc) for (_, pa), (_, pc) in
               zip(a.trainable, c.trainable, strict=True))
    # a relative name goes under the engine's state_dir
    rel = a.save_state("named").result()
    assert Path(rel).parent == engine.state_dir


def test_corrupt_state_is_refused(engine: LocalEngine, tmp_path: Path) -> None:
    a = engine.create_training_client(TINY_MODEL, lora_rank=None, seed=0)
    path = Path(a.save_state(str(tmp_path / "ckpt")).result())
    (path / "optimizer.pt").write_bytes(b"garbage")
    with pytest.raises(EngineError, match="corrupt"):
        engine.resume_training_client(str(path))
    with pytest.raises(EngineError, match="not a local engine state"):
        engine.resume_training_client(str(tmp_path))


def test_lora_training_save_and_resume(engine: LocalEngine, tmp_path: Path) -> None:
    base = engine.create_training_client(TINY_MODEL, lora_rank=None, seed=0)
    a = engine.create_training_client(TINY_MODEL, lora_rank=4, seed=1)
    names = [n for n, _ in a.trainable]
    assert names and all("lora_" in n for n in names)
    p = prompt(a, "3+3=")
    seq = [[*p, 9, 2]]
    start = a.sampling_client("x").compute_logprobs(seq).result()[0]
    assert np.allclose(start, base.sampling_client("x").compute_logprobs(seq).result()[0],
                       atol=1e-6)  # LoRA B starts at zero
    frozen = {n: t.detach().clone() for n, t in a.model.named_parameters()
              if not t.requires_grad}
    _step(a, 1)
    moved = a.sampling_client("y").compute_logprobs(seq).result()[0]
    assert not np.allclose(moved, start)
    for n, t in a.model.named_parameters():
        if not t.requires_grad:
            assert torch.equal(t, frozen[n]), n
    path = a.save_state(str(tmp_path / "lora")).result()
    assert (Path(path) / "adapter").is_dir() and not (Path(path) / "model").exists()
    _step(a, 2)
    b = engine.resume_training_client(path)
    assert b.lora_rank == 4
    assert b.sampling_client("z").compute_logprobs(seq).result()[0] == pytest.approx(
        moved, abs=1e-7)
    _step(b, 2)
    for (n, pa), (_, pb) in zip(a.trainable, b.trainable, strict=True):
        assert torch.equal(pa, pb), n
    # seeded init: the same seed gives the same adapter, another seed another one
    same = engine.create_training_client(TINY_MODEL, lora_rank=4, seed=1)
    other = engine.create_training_client(TINY_MODEL, lora_rank=4, seed=2)
    first = next(t for n, t in same.trainable if "lora_A" in n)
    assert torch.equal(first, next(t for n, t in engine.create_training_client(
        TINY_MODEL, lora_rank=4, seed=1).trainable if "lora_A" in n))
    assert not torch.equal(first, next(t for n, t in other.trainable if "lora_A" in n))


def test_bad_requests_raise_engine_errors(tc: LocalTrainingClient, engine: LocalEngine) -> None:
    p = prompt(tc, "1+2=")
    with pytest.raises(EngineError, match="unknown loss"):
        tc.forward_backward([build_sft_datum(p, [5])], "dro")
    with pytest.raises(EngineError, match="lacks"):
        tc.forward_backward([build_sft_datum(p, [5])], "importance_sampling")
    with pytest.raises(EngineError, match="loss_fn_config"):
        tc.forward_backward([build_sft_datum(p, [5])], "cross_entropy", {"clip": 1.0})
    with pytest.raises(EngineError, match="token ids"):
        tc.forward_backward([build_sft_datum(p, [999])], "cross_entropy")
    sc = tc.sampling_client("bad")
    with pytest.raises(EngineError, match="max_tokens"):
        sc.sample(p, 1, SamplingParams(max_tokens=0))
    with pytest.raises(EngineError, match="empty"):
        sc.sample([], 1, SamplingParams(max_tokens=1))
    with pytest.raises(ConfigError, match=r"config\.json"):
        engine.create_training_client("/nonexistent/model", lora_rank=None, seed=0)
    with pytest.raises(ConfigError, match="device"):
        LocalEngine(device="tpu")


def test_chunked_fp32_logprobs_match_and_backpropagate() -> None:
    from textpolicy.engines.local.hf import token_logprobs

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(37, 16, requires_grad=True)
    targets = torch.randint(0, 50, (37,))
    whole = token_logprobs(head, hidden, targets)
    expected = torch.log_softmax(head(hidden), -1).gather(-1, targets[:, None])[:, 0]
    # float32 tolerances (torch.testing's defaults: rtol 1.3e-6, atol 1e-5): chunks change the
    # matmul shapes and so the summation order, never the value beyond rounding
    torch.testing.assert_close(whole, expected)
    (g_whole,) = torch.autograd.grad(whole.sum(), hidden)
    chunked = token_logprobs(head, hidden, targets, chunk_tokens=5)
    torch.testing.assert_close(chunked, whole)
    (g_chunked,) = torch.autograd.grad(chunked.sum(), hidden)
    torch.testing.assert_close(g_chunked, g_whole)


def test_decode_chunks_give_the_same_samples(tc: LocalTrainingClient) -> None:
    chunked = LocalEngine(device="cpu", max_decode_batch=3).create_training_client(
        TINY_MODEL, lora_rank=None, seed=0)
    out = []
    for client in (tc, chunked):
        sc = client.sampling_client("same")
        futures = [sc.sample(prompt(client, f"{a}+1="), 4, SamplingParams(max_tokens=4,
                                                                           seed=a))
                   for a in range(3)]
        out.append([[(s.tokens, s.stop_reason) for s in f.result()] for f in futures])
    assert out[0] == out[1]


def test_cache_kwarg_is_detected_from_the_forward_signature(tc: LocalTrainingClient) -> None:
    from textpolicy.engines.local.hf import cache_kwarg

    class Old(torch.nn.Module):  # transformers 5.17 style
        def forward(self, input_ids: object = None, past_key_values: object = None) -> None:
            return None

    class New(torch.nn.Module):  # transformers 5.24 style
        def forward(self, input_ids: object = None, cache: object = None) -> None:
            return None

    class Neither(torch.nn.Module):
        def forward(self, input_ids: object = None) -> None:
            return None

    assert cache_kwarg(Old()) == "past_key_values"
    assert cache_kwarg(New()) == "cache"
    with pytest.raises(EngineError, match="KV cache"):
        cache_kwarg(Neither())
    import inspect

    real = inspect.signature(type(tc.model).forward).parameters
    assert cache_kwarg(tc.model) in real


def test_engine_plugin_validates_options_and_imports_torch_lazily() -> None:
    import subprocess
    import sys

    from textpolicy.plugins import get_registry

    record = get_registry().engines.get("local")
    with pytest.raises(ConfigError, match="unknown option 'devices'"):
        record.factory(devices="cpu")
    assert isinstance(record.factory(device="cpu"), LocalEngine)
    code = ("import sys; from textpolicy.plugins import get_registry; r = get_registry(); "
            "r.engines.get('local'); r.tasks.get('arithmetic'); "
            "import textpolicy.engines.local as m; m.TINY_MODEL; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_left_padded_prompts_of_different_lengths_agree_with_the_learner(
        tc: LocalTrainingClient) -> None:
    sc = tc.sampling_client("ragged")
    prompts = [prompt(tc, t) for t in ("", "7+", "what is 2+3?", "1+1=")]
    futures = [sc.sample(p, 4, SamplingParams(max_tokens=6, seed=i))
               for i, p in enumerate(prompts)]
    worst = 0.0
    for p, f in zip(prompts, futures, strict=True):
        alone = tc.sampling_client("alone").sample(
            p, 4, SamplingParams(max_tokens=6, seed=prompts.index(p))).result()
        for s, s_alone in zip(f.result(), alone, strict=True):
            assert s.tokens == s_alone.tokens  # padding does not change what is sampled
            learner = completion_logprobs(tc, p, list(s.tokens))
            worst = max(worst, float(np.abs(learner - np.asarray(s.logprobs)).max()))
    assert worst <= 1e-5


def test_top_p_restricts_to_the_nucleus(tc: LocalTrainingClient) -> None:
    sc = tc.sampling_client("nucleus")
    p = prompt(tc, "2+5=")
    tiny = sc.sample(p, 8, SamplingParams(max_tokens=1, top_p=1e-6, seed=1)).result()
    greedy = sc.sample(p, 1, SamplingParams(max_tokens=1, temperature=0.0)).result()[0]
    assert {s.tokens for s in tiny} == {greedy.tokens}
    assert all(abs(s.logprobs[0]) < 1e-6 for s in tiny)
    full = np.asarray(sc.sample(p, 1, SamplingParams(max_tokens=1, seed=0), topk_logprobs=47)
                      .result()[0].topk_logprobs[0])  # type: ignore[index]
    order = np.argsort(-full[:, 1])
    probs = np.exp(full[order, 1])
    nucleus = set(full[order, 0][: int(np.searchsorted(np.cumsum(probs), 0.8)) + 1].astype(int))
    mass = probs[: len(nucleus)].sum()
    for s in sc.sample(p, 64, SamplingParams(max_tokens=1, top_p=0.8, seed=2)).result():
        assert s.tokens[0] in nucleus
        assert s.logprobs[0] == pytest.approx(
            float(full[full[:, 0] == s.tokens[0], 1][0]) - np.log(mass), abs=1e-5)


def test_threads_loading_at_once_get_the_checkpoint(engine: LocalEngine) -> None:
    """A thread-worker campaign loads one model per run at the same moment; transformers'
    loading is process-global state (it failed 33 of 40 tries unguarded: ImportError or "Cannot
    copy out of meta tensor", or a silently re-initialised lm_head)."""
    import threading

    reference = engine.create_training_client(TINY_MODEL, lora_rank=None, seed=0)
    expected = {n: p.detach().clone() for n, p in reference.model.state_dict().items()}
    results: list[object] = []

    def load(rank: int | None) -> None:
        try:
            results.append(engine.create_training_client(TINY_MODEL, lora_rank=rank, seed=0))
        except Exception as exc:  # recorded, asserted below
            results.append(exc)

    for _ in range(3):
        threads = [threading.Thread(target=load, args=(rank,)) for rank in (None, None, 4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors
    for client in results:
        assert isinstance(client, LocalTrainingClient)
        if client.lora_rank is None:
            got = client.model.state_dict()
            assert got.keys() == expected.keys()
            for name, tensor in expected.items():
                assert torch.equal(got[name], tensor), name
