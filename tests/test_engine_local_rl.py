"""The local engine learns arithmetic: a short GRPO loop written out by hand.

Eval is the exact expected pass@1 at temperature 1 on the 30 held-out prompts (the product
of the answer tokens' probabilities, from compute_logprobs), so it has no sampling noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from textpolicy.engines.base import AdamParams, SamplingParams, build_rl_datum
from textpolicy.engines.local import TINY_MODEL, LocalEngine
from textpolicy.engines.local.sampling_client import LocalSamplingClient
from textpolicy.tasks.arithmetic import ArithmeticTask
from textpolicy.tasks.base import Example


def expected_pass1(sc: LocalSamplingClient, task: ArithmeticTask, tok: object,
                   examples: Sequence[Example]) -> float:
    seqs, starts = [], []
    for ex in examples:
        p = task.render_prompt(ex, tok)  # type: ignore[arg-type]
        answer = tok.encode(ex.answer, add_special_tokens=False)  # type: ignore[attr-defined]
        seqs.append(p + answer + [tok.eos_token_id])  # type: ignore[attr-defined]
        starts.append(len(p))
    lps = sc.compute_logprobs(seqs).result()
    return float(np.mean([np.exp(sum(lp[s:])) for lp, s in zip(lps, starts, strict=True)]))


def test_grpo_raises_the_held_out_correct_rate(tmp_path_factory: pytest.TempPathFactory,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTPOLICY_CACHE_DIR",
                       str(tmp_path_factory.getbasetemp() / "tp-cache"))
    task = ArithmeticTask()
    engine = LocalEngine(device="cpu")
    tc = engine.create_training_client(TINY_MODEL, lora_rank=None, seed=0)
    tok = tc.get_tokenizer()
    held_out = task.eval_examples()
    start = expected_pass1(tc.sampling_client("eval0"), task, tok, held_out)
    assert 0.1 < start < 0.3  # the warm start
    train = task.train_examples(seed=0)
    batch_size, group_size, train_rates = 4, 8, []
    for step in range(30):
        sc = tc.sampling_client(f"step{step}")
        batch = [train[(step * batch_size + i) % len(train)] for i in range(batch_size)]
        prompts = [task.render_prompt(ex, tok) for ex in batch]
        futures = [sc.sample(p, group_size, SamplingParams(max_tokens=task.max_tokens,
                                                           temperature=1.0,
                                                           seed=1000 * step + g))
                   for g, p in enumerate(prompts)]
        datums = []
        for ex, p, fut in zip(batch, prompts, futures, strict=True):
            seqs = fut.result()
            texts = [tok.decode(list(s.tokens), skip_special_tokens=True) for s in seqs]
            rewards = np.array([g.reward for g in task.grade_many([(ex, t) for t in texts])])
            train_rates.append(rewards.mean())
            advantages = rewards - rewards.mean()  # GRPO, no std normalisation
            for s, a in zip(seqs, advantages, strict=True):
                if a != 0:
                    datums.append(build_rl_datum(p, list(s.tokens), s.logprobs,
                                                 np.full(len(s.tokens), a)))
        if datums:
            tc.forward_backward(datums, "importance_sampling")
            tc.optim_step(AdamParams(learning_rate=1e-3))
    end = expected_pass1(tc.sampling_client("eval30"), task, tok, held_out)
    assert end > start + 0.15, (start, end)
    assert np.mean(train_rates[-20:]) > np.mean(train_rates[:20])
