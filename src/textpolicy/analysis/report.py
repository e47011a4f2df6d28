"""Significance evaluation: arms → endpoint → tests → Holm → recommendation → power.

The recommendation is decided by the primary test alone (its Holm-adjusted p across the
candidate arms); the primary's CI comes from the same procedure at the Holm step-down level
(``methods.holm_ci_alphas``: α/(m − rank + 1) while the step-down rejects, frozen at the first
kept hypothesis; plain 1 − α with one candidate), so a CI excludes 0 exactly when the
recommendation is significant.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from textpolicy.analysis import design, methods, power
from textpolicy.analysis.records import (
    MIN_SEED_PAIRS,
    AnalysisInput,
    AnalysisWarning,
    TestResult,
    _jsonable,
)
from textpolicy.analysis.rundata import RunData, load_runs
from textpolicy.errors import AnalysisError, ConfigError

PathLike = str | os.PathLike[str]
ESTIMANDS: dict[str, str] = {
    "seeds_prompts": (
        "Δ = expected held-out pass@1 of the candidate minus the baseline at the planned "
        "endpoint, averaged over training seeds and over the population of eval prompts the "
        "test set samples."),
    "paired_seeds": (
        "Δ = expected endpoint accuracy of the candidate minus the baseline, averaged over "
        "training seeds, on this eval set (its prompts or training steps held fixed)."),
    "welch_runs": (
        "Δ = expected endpoint accuracy of the candidate minus the baseline, averaged over "
        "training runs (unpaired), on this eval set."),
    "prompt_paired": (
        "Δ = endpoint accuracy of these two runs' difference over the eval prompts: "
        "conditional on these runs, not a claim over training seeds."),
}
GENERATION_LEVEL_NOTE = (
    "Generation-level tests (fisher, bootstrap, permutation) pool every training generation as "
    "if independent; under run-to-run variance their false-positive rate is far above alpha. "
    "They are reported for comparison with the seed document only and never decide.")


@attrs.frozen(eq=False)
class Comparison:
    """One candidate arm against the baseline."""

    baseline: str
    candidate: str
    pairing: str
    data: AnalysisInput
    primary: TestResult
    p_raw: float | None
    p_adjusted: float | None
    ci_level: float
    recommendation: str
    tests: tuple[TestResult, ...]
    effect_sizes: dict[str, Any]
    secondary: tuple[dict[str, Any], ...]
    power: dict[str, Any]
    reason: str | None = None  # why the recommendation is insufficient_seeds

    @property
    def estimand(self) -> str:
        """The primary test's estimand in one sentence."""
        return ESTIMANDS[self.primary.name]

    def test(self, name: str) -> TestResult | None:
        return next((t for t in self.tests if t.name == name), None)

    @property
    def scope(self) -> str:
        """What the recommendation generalises over: ``"seeds"`` (a seed-level primary test)
        or ``"these_runs"`` (prompt-level primary: one run in an arm; not a claim over seeds)."""
        return "these_runs" if self.primary.name == "prompt_paired" else "seeds"

    def primary_dict(self, endpoint: str) -> dict[str, Any]:
        flip = self.primary if self.primary.name == "paired_seeds" else self.test(
            "paired_seeds")
        return {
            "scope": self.scope, "estimand": self.estimand,
            "test": self.primary.name, "endpoint": endpoint, "delta": self.primary.delta,
            "ci_low": self.primary.ci_low, "ci_high": self.primary.ci_high,
            "p_value": self.p_adjusted, "n_pairs": self.data.n_pairs,
            "unit": self.primary.unit, "p_value_unadjusted": self.p_raw,
            "ci_level": self.ci_level, "multiplicity": "holm",
            "p_value_holm_adjusted": True, "min_seed_pairs": MIN_SEED_PAIRS,
            "sign_flip_p": flip.extra.get("sign_flip_p") if flip is not None else None,
            "sign_flip_can_reach_alpha": (flip.extra.get("sign_flip_can_reach_alpha")
                                          if flip is not None else None),
            "notes": self.primary.notes,
        }

    def to_dict(self, endpoint: str) -> dict[str, Any]:
        return {
            "baseline": self.baseline, "candidate": self.candidate, "pairing": self.pairing,
            "recommendation": self.recommendation, "recommendation_reason": self.reason,
            "primary": self.primary_dict(endpoint),
            "tests": [t.to_dict() for t in self.tests], "effect_sizes": self.effect_sizes,
            "secondary_endpoints": list(self.secondary), "power": self.power,
        }


