"""Rollouts: the padded numpy arrays every advantage stage works on.

A batch holds N completions (B prompts × G samples). Completion tokens are right-padded to the
longest completion T; ``mask[i, t]`` is True for the first ``lengths[i]`` positions. Group ids
say which completions share a prompt: stages never combine values across groups.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np
from numpy.typing import NDArray

from textpolicy.errors import RolloutError

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


@attrs.frozen(eq=False)
class Rollouts:
    """Completions of one training step as padded arrays.

    Attributes:
        group_ids: int64 ``[N]``; completions of one prompt share an id.
        rewards: float64 ``[N]``.
        correct: bool ``[N]`` (the task's correctness verdict, separate from the reward).
        tokens: int64 ``[N, T]`` completion token ids, 0 in padding.
        logprobs: float64 ``[N, T]`` sampler logprobs of the sampled tokens, 0 in padding.
        lengths: int64 ``[N]`` number of real tokens per completion.
        topk_logprobs: optional float64 ``[N, T, K]`` top-k logprobs per position
            (``-inf`` where fewer than K were returned), used by the ``entropy`` signal.
        planning_mask: optional bool ``[N, T]``; when absent a pipeline that needs it runs its
            planning detector.
    """

    group_ids: IntArray
    rewards: FloatArray
    correct: BoolArray
    tokens: IntArray
    logprobs: FloatArray
    lengths: IntArray
    topk_logprobs: FloatArray | None = None
    planning_mask: BoolArray | None = None

    def __attrs_post_init__(self) -> None:
        _validate(self)

    @property
    def num_completions(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def max_length(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def mask(self) -> BoolArray:
        """bool ``[N, T]``: True on real (non-padding) tokens."""
        return np.arange(self.tokens.shape[1])[None, :] < self.lengths[:, None]

    @property
    def num_groups(self) -> int:
        return int(np.unique(self.group_ids).size)

    def with_planning_mask(self, planning_mask: BoolArray) -> Rollouts:
        return attrs.evolve(self, planning_mask=np.asarray(planning_mask, dtype=bool))

    @classmethod
    def from_lists(
        cls,
        *,
        group_ids: Sequence[int],
        rewards: Sequence[float],
        tokens: Sequence[Sequence[int]],
        logprobs: Sequence[Sequence[float]],
        correct: Sequence[bool] | None = None,
        topk_logprobs: Sequence[Sequence[Sequence[float]]] | None = None,
        planning_mask: Sequence[Sequence[bool]] | None = None,
    ) -> Rollouts:
        """Build padded arrays from ragged per-completion lists (and validate them).

        ``correct`` defaults to ``reward > 0``.
        """
        n = len(rewards)
        for label, seq in (("group_ids", group_ids), ("tokens", tokens),
                           ("logprobs", logprobs)):
            if len(seq) != n:
                raise RolloutError(
                    f"{label} has {len(seq)} entries but rewards has {n}")
        lengths = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=n)
        for i, (t, lp) in enumerate(zip(tokens, logprobs, strict=True)):
            if len(lp) != len(t):
                raise RolloutError(
                    f"completion {i}: {len(t)} tokens but {len(lp)} logprobs")
        width = int(lengths.max()) if n else 0
        tok = np.zeros((n, width), dtype=np.int64)
        lps = np.zeros((n, width), dtype=np.float64)
        mask = np.arange(width)[None, :] < lengths[:, None]
        if n and width:
            tok[mask] = np.concatenate([np.asarray(t, dtype=np.int64) for t in tokens])
            lps[mask] = np.concatenate([np.asarray(lp, dtype=np.float64) for lp in logprobs])
        topk = None
        if topk_logprobs is not None:
            if len(topk_logprobs) != n:
                raise RolloutError(
                    f"topk_logprobs has {len(topk_logprobs)} entries but rewards has {n}")
            k = max((len(pos) for seq in topk_logprobs for pos in seq), default=0)
            topk = np.full((n, width, k), -np.inf, dtype=np.float64)
            for i, seq in enumerate(topk_logprobs):
                if len(seq) != lengths[i]:
                    raise RolloutError(
                        f"completion {i}: {lengths[i]} tokens but {len(seq)} top-k rows")
                for j, pos in enumerate(seq):
                    topk[i, j, : len(pos)] = pos
        plan = None
        if planning_mask is not None:
            if len(planning_mask) != n:
                raise RolloutError(
                    f"planning_mask has {len(planning_mask)} entries but rewards has {n}")
            plan = np.zeros((n, width), dtype=bool)
            for i, row in enumerate(planning_mask):
                if len(row) != lengths[i]:
                    raise RolloutError(
                        f"completion {i}: {lengths[i]} tokens but planning mask of {len(row)}")
            if n and width:
                plan[mask] = np.concatenate(
                    [np.asarray(r, dtype=bool) for r in planning_mask])
        rew = np.asarray(rewards, dtype=np.float64).reshape(n)
        cor = (rew > 0) if correct is None else np.asarray(correct, dtype=bool).reshape(n)
        return cls(
            group_ids=np.asarray(group_ids, dtype=np.int64).reshape(n),
            rewards=rew,
            correct=cor,
            tokens=tok,
            logprobs=lps,
            lengths=lengths,
            topk_logprobs=topk,
            planning_mask=plan,
        )


def _validate(r: Rollouts) -> None:
    n = r.rewards.shape[0] if r.rewards.ndim == 1 else -1
    if n < 0:
        raise RolloutError(f"rewards must be 1-D, got shape {r.rewards.shape}")
    for label, arr in (("group_ids", r.group_ids), ("correct", r.correct),
                       ("lengths", r.lengths)):
        if arr.shape != (n,):
            raise RolloutError(f"{label} has shape {arr.shape}, expected ({n},)")
    if r.tokens.ndim != 2 or r.tokens.shape[0] != n:
        raise RolloutError(f"tokens has shape {r.tokens.shape}, expected ({n}, T)")
    if r.logprobs.shape != r.tokens.shape:
        raise RolloutError(
            f"logprobs has shape {r.logprobs.shape}, expected {r.tokens.shape}")
    if n and (r.lengths.min() < 0 or r.lengths.max() > r.tokens.shape[1]):
        raise RolloutError(
            f"lengths must lie in [0, {r.tokens.shape[1]}], got {r.lengths.min()}.."
            f"{r.lengths.max()}")
    if not np.all(np.isfinite(r.rewards)):
        bad = int(np.flatnonzero(~np.isfinite(r.rewards))[0])
        raise RolloutError(f"reward of completion {bad} is {r.rewards[bad]}: must be finite")
    mask = np.arange(r.tokens.shape[1])[None, :] < r.lengths[:, None]
    bad_lp = mask & ~np.isfinite(r.logprobs)
    if bad_lp.any():
        i, t = (int(v) for v in np.argwhere(bad_lp)[0])
        raise RolloutError(
            f"logprob of completion {i} token {t} is {r.logprobs[i, t]}: must be finite")
    if np.any(r.logprobs[mask] > 1e-6):
        i, t = (int(v) for v in np.argwhere(mask & (r.logprobs > 1e-6))[0])
        raise RolloutError(
            f"logprob of completion {i} token {t} is {r.logprobs[i, t]}: must be <= 0")
    if r.topk_logprobs is not None and r.topk_logprobs.shape[:2] != r.tokens.shape:
        raise RolloutError(
            f"topk_logprobs has shape {r.topk_logprobs.shape}, expected {r.tokens.shape} + (K,)")
    if r.planning_mask is not None and r.planning_mask.shape != r.tokens.shape:
        raise RolloutError(
            f"planning_mask has shape {r.planning_mask.shape}, expected {r.tokens.shape}")
