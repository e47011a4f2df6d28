"""From run directories to the numbers the tests use: arm pairing and endpoints.

* Pairing: runs are paired by the ``seed`` in each run's config.json; when no run records a
  seed, by position in the two lists. Different seed sets (or run counts) are an error unless
  ``paired=False`` is asked for (then Welch's t on per-run values is the primary test).
* Primary endpoint, fixed by the plan each run's config.json records (``max_steps``,
  ``eval_every``, ``eval_samples``): held-out pass@1 (mean over samples, then over prompts) at
  the planned final eval step (``max_steps``) over the full test set (every prompt any run
  evaluated, each with ``eval_samples`` samples). A run that cannot be measured there makes the
  analysis stop (``IncompleteRunsError``: one line per run — what is missing, how to resume)
  unless ``partial=True``, which drops those runs (with their seed partners) and says so. A plan
  without held-out eval (``eval_every = 0``) has training correctness over the planned steps as
  its endpoint — on-policy, descriptive, labelled so. Runs without a recorded plan (hand-made
  directories, the seed document's layout) use the last eval step common to every run, with a
  warning that the endpoint was not pre-registered.
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
from textpolicy.errors import AnalysisError, IncompleteRunsError
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


@attrs.frozen
class RunPlan:
    """What a run's config.json says it was planned to do."""

    max_steps: int
    eval_every: int
    eval_samples: int


def run_plan(run: RunData) -> RunPlan | None:
    """The plan recorded in ``config.json``'s ``config`` (None when it records none)."""
    cfg = run.config.get("config")
    if not isinstance(cfg, Mapping) or "max_steps" not in cfg:
        return None
    try:
        return RunPlan(int(cfg["max_steps"]), int(cfg.get("eval_every") or 0),
                       int(cfg.get("eval_samples") or 1))
    except (TypeError, ValueError):
        raise AnalysisError(f"{run.path / 'config.json'}: max_steps/eval_every/eval_samples "
                            f"must be integers, got {cfg.get('max_steps')!r}/"
                            f"{cfg.get('eval_every')!r}/{cfg.get('eval_samples')!r}") from None


@attrs.frozen
class EndpointChoice:
    """The endpoint, the runs it leaves out (``partial``) and notes for the report."""

    endpoint: Endpoint
    dropped: tuple[tuple[RunData, str], ...] = ()  # (run, what is missing)
    notes: tuple[str, ...] = ()


def _one_of(values: Mapping[RunData, int], what: str) -> int:
    distinct = sorted(set(values.values()))
    if len(distinct) > 1:
        by = {v: [str(r.path) for r, x in values.items() if x == v][:2] for v in distinct}
        raise AnalysisError(f"the runs were planned with different {what} "
                            + "; ".join(f"{v} in {', '.join(p)}" for v, p in by.items())
                            + "; analyse runs of one plan together")
    return distinct[0]


def _eval_problem(run: RunData, step: int, prompts: Sequence[str], k: int,
                  trained: int | None) -> str | None:
    ev = run.eval
    reached = f"; training reached step {trained} of {step}" if trained is not None else ""
    if ev is None:
        return f"no held-out eval (eval.jsonl missing or empty; planned at step {step}){reached}"
    if step not in set(int(x) for x in ev.steps):
        last = int(ev.steps[-1])
        return (f"no eval at the planned final step {step} (last eval at step {last})"
                + reached)
    row = int(np.searchsorted(ev.steps, step))
    index = {p: i for i, p in enumerate(ev.prompt_ids)}
    have = np.array([ev.samples[row, index[p]] if p in index else 0 for p in prompts])
    short = int(np.sum(have < k))
    if short:
        full = len(prompts) - short
        return (f"the eval at step {step} covers {full} of the {len(prompts)} test prompts "
                f"with the planned {k} samples (partial final eval)")
    return None


def _trained_steps(run: RunData) -> int | None:
    steps = _train_steps(run)
    return int(steps.max()) + 1 if steps is not None and len(steps) else None