@attrs.frozen(eq=False)
class SignificanceReport:
    """What ``tp analyze`` reports; ``to_dict()`` is the significance.json contract."""

    alpha: float
    num_resamples: int
    seed: int
    baseline: str
    endpoint: design.Endpoint
    comparisons: tuple[Comparison, ...]
    arms: tuple[dict[str, Any], ...]
    warnings: tuple[str, ...]
    runs: Mapping[str, tuple[RunData, ...]]
    values: Mapping[RunData, design.RunValues]
    partial: bool = False
    dropped: tuple[str, ...] = ()  # "<run>: what is missing" for each run left out
    provenance: dict[str, Any] = attrs.field(factory=dict)
    #: where the LRs came from and any overlap with this campaign (analysis.provenance)
    lr_selection: Mapping[str, Any] | None = None
    #: secondary summaries: arm CIs, IQM, probability of improvement, per subject, margin
    #: tests (analysis.summaries)
    summaries: Mapping[str, Any] | None = None

    @property
    def headline(self) -> Comparison:
        """The comparison the top-level fields describe: the smallest adjusted primary p."""
        def key(c: Comparison) -> tuple[float, int]:
            p = c.p_adjusted
            return (p if p is not None else math.inf, self.comparisons.index(c))
        return min(self.comparisons, key=key)

    @property
    def recommendation(self) -> str:
        return self.headline.recommendation

    @property
    def primary(self) -> dict[str, Any]:
        return self.headline.primary_dict(self.endpoint.label)

    def to_dict(self) -> dict[str, Any]:
        head = self.headline
        return _jsonable({
            "alpha": self.alpha,
            "recommendation": head.recommendation,
            "recommendation_partial": self.partial,
            "dropped_runs": list(self.dropped),
            "recommendation_reason": head.reason,
            "recommendation_scope": head.scope,
            "estimand": head.estimand,
            "baseline": self.baseline,
            "candidate": head.candidate,
            "primary": head.primary_dict(self.endpoint.label),
            "tests": [t.to_dict() for t in head.tests],
            "power": head.power,
            "arms": list(self.arms),
            "effect_sizes": head.effect_sizes,
            "secondary_endpoints": list(head.secondary),
            "endpoint": {"label": self.endpoint.label, "kind": self.endpoint.kind,
                         "description": self.endpoint.description, "step": self.endpoint.step,
                         "eval_steps": list(self.endpoint.common_steps)
                         if self.endpoint.kind == "heldout" else None,
                         "n_prompts": len(self.endpoint.prompt_ids) or None,
                         "samples_per_prompt": self.endpoint.samples_min or None,
                         "pass_k": self.endpoint.pass_k},
            "comparisons": [c.to_dict(self.endpoint.label) for c in self.comparisons],
            "multiplicity": {"method": "holm", "family_size": len(self.comparisons)},
            "num_resamples": self.num_resamples,
            "seed": self.seed,
            "warnings": list(self.warnings),
            "provenance": self.provenance,
            "lr_selection": self.lr_selection,
            "summaries": self.summaries,
            "notes": [GENERATION_LEVEL_NOTE],
        })


def _check_settings(alpha: float, num_resamples: int, seed: int, mde: float | None) -> None:
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must lie in (0, 1), got {alpha}")
    if num_resamples < 100:
        raise ConfigError(f"resamples must be >= 100, got {num_resamples}")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    if mde is not None and not 0 < mde < 100:
        raise ConfigError(f"mde must be a positive number of percentage points, got {mde}")


