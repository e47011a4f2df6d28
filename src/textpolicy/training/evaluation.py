"""Held-out evaluation during training.

At eval step s (after s training steps; 0 is the initial model) every eval prompt is sampled
``eval_samples`` times at ``eval_temperature`` with a sampling seed that depends only on the
run seed and the prompt id, so every arm and every eval step of seed s uses the same seeds.
All prompts are submitted before any is awaited (one batched decode on the local engine).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np
from numpy.typing import NDArray

from textpolicy.engines.base import SamplingClient, SamplingParams, Tokenizer
from textpolicy.tasks.base import Example, Task
from textpolicy.tasks.evaluation import pass_at_k_many
from textpolicy.training.seeds import eval_sampling_seed


@attrs.frozen
class EvalResult:
    """Outcome of one eval: ``rows`` for eval.jsonl and pass@k per k."""

    step: int
    rows: tuple[Mapping[str, Any], ...]
    pass_at: Mapping[int, float]

    def metrics(self, prefix: str = "eval_") -> dict[str, float]:
        return {f"{prefix}pass@{k}": v for k, v in sorted(self.pass_at.items())}


def pass_at_k(correct: NDArray[np.bool_], k: int) -> float:
    """Mean over prompts of the unbiased pass@k estimator; ``correct`` is bool [P, n]."""
    correct = np.asarray(correct, dtype=bool)
    if correct.size == 0:
        return 0.0
    return float(pass_at_k_many(correct.shape[1], correct.sum(axis=1), k).mean())


def eval_ks(samples: int) -> tuple[int, ...]:
    """The k values reported for ``samples`` samples per prompt: 1 and ``samples``."""
    return (1,) if samples <= 1 else (1, samples)


def run_eval(
    sampler: SamplingClient,
    task: Task,
    tokenizer: Tokenizer,
    examples: Sequence[Example],
    prompt_ids: Mapping[str, list[int]],
    *,
    step: int,
    samples: int,
    temperature: float,
    max_tokens: int,
    seed: int,
    stop_token_ids: tuple[int, ...],
) -> EvalResult:
    """Sample, grade and summarise one held-out eval."""
    futures = []
    for ex in examples:
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature,
                                seed=eval_sampling_seed(seed, ex.id),
                                stop_token_ids=stop_token_ids)  # type: ignore[arg-type]
        futures.append(sampler.sample(prompt_ids[ex.id], samples, params))
    pairs: list[tuple[Example, str]] = []
    for ex, fut in zip(examples, futures, strict=True):
        for seq in fut.result():
            keep = bool(getattr(task, "grade_special_tokens", False))  # see loop.completion_text
            pairs.append((ex, tokenizer.decode(list(seq.tokens), skip_special_tokens=not keep)))
    grades = task.grade_many(pairs) if pairs else []
    correct = np.array([g.correct for g in grades], dtype=bool).reshape(len(examples), samples)
    rows = tuple(
        {"step": step, "prompt_id": ex.id, "sample": j, "correct": bool(correct[p, j])}
        for p, ex in enumerate(examples) for j in range(samples))
    return EvalResult(step=step, rows=rows,
                      pass_at={k: pass_at_k(correct, k) for k in eval_ks(samples)})


def result_from_rows(step: int, rows: Sequence[Mapping[str, Any]], samples: int) -> EvalResult:
    """Rebuild an eval's summary from its eval.jsonl rows (used on resume)."""
    by_prompt: dict[str, dict[int, bool]] = {}
    for r in rows:
        if r.get("step") == step:
            by_prompt.setdefault(str(r["prompt_id"]), {})[int(r["sample"])] = bool(r["correct"])
    correct = np.array([[d.get(j, False) for j in range(samples)] for d in by_prompt.values()],
                       dtype=bool).reshape(len(by_prompt), samples)
    return EvalResult(step=step, rows=tuple(r for r in rows if r.get("step") == step),
                      pass_at={k: pass_at_k(correct, k) for k in eval_ks(samples)})
