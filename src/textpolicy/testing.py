"""Helpers for plugin authors' tests (and ours).

    from textpolicy.testing import make_rollouts, check_stage

    r = make_rollouts(rewards=[1, 0, 0, 0, 1, 1, 0, 0], group_size=4, length=6, seed=0)
    check_stage("my_stage", r)            # raises AssertionError naming a broken invariant

``check_stage`` runs a registered stage inside a one-stage (or episode + token) pipeline and
checks what every stage must satisfy: finite output of the right shape, 0 on padding, groups
kept apart (an episode stage's output for one group does not change when other groups change),
and completions kept apart (a token stage's output for one completion does not depend on the
others).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from textpolicy.pipeline import Pipeline, PipelineResult, build_pipeline
from textpolicy.plugins import Registry, get_registry
from textpolicy.rollouts import Rollouts
from textpolicy.vocab import TokenVocab

__all__ = ["check_stage", "make_rollouts", "word_vocab"]

WORDS = ("let", "me", "think", "wait", "check", "the", "key", "is", "so", "then", "answer",
         "x", "=", "2", "+", "3", ".", "verify", "notice", "that")


def word_vocab(words: Sequence[str] = WORDS) -> TokenVocab:
    """A word-per-token vocabulary (id 0 is padding ``<pad>``, then ``words``)."""
    return TokenVocab.from_words(["<pad>", *words])


def make_rollouts(
    *,
    rewards: Sequence[float],
    group_size: int | None = None,
    group_ids: Sequence[int] | None = None,
    length: int | Sequence[int] = 8,
    tokens: Sequence[Sequence[int]] | None = None,
    logprobs: Sequence[Sequence[float]] | None = None,
    correct: Sequence[bool] | None = None,
    vocab_size: int = len(WORDS) + 1,
    seed: int = 0,
) -> Rollouts:
    """Rollouts from a few lists, random where not given (seeded).

    ``group_ids`` default to consecutive blocks of ``group_size`` (default: one group);
    ``length`` is one length for all or one per completion; tokens are drawn from
    ``1..vocab_size-1`` and logprobs from ``-Exp(1)`` unless given.
    """
    rng = np.random.default_rng(seed)
    n = len(rewards)
    if group_ids is None:
        size = n if group_size is None else group_size
        group_ids = [i // max(size, 1) for i in range(n)]
    lengths = [int(length)] * n if isinstance(length, int) else [int(v) for v in length]
    if tokens is None:
        tokens = [rng.integers(1, vocab_size, size=L).tolist() for L in lengths]
    if logprobs is None:
        logprobs = [(-rng.exponential(1.0, size=len(t))).tolist() for t in tokens]
    return Rollouts.from_lists(group_ids=list(group_ids), rewards=list(rewards),
                               tokens=tokens, logprobs=logprobs, correct=correct)


def _run(pipe: Pipeline, rollouts: Rollouts, step: int, vocab: TokenVocab | None
         ) -> PipelineResult:
    return pipe(rollouts, step=step, vocab=vocab)


def check_stage(
    stage: str,
    rollouts: Rollouts | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    episode_stage: str = "maxrl",
    vocab: TokenVocab | None = None,
    step: int = 50,
    registry: Registry | None = None,
) -> PipelineResult:
    """Assert the invariants every stage must keep; return the pipeline result.

    A token stage runs as ``episode_stage > stage``; one that writes only the signal as
    ``episode_stage > stage > gtpo`` (GTPO reads the signal, so the stage's effect shows in
    the advantages); an episode stage alone. ``params`` are the stage's parameter overrides.
    Planning masks are detected with ``vocab`` (default: the word vocabulary of
    :func:`word_vocab`, matching :func:`make_rollouts` tokens).
    """
    reg = registry if registry is not None else get_registry()
    rec = reg.stages.get(stage)
    name = stage if rec.level == "episode" else f"{episode_stage}>{stage}"
    if rec.level == "token" and "advantages" not in rec.writes:
        name += ">gtpo"
    overrides = {stage: dict(params or {})}
    vocab = vocab if vocab is not None else word_vocab()
    if rollouts is None:
        rng = np.random.default_rng(0)
        lengths = [8, 5, 8, 3, 8, 8, 6, 8]
        toks = [rng.integers(4, len(WORDS) + 1, size=L).tolist() for L in lengths]
        for i in range(0, len(toks), 2):  # "let me think" in every other completion
            toks[i][1:4] = [1, 2, 3]
        rollouts = make_rollouts(rewards=[1, 0, 0, 1, 0, 0, 0, 1], group_size=4,
                                 tokens=toks)
    pipe = build_pipeline(name, overrides, registry=reg)
    result = _run(pipe, rollouts, step, vocab)
    n, t = rollouts.tokens.shape
    adv = result.token_advantages
    assert adv.shape == (n, t), f"{stage}: token advantages of shape {adv.shape}, not {(n, t)}"
    assert np.all(np.isfinite(adv)), f"{stage}: non-finite token advantages"
    assert np.all(adv[~rollouts.mask] == 0), f"{stage}: non-zero advantages on padding"

    # groups / completions kept apart: perturb everything except completion 0's group (episode)
    # or completion 0 (token) and check completion 0's advantages do not change
    keep = (rollouts.group_ids == rollouts.group_ids[0]) if rec.level == "episode" else (
        np.arange(n) == 0)
    if (~keep).any():
        rng = np.random.default_rng(1)
        rewards = rollouts.rewards.copy()
        if rec.level == "episode":
            rewards[~keep] = rng.random(int((~keep).sum()))
        logprobs = rollouts.logprobs.copy()
        logprobs[~keep] *= 1.5
        perturbed = Rollouts(group_ids=rollouts.group_ids, rewards=rewards,
                             correct=rollouts.correct, tokens=rollouts.tokens,
                             logprobs=logprobs, lengths=rollouts.lengths,
                             topk_logprobs=rollouts.topk_logprobs,
                             planning_mask=rollouts.planning_mask)
        other = _run(build_pipeline(name, overrides, registry=reg), perturbed, step, vocab)
        if rec.level == "token":
            # the episode advantages of completion 0 are the same, so the token stage may
            # only have used completion 0's own arrays
            same = np.allclose(other.episode_advantages[keep], result.episode_advantages[keep])
            if same:
                assert np.allclose(other.token_advantages[keep], adv[keep]), (
                    f"{stage}: completion 0's token advantages depend on other completions")
        else:
            assert np.allclose(other.token_advantages[keep], adv[keep]), (
                f"{stage}: a group's advantages depend on other groups")
    return result