def evaluate_significance(
    arms: Mapping[str, Sequence[PathLike]] | None = None, *, baseline: str | None = None,
    baseline_run_dirs: Sequence[PathLike] | None = None,
    candidate_run_dirs: Sequence[PathLike] | None = None,
    alpha: float = 0.05, num_resamples: int = 20000, seed: int = 0, mde: float | None = None,
    paired: bool | None = None, tests: Sequence[str] | None = None, partial: bool = False,
    resume: Mapping[str, str] | None = None, manifest: Mapping[str, Any] | None = None,
    margin_pp: float | None = None,
) -> SignificanceReport:
    """Analyse arms of run directories against ``baseline``.

    Either ``arms`` (arm name → run dirs, with ``baseline`` naming one of them; the others
    are candidates) or ``baseline_run_dirs`` + ``candidate_run_dirs``. ``mde`` is a minimum
    detectable effect in percentage points for the power section. ``paired=False`` analyses
    runs as unpaired (Welch's t primary). ``tests`` restricts the registered tests run.
    The endpoint is the plan's (``design.planned_endpoint``): runs that cannot be measured
    there raise ``IncompleteRunsError`` unless ``partial`` (then they are dropped, with their
    seed partners, and the report says so). ``resume`` maps resolved run paths to the command
    that resumes them (for that error); ``manifest`` supplies commit and versions.
    ``margin_pp`` adds non-inferiority and equivalence tests at that margin (summaries).
    """
    _check_settings(alpha, num_resamples, seed, mde)
    if margin_pp is not None and not 0 < margin_pp < 100:
        raise ConfigError(f"margin must be a positive number of percentage points, got "
                          f"{margin_pp}")
    if arms is None:
        if baseline_run_dirs is None or candidate_run_dirs is None:
            raise ConfigError("give arms=... or both baseline_run_dirs and candidate_run_dirs")
        arms = {"baseline": list(baseline_run_dirs), "candidate": list(candidate_run_dirs)}
        baseline = "baseline"
    if baseline is None:
        baseline = "baseline" if "baseline" in arms else next(iter(arms))
    if baseline not in arms:
        raise ConfigError(f"baseline arm {baseline!r} is not one of {sorted(arms)}")
    if len(arms) < 2:
        raise AnalysisError("need a baseline arm and at least one candidate arm")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = {name: tuple(load_runs(dirs, what=f"arm {name!r}")) for name, dirs in arms.items()}
        all_runs = [r for rs in runs.values() for r in rs]
        for r in all_runs:  # read every run file here, so its warnings reach the report
            _ = r.metrics, r.step_counts
        hints = {r: resume[str(r.path.resolve())] for r in all_runs
                 if resume and str(r.path.resolve()) in resume}
        choice = design.planned_endpoint(all_runs, partial=partial, resume=hints)
        endpoint = choice.endpoint
        for note in choice.notes:
            warnings.warn(note, AnalysisWarning, stacklevel=2)
        dropped = _drop(runs, choice.dropped, paired=paired is not False)
        runs = {name: tuple(r for r in rs if r not in dropped) for name, rs in runs.items()}
        for name, rs in runs.items():
            if not rs:
                raise AnalysisError(f"--partial: arm {name!r} has no run that can be measured "
                                    "at the planned endpoint")
        all_runs = [r for rs in runs.values() for r in rs]
        values = {r: design.run_values(r, endpoint) for r in all_runs}
        comparisons_in: list[tuple[str, design.Pairing, AnalysisInput]] = []
        for name in arms:
            if name == baseline:
                continue
            pairing = design.pair_runs(runs[baseline], runs[name], baseline=baseline,
                                       candidate=name, paired=paired)
            data = design.build_input(pairing, values, endpoint, baseline=baseline,
                                      candidate=name, alpha=alpha,
                                      num_resamples=num_resamples, seed=seed)
            comparisons_in.append((name, pairing, data))
        comparisons = _compare(comparisons_in, values, endpoint, alpha=alpha, mde=mde,
                               only=tests)
    messages = tuple(dict.fromkeys(str(w.message) for w in caught
                                   if issubclass(w.category, AnalysisWarning)))
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    arm_rows = tuple(_arm_summary(name, rs, values, role="baseline" if name == baseline
                                  else "candidate") for name, rs in runs.items())
    from textpolicy.analysis.summaries import summarise

    extra = summarise(comparisons, {name: np.array([values[r].value for r in rs])
                                    for name, rs in runs.items()},
                      prompt_ids=endpoint.prompt_ids, alpha=alpha, resamples=num_resamples,
                      seed=seed, margin_pp=margin_pp)
    return SignificanceReport(alpha=alpha, num_resamples=num_resamples, seed=seed,
                              baseline=baseline, endpoint=endpoint,
                              comparisons=tuple(comparisons), arms=arm_rows,
                              warnings=messages, runs=runs, values=values,
                              partial=partial, dropped=tuple(dropped.values()),
                              provenance=_provenance(runs, manifest or {}), summaries=extra)