def planned_endpoint(runs: Sequence[RunData], *, partial: bool = False,
                     resume: Mapping[RunData, str] | None = None) -> EndpointChoice:
    """The plan's endpoint and whether every run can be measured there (module docstring).

    ``resume`` maps runs to the command that resumes them (the manifest's); the error lines
    use it. With ``partial=True`` incomplete runs are returned in ``dropped`` instead.
    """
    plans = {r: run_plan(r) for r in runs}
    notes: tuple[str, ...] = ()
    if all(p is None for p in plans.values()):
        inferred = _inferred_plan(runs)
        plans = dict.fromkeys(runs, inferred)
        what = (f"the latest eval step any run reached ({inferred.max_steps}) with the most "
                f"samples any prompt has there ({inferred.eval_samples})"
                if inferred.eval_every else
                f"training correctness over the {inferred.max_steps} steps the longest run "
                "logged")
        notes = ("no run records its plan (config.json has no config.max_steps): the "
                 f"endpoint is {what} — inferred from the files, not pre-registered",)
    elif any(p is None for p in plans.values()):
        missing = [str(r.path) for r, p in plans.items() if p is None]
        raise AnalysisError(f"{missing[0]}/config.json records no plan (config.max_steps) while "
                            "other runs do; analyse runs of one plan together")
    known = {r: p for r, p in plans.items() if p is not None}
    final = _one_of({r: p.max_steps for r, p in known.items()}, "max_steps")
    every = _one_of({r: int(p.eval_every > 0) for r, p in known.items()},
                    "held-out eval settings (eval_every 0 vs > 0)")
    problems: dict[RunData, str] = {}
    if every:
        k = _one_of({r: p.eval_samples for r, p in known.items()}, "eval_samples")
        universe: dict[str, None] = {}
        for r in runs:
            if r.eval is not None:
                universe.update(dict.fromkeys(r.eval.prompt_ids))
        prompts = tuple(sorted(universe))
        for r in runs:
            why = _eval_problem(r, final, prompts, k, _trained_steps(r))
            if why is not None:
                problems[r] = why
    else:
        for r in runs:
            logged = _train_steps(r)
            n = 0 if logged is None else int(np.isin(np.arange(final), logged).sum())
            if n < final:
                problems[r] = (f"training correctness logged for {n} of the planned {final} "
                               "steps")
    if problems and not partial:
        hints = resume or {}
        lines = [f"  {r.path}: {why}; resume: "
                 + hints.get(r, "re-run its tp train command (same flags and --log-dir; it "
                                "continues from its last checkpoint)")
                 for r, why in problems.items()]
        what = (f"held-out pass@1 at the planned final eval step {final}" if every else
                f"training correctness over the planned {final} steps")
        raise IncompleteRunsError(
            f"the planned endpoint ({what}) cannot be measured in {len(problems)} of "
            f"{len(runs)} runs; no recommendation (tp analyze --partial analyses the complete "
            "runs only):\n" + "\n".join(lines))
    kept = [r for r in runs if r not in problems]
    if not kept:
        raise AnalysisError("no run can be measured at the planned endpoint; nothing to "
                            "analyse even with --partial")
    dropped = tuple((r, why) for r, why in problems.items())
    if every:
        common = set(range(0, final + 1, max(1, min(p.eval_every for p in known.values()))))
        for r in kept:
            assert r.eval is not None
            common &= set(int(x) for x in r.eval.steps)
        common.add(final)
        steps = tuple(sorted(common))
        kmin = min(int(np.min(r.eval.samples[int(np.searchsorted(r.eval.steps, final)),
                                             _columns(r.eval.prompt_ids, prompts)]))
                   for r in kept if r.eval is not None)
        ep = Endpoint(
            kind="heldout", label=f"heldout_pass@1@step{final}",
            description=(f"held-out pass@1 at the planned final eval step {final}, "
                         f"{len(prompts)} test prompts"),
            step=final, common_steps=steps, prompt_ids=prompts, samples_min=kmin,
            pass_k=kmin if kmin >= 2 else None)
        return EndpointChoice(ep, dropped=dropped, notes=notes)
    steps = tuple(range(final))
    ep = Endpoint(
        kind="training", label="train_correct_rate",
        description=(f"on-policy training correctness over the planned {final} steps (the "
                     "plan has no held-out eval; descriptive: training samples are not "
                     "held-out data)"),
        step=steps[-1], common_steps=steps)
    return EndpointChoice(ep, dropped=dropped, notes=notes)


def choose_endpoint(runs: Sequence[RunData]) -> Endpoint:
    """The planned endpoint of ``runs`` (``planned_endpoint``; incomplete runs raise)."""
    return planned_endpoint(runs).endpoint


def _inferred_plan(runs: Sequence[RunData]) -> RunPlan:
    """For runs without a recorded plan: the latest eval step any run reached and the most
    samples per prompt there (or, without any eval, the most training steps any run logged)."""
    evals = [r.eval for r in runs if r.eval is not None]
    if evals:
        final = max(int(ev.steps[-1]) for ev in evals)
        k = max(int(ev.samples[-1].max()) for ev in evals if int(ev.steps[-1]) == final)
        return RunPlan(final, 1, k)
    longest = 0
    for r in runs:
        steps = _train_steps(r)
        if steps is None:
            raise AnalysisError(f"{r.path}: no eval.jsonl and no training correctness "
                                "(emergence/steps.jsonl or metrics.jsonl correct_rate)")
        longest = max(longest, int(steps.max()) + 1 if len(steps) else 0)
    return RunPlan(longest, 0, 1)


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
