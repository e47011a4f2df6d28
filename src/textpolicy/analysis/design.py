"""From run directories to the numbers the tests use: arm pairing and endpoints.

* Pairing: runs are paired by the ``seed`` in each run's config.json; when no run records a
  seed, by position in the two lists. Different seed sets (or run counts) are an error unless
  ``paired=False`` is asked for (then Welch's t on per-run values is the primary test).
* Primary endpoint: held-out pass@1 (mean over samples, then over prompts) at the last eval
  step common to every run of the analysis, over the prompts every run evaluated there.
  Without eval.jsonl: training correctness over the steps common to every run — on-policy,
  descriptive, labelled so.
* Secondary: AUC of the held-out accuracy curve (mean accuracy over the common eval steps,
  trapezoid rule), pass@k (Chen et al. 2021 unbiased estimator, k = the fewest samples any
  prompt has), training correctness (descriptive).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from textpolicy.analysis.records import AnalysisInput, AnalysisWarning, FloatArray
from textpolicy.analysis.rundata import RunData
from textpolicy.errors import AnalysisError
from textpolicy.tasks.evaluation import pass_at_k_many


def pass_at_k(correct: np.ndarray, samples: np.ndarray, k: int) -> FloatArray:
    """Unbiased pass@k per problem: 1 − C(n−c, k)/C(n, k) (1 when n − c < k); needs n ≥ k."""
    n = np.rint(np.asarray(samples, dtype=np.float64)).astype(np.int64)
    if k < 1 or (n < k).any():
        raise AnalysisError(f"pass@{k} needs at least {k} samples per problem")
    c = np.rint(np.asarray(correct, dtype=np.float64)).astype(np.int64)
    return pass_at_k_many(n, c, k)


@attrs.frozen
class Endpoint:
    """The endpoint shared by every run of one analysis."""

    kind: str  # "heldout" | "training"
    label: str
    description: str
    step: int | None  # eval step of the primary endpoint (held-out) / last common step
    common_steps: tuple[int, ...]
    prompt_ids: tuple[str, ...] = ()
    samples_min: int = 0
    pass_k: int | None = None


@attrs.frozen(eq=False)
class RunValues:
    """Per-run numbers on the shared endpoint."""

    run: RunData
    value: float  # primary endpoint (fraction)
    units: FloatArray  # per-prompt (or per-step) accuracies, mean == value
    auc: float | None
    pass_k: float | None
    train_rate: float | None  # pooled training correctness over all logged steps
    curve_steps: np.ndarray
    curve: FloatArray  # held-out accuracy per eval step (or training rate per step)
    counts: tuple[int, int] | None  # pooled (correct, total) training generations
    eval_counts: tuple[int, int] | None  # pooled (correct, samples) at the endpoint step


def choose_endpoint(runs: Sequence[RunData]) -> Endpoint:
    with_eval = [r for r in runs if r.eval is not None]
    if with_eval and len(with_eval) < len(runs):
        missing = [str(r.path) for r in runs if r.eval is None]
        warnings.warn(
            f"eval.jsonl is missing or empty in {len(missing)} of {len(runs)} runs "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); the primary "
            "endpoint falls back to on-policy training correctness", AnalysisWarning,
            stacklevel=3)
    if with_eval and len(with_eval) == len(runs):
        common = set(int(s) for s in runs[0].eval.steps)  # type: ignore[union-attr]
        for r in runs[1:]:
            common &= set(int(s) for s in r.eval.steps)  # type: ignore[union-attr]
        if not common:
            raise AnalysisError("the runs share no eval step (eval.jsonl steps differ); "
                                "cannot compare held-out accuracy")
        steps = tuple(sorted(common))
        final = steps[-1]
        prompts: set[str] | None = None
        kmin = None
        for r in runs:
            ev = r.eval
            assert ev is not None
            row = int(np.searchsorted(ev.steps, final))
            have = {pid for pid, n in zip(ev.prompt_ids, ev.samples[row], strict=True) if n > 0}
            prompts = have if prompts is None else prompts & have
        if not prompts:
            raise AnalysisError(f"no eval prompt is shared by every run at step {final}")
        ordered = tuple(sorted(prompts))
        for r in runs:
            ev = r.eval
            assert ev is not None
            row = int(np.searchsorted(ev.steps, final))
            cols = _columns(ev.prompt_ids, ordered)
            n_min = int(ev.samples[row, cols].min())
            kmin = n_min if kmin is None else min(kmin, n_min)
        assert kmin is not None
        return Endpoint(
            kind="heldout", label=f"heldout_pass@1@step{final}",
            description=(f"held-out pass@1 at eval step {final} (the last eval step common to "
                         f"all runs), {len(ordered)} prompts"),
            step=final, common_steps=steps, prompt_ids=ordered, samples_min=kmin,
            pass_k=kmin if kmin >= 2 else None)
    # training correctness
    common_t: set[int] | None = None
    for r in runs:
        steps_r = _train_steps(r)
        if steps_r is None:
            raise AnalysisError(f"{r.path}: no eval.jsonl and no training correctness "
                                "(emergence/steps.jsonl or metrics.jsonl correct_rate)")
        common_t = set(steps_r.tolist()) if common_t is None else common_t & set(steps_r.tolist())
    if not common_t:
        raise AnalysisError("the runs share no training step; cannot compare them")
    steps = tuple(sorted(common_t))
    return Endpoint(
        kind="training", label="train_correct_rate",
        description=(f"on-policy training correctness over the {len(steps)} steps common to "
                     "all runs (descriptive: training samples are not held-out data)"),
        step=steps[-1], common_steps=steps)


def _train_steps(run: RunData) -> np.ndarray | None:
    if run.step_counts is not None:
        return run.step_counts["step"]
    m = run.metrics
    if "correct_rate" in m:
        return m["step"]
    return None


def _train_rates(run: RunData) -> tuple[np.ndarray, FloatArray]:
    if run.step_counts is not None:
        sc = run.step_counts
        return sc["step"], sc["correct"] / sc["total"]
    m = run.metrics
    rate = m["correct_rate"]
    if not np.isfinite(rate).all():
        raise AnalysisError(f"{run.path / 'metrics.jsonl'}: correct_rate has NaN/inf values")
    return m["step"], rate


def _columns(prompt_ids: Sequence[str], wanted: Sequence[str]) -> np.ndarray:
    index = {p: i for i, p in enumerate(prompt_ids)}
    return np.fromiter((index[p] for p in wanted), dtype=np.int64, count=len(wanted))


def run_values(run: RunData, ep: Endpoint) -> RunValues:
    counts = None
    train_rate = None
    if run.step_counts is not None:
        sc = run.step_counts
        counts = (int(sc["correct"].sum()), int(sc["total"].sum()))
        train_rate = counts[0] / counts[1]
    elif "correct_rate" in run.metrics:
        train_rate = float(np.mean(_train_rates(run)[1]))
    if ep.kind == "heldout":
        ev = run.eval
        assert ev is not None
        cols = _columns(ev.prompt_ids, ep.prompt_ids)
        rows = np.searchsorted(ev.steps, np.asarray(ep.common_steps))
        c = ev.correct[np.ix_(rows, cols)]
        n = ev.samples[np.ix_(rows, cols)]
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = c / n
        curve = np.nanmean(np.where(n > 0, acc, np.nan), axis=1)
        units = np.asarray(acc[-1], dtype=np.float64)
        steps_arr = np.asarray(ep.common_steps, dtype=np.float64)
        if len(steps_arr) > 1:
            auc = float(np.trapezoid(curve, steps_arr) / (steps_arr[-1] - steps_arr[0]))
        else:
            auc = float(curve[0])
        pk = None
        if ep.pass_k is not None:
            pk = float(pass_at_k(c[-1], n[-1], ep.pass_k).mean())
        return RunValues(run=run, value=float(units.mean()), units=units, auc=auc, pass_k=pk,
                         train_rate=train_rate, curve_steps=np.asarray(ep.common_steps),
                         curve=np.asarray(curve, dtype=np.float64), counts=counts,
                         eval_counts=(int(c[-1].sum()), int(n[-1].sum())))
    steps_r, rates = _train_rates(run)
    sel = np.isin(steps_r, np.asarray(ep.common_steps))
    units = np.asarray(rates[sel], dtype=np.float64)
    return RunValues(run=run, value=float(units.mean()), units=units, auc=None, pass_k=None,
                     train_rate=train_rate, curve_steps=steps_r[sel], curve=units,
                     counts=counts, eval_counts=None)


@attrs.frozen(eq=False)
class Pairing:
    base: tuple[RunData, ...]
    cand: tuple[RunData, ...]
    seeds: tuple[int | None, ...]
    paired: bool
    how: str  # "seed" | "position" | "unpaired"


def pair_runs(base: Sequence[RunData], cand: Sequence[RunData], *, baseline: str,
              candidate: str, paired: bool | None = None) -> Pairing:
    """Pair runs by recorded seed (or position); see the module docstring."""
    if paired is False:
        return Pairing(tuple(base), tuple(cand), (), False, "unpaired")
    bseeds = [r.seed for r in base]
    cseeds = [r.seed for r in cand]
    all_seeds = bseeds + cseeds
    if all(s is not None for s in all_seeds):
        for name, seeds in ((baseline, bseeds), (candidate, cseeds)):
            dup = sorted({s for s in seeds if seeds.count(s) > 1})  # type: ignore[type-var]
            if dup:
                raise AnalysisError(
                    f"arm {name!r} has several runs with seed {dup[0]}; seeds must be unique "
                    "within an arm (or analyse unpaired)")
        if set(bseeds) != set(cseeds):
            only_b = sorted(set(bseeds) - set(cseeds))  # type: ignore[type-var]
            only_c = sorted(set(cseeds) - set(bseeds))  # type: ignore[type-var]
            raise AnalysisError(
                f"arms {baseline!r} and {candidate!r} have different seeds (only in "
                f"{baseline}: {only_b}, only in {candidate}: {only_c}); pairing needs the same "
                "seeds in both arms — pass --unpaired (paired=False) to compare with Welch's t")
        order = {s: i for i, s in enumerate(sorted(bseeds))}  # type: ignore[type-var]
        b = sorted(base, key=lambda r: order[r.seed])
        c = sorted(cand, key=lambda r: order[r.seed])
        return Pairing(tuple(b), tuple(c), tuple(r.seed for r in b), True, "seed")
    if any(s is not None for s in all_seeds):
        raise AnalysisError(
            f"some runs of {baseline!r}/{candidate!r} record a seed in config.json and some "
            "do not; cannot pair them reliably")
    if len(base) != len(cand):
        raise AnalysisError(
            f"arm {baseline!r} has {len(base)} runs and {candidate!r} has {len(cand)}; without "
            "recorded seeds runs are paired by position and the counts must match — pass "
            "--unpaired (paired=False) to compare with Welch's t")
    return Pairing(tuple(base), tuple(cand), (None,) * len(base), True, "position")


def build_input(pairing: Pairing, values: Mapping[RunData, RunValues], ep: Endpoint, *,
                baseline: str, candidate: str, alpha: float, num_resamples: int,
                seed: int) -> AnalysisInput:
    bv = [values[r] for r in pairing.base]
    cv = [values[r] for r in pairing.cand]
    gen_counts = None
    bcounts = [v.counts for v in bv if v.counts is not None]
    ccounts = [v.counts for v in cv if v.counts is not None]
    if len(bcounts) == len(bv) and len(ccounts) == len(cv):
        gen_counts = (sum(x[0] for x in bcounts), sum(x[1] for x in bcounts),
                      sum(x[0] for x in ccounts), sum(x[1] for x in ccounts))
    binary = all(v.run.rewards_binary for v in bv + cv)
    base_rewards = cand_rewards = None
    if not binary:
        try:
            base_rewards = np.concatenate([v.run.rewards() for v in bv])
            cand_rewards = np.concatenate([v.run.rewards() for v in cv])
        except AnalysisError as exc:
            warnings.warn(f"reward permutation test skipped: {exc}", AnalysisWarning,
                          stacklevel=2)
    return AnalysisInput(
        baseline=baseline, candidate=candidate, endpoint=ep.label,
        endpoint_kind=ep.kind,  # type: ignore[arg-type]
        unit_kind="prompt" if ep.kind == "heldout" else "step",
        paired=pairing.paired, seeds=pairing.seeds,
        base_values=np.array([v.value for v in bv]), cand_values=np.array([v.value for v in cv]),
        base_units=np.stack([v.units for v in bv]), cand_units=np.stack([v.units for v in cv]),
        gen_counts=gen_counts, base_rewards=base_rewards, cand_rewards=cand_rewards,
        rewards_binary=binary, alpha=alpha, num_resamples=num_resamples, seed=seed)


def secondary_arrays(pairing: Pairing, values: Mapping[RunData, RunValues],
                     attr: str) -> tuple[FloatArray, FloatArray] | None:
    """Per-run secondary endpoint arrays (``auc``, ``pass_k``, ``train_rate``) or None."""
    b = [getattr(values[r], attr) for r in pairing.base]
    c = [getattr(values[r], attr) for r in pairing.cand]
    if any(x is None for x in b + c):
        return None
    return np.asarray(b, dtype=np.float64), np.asarray(c, dtype=np.float64)


def describe_runs(runs: Sequence[RunData], values: Mapping[RunData, RunValues]) -> list[
        dict[str, Any]]:
    out = []
    for r in runs:
        v = values[r]
        out.append({"path": str(r.path), "seed": r.seed, "endpoint": v.value, "auc": v.auc,
                    "pass_k": v.pass_k, "train_correct_rate": v.train_rate,
                    "train_counts": list(v.counts) if v.counts else None})
    return out