def _drop(runs: Mapping[str, Sequence[RunData]], bad: Sequence[tuple[RunData, str]], *,
          paired: bool) -> dict[RunData, str]:
    """Runs ``--partial`` leaves out: the incomplete ones and, when runs are paired by seed,
    every other arm's run of the same seed (a pair is kept whole or not at all)."""
    out = {r: f"{r.path}: {why}" for r, why in bad}
    seeds = {r.seed for r, _ in bad if r.seed is not None}
    if paired and seeds:
        for rs in runs.values():
            for r in rs:
                if r not in out and r.seed in seeds:
                    out[r] = f"{r.path}: its seed-{r.seed} partner cannot be measured"
    return out


def _provenance(runs: Mapping[str, Sequence[RunData]], manifest: Mapping[str, Any]
                ) -> dict[str, Any]:
    """What the report needs to stand alone: per arm LRs, steps, model, task, pipeline and
    its parameters (from each run's config.json); the commit and versions (manifest)."""
    def cfg(r: RunData) -> Mapping[str, Any]:
        c = r.config.get("config")
        return c if isinstance(c, Mapping) else {}

    def task(r: RunData) -> Any:
        t = r.config.get("task")
        return (t.get("name") if isinstance(t, Mapping) else None) or cfg(r).get("task")

    fields: dict[str, Any] = {
        "lr": lambda r: cfg(r).get("lr"), "max_steps": lambda r: cfg(r).get("max_steps"),
        "model": lambda r: r.config.get("model") or cfg(r).get("model"), "task": task,
        "pipeline": lambda r: r.pipeline,
        "pipeline_params": lambda r: cfg(r).get("pipeline_params") or {}}
    arms: dict[str, Any] = {}
    for name, rs in runs.items():
        row: dict[str, Any] = {}
        for key, get in fields.items():
            distinct = [json.loads(x) for x in dict.fromkeys(
                json.dumps(get(r), sort_keys=True, default=str) for r in rs)]
            row[key] = distinct[0] if len(distinct) == 1 else distinct
        arms[name] = row
    versions = next((r.config.get("versions") for rs in runs.values() for r in rs
                     if r.config.get("versions")), None)
    return {"arms": arms, "git": manifest.get("git"),
            "versions": manifest.get("versions") or versions,
            "campaign": manifest.get("name")}


def evaluate_sepa_significance(
    *, baseline_run_dirs: Sequence[PathLike], candidate_run_dirs: Sequence[PathLike],
    alpha: float = 0.05, num_resamples: int = 20000, seed: int = 0, mde: float | None = None,
) -> SignificanceReport:
    """The seed document's entry point: one baseline arm against one candidate arm."""
    return evaluate_significance(baseline_run_dirs=baseline_run_dirs,
                                 candidate_run_dirs=candidate_run_dirs, alpha=alpha,
                                 num_resamples=num_resamples, seed=seed, mde=mde)


def _primary_name(data: AnalysisInput) -> str:
    nb, nc = len(data.base_values), len(data.cand_values)
    if data.paired and data.n_pairs >= 2:
        return "seeds_prompts" if data.unit_kind == "prompt" else "paired_seeds"
    if not data.paired and nb >= 2 and nc >= 2:
        return "welch_runs"
    return "prompt_paired"


def _insufficient(data: AnalysisInput) -> str | None:
    """Why no recommendation can be given (too few seed pairs / runs per arm), else None."""
    n = data.n_pairs if data.paired else min(len(data.base_values), len(data.cand_values))
    if n >= MIN_SEED_PAIRS:
        return None
    have = f"{n} seed pair{'s' if n != 1 else ''}" if data.paired else (
        f"{n} run{'s' if n != 1 else ''} per arm")
    need = f"{MIN_SEED_PAIRS} seed pairs" if data.paired else f"{MIN_SEED_PAIRS} runs per arm"
    return (f"{have}: the primary test needs at least {need} before a difference can be "
            "called significant (its p value and CI below are descriptive); size the campaign "
            "with tp power")


