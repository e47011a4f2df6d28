"""Built-in advantage stages: grpo, maxrl (episode level); sepa, gtpo, hicra (token level).

Definitions follow docs/pipelines.md. Every function works on padded numpy arrays and keeps
groups apart (episode stages) or completions apart (token stages); none loops over tokens.
The array functions (``grpo_advantages``, ``gtpo_reweight``, ...) are public so that tests and
other plugins can reuse them; the stage functions adapt them to the pipeline's calling
convention.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs
import numpy as np
from numpy.typing import NDArray

from textpolicy.errors import RolloutError
from textpolicy.pipeline import (
    SIGNALS,
    StepContext,
    TokenCredit,
    choice_field,
    group_centred,
    group_index,
    int_field,
    number_field,
)
from textpolicy.plugins import hookimpl
from textpolicy.records import AdvantageStage
from textpolicy.rollouts import Rollouts

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

MAXRL_EPS = 1e-6
GTPO_MIN_MEAN = 1e-7
GRPO_STD_EPS = 1e-6


# --------------------------------------------------------------------------------------------
# Parameters


@attrs.frozen
class GrpoParams:
    """``scale``: ``none`` (A = r − mean, Dr. GRPO) or ``std`` (divide by the group's sample
    std + 1e-6, DeepSeekMath GRPO)."""

    scale: str = choice_field("none", ("none", "std"))


@attrs.frozen
class MaxrlParams:
    """MaxRL takes no parameters (eps = 1e-6, per group)."""


@attrs.frozen
class GtpoParams:
    """``beta``: strength of the signal weighting (0 = off). ``signal``: surprisal | entropy."""

    beta: float = number_field(0.1, ge=0.0)
    signal: str = choice_field("surprisal", SIGNALS)


@attrs.frozen
class HicraParams:
    """``alpha``: amplification of planning tokens, ``A ← A + α·|A|`` on them."""

    alpha: float = number_field(0.2, ge=0.0, le=1.0)


def _schedule_name(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{attribute.name} must be a scheduler name (linear, auto), "
                         f"got {value!r}")


@attrs.frozen
class SepaParams:
    """λ schedule of SEPA's pooling (see the ``linear`` and ``auto`` schedulers)."""

    ramp_steps: int = int_field(100, ge=0)
    delay_steps: int = int_field(10, ge=0)
    schedule: str = attrs.field(default="linear", validator=_schedule_name)
    correct_rate_gate: float = number_field(0.1, ge=0.0, le=1.0)
    auto_decay: float = number_field(0.99, ge=0.0, le=1.0)
    auto_warmup: int = int_field(50, ge=1)
    auto_threshold: float = number_field(0.2, gt=0.0)


# --------------------------------------------------------------------------------------------
# Array functions


def grpo_advantages(rewards: NDArray[Any], group_ids: NDArray[Any], *,
                    scale: str = "none") -> FloatArray:
    """``A_i = r_i − mean(r)`` per group; ``scale="std"`` divides by the group's sample std
    (ddof = 1; 0 for single-completion groups) plus 1e-6."""
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    if r.size == 0:
        return np.zeros(0, dtype=np.float64)
    inv, counts = group_index(np.asarray(group_ids))
    centred, _mean = group_centred(r, inv, counts)
    if scale == "none":
        return centred
    if scale != "std":
        raise ValueError(f"scale must be none or std, got {scale!r}")
    sq = np.bincount(inv, weights=centred * centred)
    std = np.sqrt(np.where(counts > 1, sq / np.maximum(counts - 1, 1), 0.0))
    return centred / (std[inv] + GRPO_STD_EPS)


def maxrl_advantages(rewards: NDArray[Any], group_ids: NDArray[Any], *,
                     eps: float = MAXRL_EPS) -> FloatArray:
    """``A_i = (r_i − m) / (m + eps)`` with ``m`` the group's mean reward; 0 when ``m <= eps``.

    Rewards must be >= 0 (MaxRL reweights by the inverse success rate)."""
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    if r.size == 0:
        return np.zeros(0, dtype=np.float64)
    if np.any(r < 0):
        i = int(np.flatnonzero(r < 0)[0])
        raise RolloutError(
            f"maxrl needs rewards >= 0 (it divides by the group's mean reward): completion {i} "
            f"has reward {r[i]}; use a 0/1 correctness reward or the grpo stage")
    inv, counts = group_index(np.asarray(group_ids))
    centred, mean = group_centred(r, inv, counts)
    return np.where(mean > eps, centred / (mean + eps), 0.0)


def _check_same_shape(*arrays: NDArray[Any], what: str) -> None:
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise RolloutError(f"{what}: arrays of different shapes {sorted(shapes)}")


