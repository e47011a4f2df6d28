"""Per-step sampling diagnostics: duplicate completions and the sampler–learner mismatch.

- ``duplicate_completion_rate``: the share of completions whose token sequence is identical to
  another completion of the same group (same prompt). A sampler that collapses a group (e.g.
  one seed shared by all ``num_samples`` of a request) drives it to 1; GRPO-style advantages
  are then 0 and the step trains nothing. ``expected_duplicate_rate`` is what an honest
  sampler gives by chance (computed from its own logprobs); the excess is the warning sign.
- Sampler–learner KL on the sampled tokens, with q the sampler's probability of each sampled
  token (the logprob the sampler returned) and p the learner's (the forward pass of
  ``forward_backward``, on the same weights, before the update). Both estimators estimate
  ``KL(q ‖ p) = E_{x~q}[log q(x) − log p(x)]`` (the tokens were drawn from q):

  * ``k1 = mean(log q − log p)`` (unbiased, can be negative on a finite sample);
  * ``k3 = mean((r − 1) − log r)`` with ``r = p / q`` (unbiased, never negative).

  ``importance_ratio_mean = mean(r)``. Means are over every completion token of the step's
  datums. With temperature T ≠ 1 the sampler's q is the tempered distribution while p is the
  model's at temperature 1, so r ≠ 1 and both KLs are > 0 even on identical weights.
- ``mean_token_entropy``: the mean per-token entropy of the sampling distribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from textpolicy.rollouts import Rollouts

#: a step whose duplicate_completion_rate exceeds expected_duplicate_rate by more than this
#: gets a one-line warning (a confident policy duplicates legitimately: short answers).
DUPLICATE_WARN_EXCESS = 0.25

#: how ``mean_token_entropy`` was computed (the metrics row's ``entropy_estimator``).
ENTROPY_TOPK_EXACT = "topk_exact"  # top-k covered the whole vocabulary
ENTROPY_TOPK_LOWER_BOUND = "topk_lower_bound"  # -Σ over the top k only: a lower bound
ENTROPY_SAMPLED = "sampled_token"  # mean of -log q(sampled token): unbiased estimate


def duplicate_completion_rate(group_ids: NDArray[Any], tokens: NDArray[Any],
                              lengths: NDArray[Any]) -> float:
    """Share of completions identical (same length, same tokens) to another of their group.

    ``tokens`` is the padded ``[N, T]`` matrix (padding ignored through ``lengths``)."""
    n = len(group_ids)
    if n == 0:
        return 0.0
    toks = np.asarray(tokens, dtype=np.int64).reshape(n, -1)
    lens = np.asarray(lengths, dtype=np.int64)
    width = toks.shape[1]
    pad = np.arange(width)[None, :] >= lens[:, None]
    keys = np.concatenate([np.asarray(group_ids, dtype=np.int64)[:, None], lens[:, None],
                           np.where(pad, -1, toks)], axis=1)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    return float((counts[inverse.reshape(-1)] > 1).mean())


def expected_duplicate_rate(group_ids: NDArray[Any], logprobs: NDArray[Any]) -> float:
    """The duplicate rate an honest sampler gives in expectation, from its own logprobs.

    Given completion i with sequence probability ``q_i = exp(Σ_t logq)``, each of the other
    ``G − 1`` samples of its group (independent draws from q) equals it with probability
    ``q_i``, so ``P(i is duplicated | i) = 1 − (1 − q_i)^(G−1)``; the mean of that over the
    completions is an unbiased estimate of the expected ``duplicate_completion_rate``. (Hand
    written: no library has it.) ``logprobs`` is the padded ``[N, T]`` matrix, 0 in padding."""
    n = len(group_ids)
    if n == 0:
        return 0.0
    _, inverse, counts = np.unique(np.asarray(group_ids), return_inverse=True,
                                   return_counts=True)
    others = (counts[inverse.reshape(-1)] - 1).astype(np.float64)
    q = np.exp(np.asarray(logprobs, dtype=np.float64).reshape(n, -1).sum(axis=1))
    with np.errstate(divide="ignore"):
        p_dup = -np.expm1(others * np.log1p(-np.minimum(q, 1.0)))
    return float(np.nan_to_num(p_dup, nan=1.0).mean())


def sampler_learner_kl(sampler_logprobs: Sequence[NDArray[Any]],
                       learner_logprobs: Sequence[NDArray[Any]]) -> dict[str, float | None]:
    """``kl_sampler_learner_k1``, ``…_k3``, ``importance_ratio_mean`` over all tokens, and
    ``kl_tokens`` (how many); the three are None when there is no token."""
    if not sampler_logprobs:
        return {"kl_sampler_learner_k1": None, "kl_sampler_learner_k3": None,
                "importance_ratio_mean": None, "kl_tokens": 0}
    logq = np.concatenate([np.asarray(a, dtype=np.float64) for a in sampler_logprobs])
    logp = np.concatenate([np.asarray(a, dtype=np.float64) for a in learner_logprobs])
    if logq.shape != logp.shape:
        raise ValueError(f"sampler and learner logprobs differ in length "
                         f"({logq.shape[0]} vs {logp.shape[0]})")
    if logq.size == 0:
        return sampler_learner_kl([], [])
    log_r = logp - logq
    r = np.exp(log_r)
    return {"kl_sampler_learner_k1": float(np.mean(-log_r)),
            "kl_sampler_learner_k3": float(np.mean((r - 1.0) - log_r)),
            "importance_ratio_mean": float(np.mean(r)),
            "kl_tokens": int(logq.size)}


def mean_token_entropy(rollouts: Rollouts, *, exact: bool) -> tuple[float, str]:
    """Mean entropy per completion token of the sampling distribution, and how it was computed.

    With top-k logprobs: the ``entropy`` signal (``-Σ_k p_k log p_k``), exact when k covers the
    vocabulary (``exact``), else a lower bound (every omitted term is ≥ 0). Without: the mean
    of ``-log q`` of the sampled tokens, an unbiased estimate of the entropy
    (``E_{x~q}[-log q(x)] = H(q)``)."""
    from textpolicy.pipeline import token_signal

    topk = rollouts.topk_logprobs
    if topk is None or topk.shape[-1] == 0:
        kind, estimator = "surprisal", ENTROPY_SAMPLED
    else:
        kind = "entropy"
        estimator = ENTROPY_TOPK_EXACT if exact else ENTROPY_TOPK_LOWER_BOUND
    mask = rollouts.mask
    if not mask.any():
        return 0.0, estimator
    return float(token_signal(rollouts, kind)[mask].mean()), estimator