def _run_tests(data: AnalysisInput, only: Sequence[str] | None) -> dict[str, TestResult]:
    from textpolicy.plugins import get_registry, structure_params

    table = get_registry().significance_tests
    if only is not None:
        for name in only:
            table.get(name)  # unknown name -> UnknownComponentError
    out: dict[str, TestResult] = {}
    rank = {"primary": 0, "secondary": 1, "generation_level": 2}
    primary = _primary_name(data)
    records = sorted(table.values(), key=lambda r: (r.name != primary, rank.get(r.role, 1),
                                                   r.name != "crossed_bootstrap", r.name))
    for record in records:
        if only is not None and record.name not in only:
            continue
        params = structure_params(record.params, {}, where=f"significance test {record.name!r}")
        builtin = getattr(record.fn, "__module__", "").startswith("textpolicy_builtins")
        try:
            with warnings.catch_warnings():
                # identical per-unit differences make scipy warn; the notes say t is undefined
                warnings.filterwarnings("ignore", message="Precision loss occurred",
                                        category=RuntimeWarning)
                result = record.fn(data, params)
        except Exception as exc:
            if builtin:
                raise
            result = TestResult(name=record.name, p_value=None, delta=None,
                                notes=f"failed: {type(exc).__name__}: {exc}")
        if not isinstance(result, TestResult):
            raise AnalysisError(f"significance test {record.name!r} returned "
                                f"{type(result).__name__}, not a TestResult")
        out[record.name] = result
    return out


def _compare(items: list[tuple[str, design.Pairing, AnalysisInput]],
             values: Mapping[RunData, design.RunValues], endpoint: design.Endpoint, *,
             alpha: float, mde: float | None, only: Sequence[str] | None) -> list[Comparison]:
    results = []
    for _name, _pairing, data in items:
        res = _run_tests(data, only)
        pname = _primary_name(data)
        if pname not in res:
            res[pname] = _run_tests(data, [pname])[pname]
        results.append(res)
    raw = [r[_primary_name(d)].p_value for (_, _, d), r in zip(items, results, strict=True)]
    raw_f = [math.nan if p is None else p for p in raw]
    adjusted = methods.holm(raw_f)
    m = sum(not math.isnan(p) for p in raw_f)
    ci_alphas = methods.holm_ci_alphas(raw_f, alpha)
    out = []
    for i, ((name, pairing, data), res) in enumerate(zip(items, results, strict=True)):
        from textpolicy.plugins import get_registry, structure_params

        pname = _primary_name(data)
        primary = res[pname]
        level_alpha = ci_alphas[i]
        if m > 1 and not math.isnan(raw_f[i]):
            record = get_registry().significance_tests.get(pname)
            params = structure_params(record.params, {}, where=pname)
            at_level = record.fn(attrs.evolve(data, alpha=level_alpha), params)
            # the notes name the CI level too, so the headline's level and its text agree
            primary = attrs.evolve(primary, ci_low=at_level.ci_low, ci_high=at_level.ci_high,
                                   notes=at_level.notes)
        p_adj = None if math.isnan(adjusted[i]) else adjusted[i]
        rec = "not_significant"
        if p_adj is not None and p_adj < alpha and primary.delta:
            rec = "significant_improvement" if primary.delta > 0 else "significant_regression"
        reason = _insufficient(data)
        if reason is not None:
            rec = "insufficient_seeds"
        out.append(Comparison(
            baseline=data.baseline, candidate=name, pairing=pairing.how, data=data,
            primary=primary, p_raw=raw[i], p_adjusted=p_adj, ci_level=1 - level_alpha,
            recommendation=rec, reason=reason,
            tests=tuple(primary if t.name == pname else t for t in res.values()),
            effect_sizes=_effect_sizes(data, pairing, values, endpoint, alpha),
            secondary=tuple(_secondary(pairing, values, endpoint, alpha)),
            power=_power(data, endpoint, alpha=alpha, mde=mde)))
    return out