def gtpo_reweight(advantages: NDArray[Any], signal: NDArray[Any], mask: NDArray[Any], *,
                  beta: float) -> FloatArray:
    """``A_t ← A_t · max(0, 1 + β·(h_t / mean_t(h) − 1))`` per completion (rows of ``[N, T]``).

    Completions with ``mean(h) < 1e-7`` (or ``β = 0``) keep their advantages."""
    adv = np.asarray(advantages, dtype=np.float64)
    h = np.asarray(signal, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    _check_same_shape(adv, h, m, what="gtpo")
    if beta == 0.0 or adv.size == 0:
        return np.where(m, adv, 0.0)
    counts = np.count_nonzero(m, axis=1)
    hm = h * m
    mean = hm.sum(axis=1) / np.maximum(counts, 1)
    active = mean >= GTPO_MIN_MEAN
    safe_mean = np.where(active, mean, 1.0)
    w = hm  # reuse the buffer: w = max(0, 1 + β(h/mean − 1)) · A · mask
    w /= safe_mean[:, None]
    w -= 1.0
    w *= beta
    w += 1.0
    np.maximum(w, 0.0, out=w)
    if not active.all():
        w[~active] = 1.0
    w *= adv
    w *= m
    return w


def sepa_pool(signal: NDArray[Any], mask: NDArray[Any], planning: NDArray[Any], *,
              lam: float) -> FloatArray:
    """Pool the execution-token signal toward its per-completion mean.

    ``h'_t = λ·mean_exec(h) + (1−λ)·h_t`` on execution tokens (real, non-planning), ``h_t`` on
    planning tokens; λ is clamped to [0, 1]. Preserves each completion's execution mean."""
    h = np.asarray(signal, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    p = np.asarray(planning, dtype=bool)
    _check_same_shape(h, m, p, what="sepa")
    lam = float(min(max(lam, 0.0), 1.0))
    if lam == 0.0 or h.size == 0:
        return np.where(m, h, 0.0)
    ex = m & ~p
    out = np.where(m, h, 0.0)
    mean = np.add.reduce(out, axis=1, where=ex) / np.maximum(np.count_nonzero(ex, axis=1), 1)
    # (1 − λ)·h + λ·mean on execution tokens, in place (no full-size temporaries)
    np.multiply(out, 1.0 - lam, out=out, where=ex)
    np.add(out, (lam * mean)[:, None], out=out, where=ex)
    return out


def hicra_amplify(advantages: NDArray[Any], planning: NDArray[Any], *,
                  alpha: float) -> FloatArray:
    """``A_t ← A_t + α·|A_t|`` on planning tokens (never flips a sign for α <= 1)."""
    adv = np.asarray(advantages, dtype=np.float64)
    p = np.asarray(planning, dtype=bool)
    _check_same_shape(adv, p, what="hicra")
    return adv + alpha * np.abs(adv) * p


# --------------------------------------------------------------------------------------------
# Stage adapters


def _grpo(rollouts: Rollouts, ctx: StepContext, params: GrpoParams) -> FloatArray:
    return grpo_advantages(rollouts.rewards, rollouts.group_ids, scale=params.scale)


def _maxrl(rollouts: Rollouts, ctx: StepContext, params: MaxrlParams) -> FloatArray:
    return maxrl_advantages(rollouts.rewards, rollouts.group_ids)


def _planning(ctx: StepContext, stage: str) -> BoolArray:
    if ctx.planning_mask is None:
        raise RolloutError(f"stage {stage!r} needs a planning mask but the step has none")
    return ctx.planning_mask


def _gtpo(credit: TokenCredit, rollouts: Rollouts, ctx: StepContext,
          params: GtpoParams) -> TokenCredit:
    adv = gtpo_reweight(credit.advantages, credit.signal, ctx.token_mask(rollouts),
                        beta=params.beta)
    return attrs.evolve(credit, advantages=adv)


def _sepa(credit: TokenCredit, rollouts: Rollouts, ctx: StepContext,
          params: SepaParams) -> TokenCredit:
    pooled = sepa_pool(credit.signal, ctx.token_mask(rollouts), _planning(ctx, "sepa"),
                       lam=ctx.sepa_lambda)
    return attrs.evolve(credit, signal=pooled)


def _hicra(credit: TokenCredit, rollouts: Rollouts, ctx: StepContext,
           params: HicraParams) -> TokenCredit:
    adv = hicra_amplify(credit.advantages, _planning(ctx, "hicra"), alpha=params.alpha)
    return attrs.evolve(credit, advantages=adv)


STAGES: tuple[AdvantageStage, ...] = (
    AdvantageStage(name="grpo", level="episode", fn=_grpo, params=GrpoParams,
                   doc="A = r - mean(r) per group (scale=std divides by the group std)"),
    AdvantageStage(name="maxrl", level="episode", fn=_maxrl, params=MaxrlParams,
                   doc="A = (r - m)/(m + 1e-6) per group, m = group mean reward (Tajwar 2026)"),
    AdvantageStage(name="sepa", level="token", fn=_sepa, params=SepaParams,
                   needs=("planning_mask", "sepa_lambda", "signal"), writes=("signal",),
                   doc="pool the execution-token signal toward its mean by a scheduled λ"),
    AdvantageStage(name="gtpo", level="token", fn=_gtpo, params=GtpoParams, needs=("signal",),
                   doc="weight token advantages by max(0, 1 + β(h/mean(h) − 1)) per completion"),
    AdvantageStage(name="hicra", level="token", fn=_hicra, params=HicraParams,
                   needs=("planning_mask",),
                   doc="amplify planning tokens: A + α|A| (Wang et al. 2025)"),
)


@hookimpl
def textpolicy_register_stages() -> Iterable[AdvantageStage]:
    return STAGES
