"""Review findings in the training loop, each pinned by a test on real components."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from textpolicy.engines.base import SamplingParams, build_rl_datum
from textpolicy.engines.local import TINY_MODEL, LocalEngine
from textpolicy.tasks.arithmetic import ArithmeticTask
from textpolicy.training import make_config, run_training
from textpolicy.training.loop import build_datum


def rows(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def engine() -> Any:
    eng = LocalEngine(device="cpu")
    yield eng
    eng.close()


def _grads(tc: Any) -> np.ndarray:
    out = np.concatenate([p.grad.detach().numpy().ravel() for _n, p in tc.trainable])
    for _n, p in tc.trainable:
        p.grad = None
    return out


def test_cross_entropy_datum_weights_completion_tokens_by_advantage(engine: Any) -> None:
    """``--loss cross_entropy`` in the RL loop is advantage-weighted log-likelihood: zero
    weight on prompt targets, the token advantages on completion targets. On-policy its
    gradient equals the importance-sampling gradient (ratio 1)."""
    tc = engine.create_training_client(TINY_MODEL, lora_rank=None, seed=0)
    tok = tc.get_tokenizer()
    task = ArithmeticTask()
    ex = task.train_examples(0)[0]
    prompt = task.render_prompt(ex, tok)
    sc = tc.sampling_client("ce")
    seqs = sc.sample(prompt, 4, SamplingParams(max_tokens=4, seed=1)).result()
    rng = np.random.default_rng(0)
    advs = [rng.normal(size=len(s.tokens)) for s in seqs]

    ce = [build_datum("cross_entropy", prompt, s.tokens, s.logprobs, a)
          for s, a in zip(seqs, advs, strict=True)]
    for d, s, a in zip(ce, seqs, advs, strict=True):
        w = np.asarray(d.loss_fn_inputs["weights"])
        assert np.all(w[: len(prompt) - 1] == 0.0)
        np.testing.assert_allclose(w[len(prompt) - 1:], a, rtol=1e-6)
        assert len(d.model_input) == len(prompt) + len(s.tokens) - 1
    is_datums = [build_datum("importance_sampling", prompt, s.tokens, s.logprobs, a)
                 for s, a in zip(seqs, advs, strict=True)]
    tc.forward_backward(ce, "cross_entropy").result()
    g_ce = _grads(tc)
    tc.forward_backward(is_datums, "importance_sampling").result()
    g_is = _grads(tc)
    assert np.abs(g_is).max() > 0
    # equal up to float32 rounding of the ratio exp(logp - q) ≈ 1: relative to the largest entry
    np.testing.assert_allclose(g_ce, g_is, rtol=1e-4, atol=1e-4 * np.abs(g_ce).max())
    # the RL datum itself is unchanged for the ratio losses
    ref = build_rl_datum(prompt, seqs[0].tokens, seqs[0].logprobs, advs[0])
    for key in ("target_tokens", "logprobs", "advantages"):
        np.testing.assert_array_equal(ref.loss_fn_inputs[key], is_datums[0].loss_fn_inputs[key])
    tc.close()


def test_cross_entropy_run_trains_on_advantages_not_on_prompts(tmp_path: Path) -> None:
    """A run with ``loss=cross_entropy``: a step's loss is -Σ A·logp over completion tokens,
    so with GRPO it is small (advantages are centred) — not the SFT loss of the prompts."""
    config = make_config(log_dir=str(tmp_path / "ce"), max_steps=2, seed=0, eval_every=0,
                         loss="cross_entropy")
    run_training(config, progress="off")
    metrics = rows(tmp_path / "ce" / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [0, 1]
    # Unweighted cross-entropy fits every prompt and completion target of ~30 datums
    # (measured: 653 and 800 at steps 0 and 1); the advantage-weighted loss is tens.
    for m in metrics:
        assert abs(m["loss"]) < 200.0, m["loss"]


def test_arithmetic_grades_special_tokens_inside_a_completion(engine: Any) -> None:
    """The training loop and the eval grade what was sampled: ``8<pad><eos>`` or
    ``<bos>8<eos>`` is not the exact answer (the warm-start model samples such completions:
    about 3% of its 'correct' ones scored 1 when special tokens were stripped before grading),
    while ``8<eos>`` is."""
    from textpolicy.training.loop import completion_text

    tc = engine.create_training_client(TINY_MODEL, lora_rank=None, seed=0)
    tok = tc.get_tokenizer()
    task = ArithmeticTask()
    ex = next(e for e in task.train_examples(0) if e.answer == "8")
    digit = tok.encode("8", add_special_tokens=False)
    eos, pad, bos = tok.eos_token_id, tok.pad_token_id, tok.bos_token_id
    cases = {(*digit, eos): True, (*digit, pad, eos): False, (bos, *digit, eos): False,
             (*digit, pad, pad, pad): False}
    for ids, correct in cases.items():
        text = completion_text(task, tok, ids)
        assert task.grade(ex, text).correct is correct, (ids, text)
    tc.close()


def test_entropy_signal_is_exact_on_a_small_vocabulary(engine: Any) -> None:
    """The ``entropy`` signal asks for top-k logprobs; on the tiny model (47 tokens) top-20
    covered about half the entropy of the warm start (1.32 vs 2.59 nats). A vocabulary small
    enough is requested in full, so the entropy is exact; large ones get the top-20 bound."""
    from textpolicy.training.loop import ENTROPY_TOPK, entropy_topk

    tc = engine.create_training_client(TINY_MODEL, lora_rank=None, seed=0)
    tok = tc.get_tokenizer()
    k = entropy_topk(tok)
    assert k == len(tok)
    task = ArithmeticTask()
    ex = task.train_examples(0)[0]
    seqs = tc.sampling_client("ent").sample(task.render_prompt(ex, tok), 4,
                                            SamplingParams(max_tokens=4, seed=3),
                                            topk_logprobs=k).result()
    for s in seqs:
        assert s.topk_logprobs is not None
        for pos in s.topk_logprobs:
            mass = float(np.exp([lp for _id, lp in pos]).sum())
            assert abs(mass - 1.0) < 1e-4, mass

    class Big:
        def __len__(self) -> int:
            return 151_936

    assert entropy_topk(Big()) == ENTROPY_TOPK
    tc.close()