def _effect_sizes(data: AnalysisInput, pairing: design.Pairing,
                  values: Mapping[RunData, design.RunValues], endpoint: design.Endpoint,
                  alpha: float) -> dict[str, Any]:
    pb = float(data.base_values.mean())
    pc = float(data.cand_values.mean())
    out: dict[str, Any] = {
        "baseline_mean": pb, "candidate_mean": pc, "risk_difference_pp": 100 * (pc - pb),
        "cohens_h": methods.cohens_h(pc, pb),
        "probability_of_improvement": methods.probability_of_improvement(
            data.base_values, data.cand_values, paired=data.paired),
    }
    if data.paired and data.n_pairs >= 2:
        d = data.pair_differences
        sd = float(d.std(ddof=1))
        out["d_z"] = float(d.mean() / sd) if sd > 0 else None
    counts = None
    source = ""
    if endpoint.kind == "heldout":
        bc = [x for r in pairing.base if (x := values[r].eval_counts) is not None]
        cc = [x for r in pairing.cand if (x := values[r].eval_counts) is not None]
        if len(bc) == len(pairing.base) and len(cc) == len(pairing.cand):
            counts = (sum(x[0] for x in bc), sum(x[1] for x in bc),
                      sum(x[0] for x in cc), sum(x[1] for x in cc))
            source = "pooled held-out samples at the endpoint step"
    elif data.gen_counts is not None:
        counts = data.gen_counts
        source = "pooled training generations"
    if counts is not None:
        kb, nb, kc, nc = counts
        table = np.array([[kc, nc - kc], [kb, nb - kb]])
        est, lo, hi, how = methods.odds_ratio_ci(table, alpha=alpha)
        out["odds_ratio_conditional"] = {
            "estimate": est, "ci_low": lo, "ci_high": hi, "method": how,
            "source": source + " (CI ignores run-level variance: descriptive)"}
    return out


def _secondary(pairing: design.Pairing, values: Mapping[RunData, design.RunValues],
               endpoint: design.Endpoint, alpha: float) -> list[dict[str, Any]]:
    from scipy import stats

    out = []
    specs = [("auc", "heldout_auc", "AUC of held-out accuracy over eval steps "
              f"{list(endpoint.common_steps)} (learning speed)"),
             ("pass_k", f"heldout_pass@{endpoint.pass_k}",
              f"unbiased pass@{endpoint.pass_k} at eval step {endpoint.step}"),
             ("train_rate", "train_correct_rate",
              "on-policy training correctness over all steps (descriptive)")]
    for attr, label, desc in specs:
        if endpoint.kind == "training" and attr == "train_rate":
            continue
        arrays = design.secondary_arrays(pairing, values, attr)
        if arrays is None:
            continue
        b, c = arrays[0] * 100, arrays[1] * 100
        row: dict[str, Any] = {"endpoint": label, "description": desc, "unit": "pp",
                               "baseline_mean": float(b.mean()),
                               "candidate_mean": float(c.mean()),
                               "delta": float(c.mean() - b.mean())}
        if pairing.paired and len(b) >= 2:
            d = c - b
            _t, p, lo, hi, _df = methods.paired_t(d, alpha=alpha)
            row.update(test="paired t", p_value=p, ci_low=lo, ci_high=hi, n_pairs=len(d))
        elif not pairing.paired and len(b) >= 2 and len(c) >= 2:
            res = stats.ttest_ind(c, b, equal_var=False)
            ci = res.confidence_interval(confidence_level=1 - alpha)
            row.update(test="welch t", p_value=float(res.pvalue), ci_low=float(ci.low),
                       ci_high=float(ci.high))
        else:
            row.update(test=None, p_value=None, ci_low=None, ci_high=None)
        row["note"] = "exploratory: not adjusted for multiplicity"
        out.append(row)
    return out


def _seeds_needed(sd: float, sd_hi: float, delta: float, *, alpha: float,
                  negligible: str | None, n_pairs: int | None = None) -> dict[str, Any]:
    """Seed pairs for 80 % power at ``delta`` pp, or Nones with a note saying why not."""
    if negligible is None and not sd > power.NEGLIGIBLE_SD * max(1.0, abs(delta)):
        negligible = ("not estimable (SD of the per-pair differences is 0: every pair "
                      "differs by the same amount, so seed-level variance is unknown)")
    if negligible is not None:
        return {"closed_form": None, "t_refined": None, "t_refined_sd_upper80": None,
                "planned": None, "note": negligible}
    return {"closed_form": power.closed_form_seeds(sd * sd, delta, alpha=alpha),
            "t_refined": power.t_seeds(sd, delta, alpha=alpha),
            "t_refined_sd_upper80": power.t_seeds(sd_hi, delta, alpha=alpha),
            # the headline plan (power.PLANNING_LEVEL upper bound of the SD)
            "planned": power.planned_seeds(sd, n_pairs, delta, alpha=alpha)
            if n_pairs is not None else None}


def _negligible(delta: float, resolvable: float | None, what: str) -> str | None:
    """A "not estimable" note when the observed difference is ≈ 0 for planning purposes."""
    if delta == 0:
        return "not estimable (observed difference ≈ 0: it is exactly 0)"
    if (resolvable is not None and math.isfinite(resolvable)
            and abs(delta) < power.NEGLIGIBLE_FRACTION * resolvable):
        return (f"not estimable (observed difference ≈ 0: |Δ| = {abs(delta):.3g} pp is under "
                f"{power.NEGLIGIBLE_FRACTION:g} of the smallest effect {what} detect, "
                f"{resolvable:.3g} pp)")
    return None


def _power(data: AnalysisInput, endpoint: design.Endpoint, *, alpha: float,
           mde: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {"target_power": 0.8, "alpha": alpha, "unit": "pp"}
    if data.paired and data.n_pairs >= 2:
        d = data.pair_differences * 100
        sd = float(d.std(ddof=1))
        delta = float(d.mean())
        s = data.n_pairs
        sd_hi = power.sd_upper(sd, s)
        mde_now = power.t_mde(sd, s, alpha=alpha)
        out.update({
            "design": "paired seeds (paired t)", "n_pairs": s, "sd_pair_diff_pp": sd,
            "sd_pair_diff_pp_upper80": sd_hi, "observed_delta_pp": delta,
            "power_at_observed": power.t_power(sd, delta, s, alpha=alpha),
            "power_at_observed_label": "descriptive (post hoc): a function of the p value, "
                                       "not a planning figure",
            "planning_level": power.PLANNING_LEVEL,
            "mde_pp_at_current_pairs": mde_now,
            "seeds_needed_observed": _seeds_needed(
                sd, sd_hi, delta, alpha=alpha,
                negligible=_negligible(delta, mde_now, f"these {s} pairs"), n_pairs=s),
            "note": ("power at the observed effect is a function of the p value (descriptive); "
                     "plan with the seeds needed at a minimum effect you care about (--mde)"),
        })
        if mde is not None:
            out["mde_pp"] = mde
            out["seeds_needed_mde"] = _seeds_needed(sd, sd_hi, mde, alpha=alpha,
                                                    negligible=None, n_pairs=s)
        if endpoint.kind == "heldout" and endpoint.samples_min >= 1:
            vc = power.variance_components(data.base_units, data.cand_units,
                                           endpoint.samples_min)
            out["variance_components"] = vc.to_dict()
    else:
        out["design"] = ("unpaired runs" if not data.paired
                         else "one run per arm: seed-level power cannot be estimated")
    if data.gen_counts is not None:
        kb, nb, kc, nc = data.gen_counts
        p1, p2 = kb / nb, kc / nc
        mde_gen = 100 * power.two_proportion_mde((p1 + p2) / 2, min(nb, nc), alpha=alpha)
        why = _negligible(100 * (p2 - p1), mde_gen, f"{min(nb, nc)} generations per arm")
        gen: dict[str, Any] = {
            "test": "two-proportion z (independent generations)",
            "generations_per_arm": [nb, nc], "p_baseline": p1, "p_candidate": p2,
            "needed_per_arm_observed": None if why else power.two_proportion_n(
                p1, p2, alpha=alpha),
            "mde_pp_at_current": mde_gen,
            "note": ("the seed document's figure, for comparison only: it assumes independent "
                     "generations, so it understates what is needed when runs vary")}
        if why:
            gen["needed_per_arm_observed_note"] = why
        if mde is not None:
            gen["needed_per_arm_mde"] = power.two_proportion_n(
                p1, min(0.999999, p1 + mde / 100), alpha=alpha)
        out["generation_level"] = gen
    return out


def _arm_summary(name: str, runs: Sequence[RunData], values: Mapping[RunData,
                 design.RunValues], *, role: str) -> dict[str, Any]:
    vals = np.array([values[r].value for r in runs]) * 100
    pipelines = sorted({r.pipeline for r in runs if r.pipeline})
    return {
        "name": name, "role": role, "pipeline": pipelines[0] if len(pipelines) == 1 else
        (pipelines or None), "n_runs": len(runs), "seeds": [r.seed for r in runs],
        "endpoint_mean_pp": float(vals.mean()),
        "endpoint_sd_pp": float(vals.std(ddof=1)) if len(vals) > 1 else None,
        "runs": design.describe_runs(runs, values),
    }
