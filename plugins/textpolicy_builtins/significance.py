"""Built-in significance tests (``tp analyze``), registered as plugins.

Seed-level (valid under run-to-run variance): ``seeds_prompts`` (primary on held-out prompts:
two-way random-effects method-of-moments t over seed pairs × eval prompts, the claim over
both populations), ``paired_seeds`` (paired t over seed pairs, exact sign-flip p beside it:
"on this eval set"; primary for a training-step endpoint), ``crossed_bootstrap`` (seed ×
prompt pigeonhole bootstrap), ``welch_runs`` (unpaired runs), ``prompt_paired`` (one run per
arm: per-prompt differences, conditional on those two runs).
Generation-level, pseudo-replicated (the seed document's trio, reported for comparison only):
``fisher``, ``bootstrap``, ``permutation``.
Every test reads an ``AnalysisInput`` and returns a ``TestResult`` with deltas in percentage
points; resampling is vectorised (no Python loop over resamples).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import attrs
import numpy as np

from textpolicy import hookimpl
from textpolicy.analysis.records import AnalysisInput, TestResult, not_applicable
from textpolicy.records import NoParams, SignificanceTest

PP = 100.0
PSEUDO = ("generation-level: pools every training generation of every run as if independent "
          "(pseudo-replicated; ignores run-to-run variance; on-policy training samples)")


def _positive_int(_inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value!r}")


@attrs.frozen
class PairedSeedsParams:
    """``max_exact_seeds``: enumerate all 2^S sign vectors up to this many pairs."""

    max_exact_seeds: int = attrs.field(default=16, validator=_positive_int)


def paired_seeds(data: AnalysisInput, params: PairedSeedsParams) -> TestResult:
    from textpolicy.analysis import methods

    if not data.paired:
        return not_applicable("paired_seeds", "runs are not paired by seed")
    d = data.pair_differences * PP
    if len(d) < 2:
        return not_applicable("paired_seeds", f"{len(d)} seed pair(s); a paired t needs >= 2")
    t, p, lo, hi, df = methods.paired_t(d, alpha=data.alpha)
    p_flip, exact = methods.sign_flip_p(d, num_resamples=data.num_resamples,
                                        rng=data.rng("paired_seeds"),
                                        max_exact=params.max_exact_seeds)
    how = "exact over all 2^S sign vectors" if exact else (
        f"Monte Carlo, {data.num_resamples} sign vectors")
    min_p = 2 / 2 ** len(d)
    flip = (f"sign-flip p={p_flip:.4g} ({how}; smallest possible {min_p:.3g}"
            + (f": with {len(d)} pairs the exact sign-flip cannot reach alpha = "
               f"{data.alpha:g}" if min_p > data.alpha else "") + ")")
    scope = ("on this eval set: treats its prompts as fixed, so it does not cover an arm x "
             "prompt interaction" if data.unit_kind == "prompt" else
             "training steps share the seed's prompt schedule")
    if math.isnan(p):
        notes = (f"paired t over {len(d)} seed pairs ({scope}): every pair differs by the same "
                 f"{float(d.mean()):.4g} pp (SD 0), so t is undefined — no t p value or CI "
                 f"(not a significant result); {flip}")
    else:
        notes = (f"paired t over {len(d)} seed pairs, df={df} ({scope}); "
                 f"{100 * (1 - data.alpha):g}% CI from the same t; {flip}")
    return TestResult(
        name="paired_seeds", p_value=p, delta=float(d.mean()), ci_low=lo, ci_high=hi,
        notes=notes, level="seed",
        extra={"t": t, "df": df, "sign_flip_p": p_flip, "sign_flip_exact": exact,
               "sign_flip_min_p": min_p, "sign_flip_can_reach_alpha": min_p <= data.alpha,
               "sd_pp": float(d.std(ddof=1)),
               "t_undefined": math.isnan(p),
               "differences_pp": d.tolist(), "seeds": list(data.seeds)})


def seeds_prompts(data: AnalysisInput, params: NoParams) -> TestResult:
    from textpolicy.analysis import methods

    name = "seeds_prompts"
    if not data.paired:
        return not_applicable(name, "runs are not paired by seed", level="seed×prompt")
    if data.unit_kind != "prompt":
        return not_applicable(name, "the endpoint has no eval prompts (training steps are "
                              "not a crossed random factor)", level="seed×prompt")
    diff = (data.cand_units - data.base_units) * PP  # [S, M]
    s, m = diff.shape
    if s < 2 or m < 2:
        return not_applicable(name, f"{s} seed pair(s) x {m} prompt(s); needs >= 2 of each",
                              level="seed×prompt")
    res = methods.seed_prompt_t(diff, alpha=data.alpha)
    head = (f"two-way random-effects t over {s} seed pairs x {m} eval prompts (method of "
            "moments; generalises over training seeds and the eval-prompt population)")
    if math.isnan(res.p_value):
        notes = (f"{head}: every pair differs by the same {res.estimate:.4g} pp (SD 0), so "
                 "seed-to-seed variance cannot be estimated and t is undefined — no p value "
                 "or CI (not a significant result)")
    else:
        term = ("arm x prompt variance estimated <= 0, truncated at 0: the SE equals the "
                "paired t's" if res.prompt_component_truncated else
                f"arm x prompt term adds {100 * res.var_prompt / (res.se ** 2):.0f}% of the "
                "variance")
        notes = (f"{head}; SE {res.se:.3g} pp, Satterthwaite df {res.df:.1f}; {term}; "
                 f"{100 * (1 - data.alpha):g}% CI from the same t")
    return TestResult(name=name, p_value=res.p_value, delta=res.estimate, ci_low=res.ci_low,
                      ci_high=res.ci_high, notes=notes, level="seed×prompt",
                      extra={**res.to_dict(), "n_pairs": s, "n_prompts": m})


def crossed_bootstrap(data: AnalysisInput, params: NoParams) -> TestResult:
    from scipy import stats

    from textpolicy.analysis import methods

    if not data.paired:
        return not_applicable("crossed_bootstrap", "runs are not paired by seed",
                              level="seed×prompt")
    diff = (data.cand_units - data.base_units) * PP  # [S, M]
    s, m = diff.shape
    if m < 2:
        return not_applicable("crossed_bootstrap", "fewer than 2 prompts", level="seed×prompt")
    reps = methods.crossed_bootstrap(diff, num_resamples=data.num_resamples,
                                     rng=data.rng("crossed_bootstrap"))
    est = float(diff.mean())
    df = s - 1 if s >= 2 else m - 1
    correction = math.sqrt(s / (s - 1)) if s >= 2 else 1.0
    se = float(reps.std(ddof=1)) * correction
    crit = float(stats.t.ppf(1 - data.alpha / 2, df))
    p = float(2 * stats.t.sf(abs(est) / se, df)) if se > 0 else 1.0 if est == 0 else 0.0
    q = np.quantile(reps, [data.alpha / 2, 1 - data.alpha / 2])
    unit = "eval prompts" if data.unit_kind == "prompt" else "training steps (shared schedule)"
    notes = (f"Owen pigeonhole bootstrap over {s} seed pairs x {m} {unit}, "
             f"{data.num_resamples} resamples; CI = estimate ± t(df={df}) x bootstrap SE"
             + (" x sqrt(S/(S-1)) (percentile intervals from few seeds are too narrow)"
                if s >= 2 else "") + "; p from the same t reference")
    if s == 1:
        notes += "; one seed pair: conditional on these two runs, does not generalise over seeds"
    return TestResult(
        name="crossed_bootstrap", p_value=p, delta=est, ci_low=est - crit * se,
        ci_high=est + crit * se, notes=notes, level="seed×prompt",
        extra={"se_pp": se, "df": df, "percentile_ci": [float(q[0]), float(q[1])],
               "n_pairs": s, "n_units": m})


def welch_runs(data: AnalysisInput, params: NoParams) -> TestResult:
    from scipy import stats


    b = data.base_values * PP
    c = data.cand_values * PP
    if len(b) < 2 or len(c) < 2:
        return not_applicable("welch_runs", "needs >= 2 runs per arm")
    res = stats.ttest_ind(c, b, equal_var=False)
    delta = float(c.mean() - b.mean())
    if not np.isfinite(res.pvalue):
        return TestResult(name="welch_runs", p_value=None, delta=delta,
                          notes="zero variance in both arms; Welch t undefined")
    ci = res.confidence_interval(confidence_level=1 - data.alpha)
    note = ("Welch t on per-run endpoint values"
            + (" (ignores the seed pairing; the paired test is primary)" if data.paired
               else " (runs are unpaired: primary test)"))
    return TestResult(name="welch_runs", p_value=float(res.pvalue), delta=delta,
                      ci_low=float(ci.low), ci_high=float(ci.high), notes=note, level="seed",
                      extra={"t": float(res.statistic), "df": float(res.df),
                             "n_baseline": len(b), "n_candidate": len(c)})


def prompt_paired(data: AnalysisInput, params: NoParams) -> TestResult:
    from scipy import stats


    if data.base_units.shape[1] != data.cand_units.shape[1]:
        return not_applicable("prompt_paired", "arms were measured on different units",
                              level="prompt")
    per_unit = (data.cand_units.mean(axis=0) - data.base_units.mean(axis=0)) * PP
    m = len(per_unit)
    if m < 2:
        return not_applicable("prompt_paired", "fewer than 2 prompts", level="prompt")
    res = stats.ttest_1samp(per_unit, 0.0)
    delta = float(per_unit.mean())
    unit = "eval prompt" if data.unit_kind == "prompt" else "training step"
    runs = f"{len(data.base_values)} vs {len(data.cand_values)} runs"
    if len(data.base_values) == 1 and len(data.cand_values) == 1:
        caveat = ("ONE RUN PER ARM: run-to-run (seed) variance cannot be estimated; this result "
                  "is conditional on these two runs and does not generalise over seeds")
    else:
        caveat = ("treats the runs' mean per " + unit + " as fixed and ignores seed-to-seed "
                  "variance (not valid for a claim over seeds; the seed-level test decides)")
    if not np.isfinite(res.pvalue):
        return TestResult(name="prompt_paired", p_value=None, delta=delta, level="prompt",
                          notes=f"identical per-{unit} differences; t undefined. {caveat}")
    ci = res.confidence_interval(confidence_level=1 - data.alpha)
    return TestResult(
        name="prompt_paired", p_value=float(res.pvalue), delta=delta, ci_low=float(ci.low),
        ci_high=float(ci.high), level="prompt",
        notes=f"paired t over {m} per-{unit} differences ({runs}). {caveat}",
        extra={"t": float(res.statistic), "df": m - 1, "n_units": m})


def _counts(data: AnalysisInput) -> tuple[int, int, int, int] | None:
    return data.gen_counts


def fisher(data: AnalysisInput, params: NoParams) -> TestResult:
    from scipy import stats

    from textpolicy.analysis import methods

    counts = _counts(data)
    if counts is None:
        return not_applicable("fisher", "no emergence/steps.jsonl counts", level="generation")
    kb, nb, kc, nc = counts
    table = np.array([[kc, nc - kc], [kb, nb - kb]])
    res = stats.fisher_exact(table)
    est, lo, hi, how = methods.odds_ratio_ci(table, alpha=data.alpha)
    delta = (kc / nc - kb / nb) * PP
    return TestResult(
        name="fisher", p_value=float(res.pvalue), delta=delta, level="generation",
        notes=(f"Fisher exact test on pooled training counts {kc}/{nc} vs {kb}/{nb}; "
               f"{PSEUDO}; odds ratio {est:.4g} [{lo:.4g}, {hi:.4g}] ({how}); no CI for "
               "the difference"),
        extra={"table": table.tolist(), "odds_ratio_conditional": est,
               "odds_ratio_ci": [lo, hi], "odds_ratio_method": how,
               "odds_ratio_sample": float(res.statistic)})


def bootstrap(data: AnalysisInput, params: NoParams) -> TestResult:
    from textpolicy.analysis import methods

    counts = _counts(data)
    if counts is None:
        return not_applicable("bootstrap", "no emergence/steps.jsonl counts", level="generation")
    kb, nb, kc, nc = counts
    reps = methods.binomial_bootstrap(kb, nb, kc, nc, num_resamples=data.num_resamples,
                                      rng=data.rng("bootstrap")) * PP
    lo, hi = np.quantile(reps, [data.alpha / 2, 1 - data.alpha / 2])
    return TestResult(
        name="bootstrap", p_value=methods.bootstrap_p(reps), delta=(kc / nc - kb / nb) * PP,
        ci_low=float(lo), ci_high=float(hi), level="generation",
        notes=(f"percentile bootstrap of the difference in pooled correct rates from binomial "
               f"draws on the counts, {data.num_resamples} resamples; {PSEUDO}"))


def permutation(data: AnalysisInput, params: NoParams) -> TestResult:
    from textpolicy.analysis import methods

    rng = data.rng("permutation")
    if data.rewards_binary:
        counts = _counts(data)
        if counts is None:
            return not_applicable("permutation", "no emergence/steps.jsonl counts",
                                  level="generation")
        kb, nb, kc, nc = counts
        p, _ = methods.hypergeometric_permutation(kb, nb, kc, nc,
                                                  num_resamples=data.num_resamples, rng=rng)
        return TestResult(
            name="permutation", p_value=p, delta=(kc / nc - kb / nb) * PP, level="generation",
            notes=(f"permutation test of mean reward; rewards equal correctness (binary), so "
                   f"relabellings are hypergeometric draws on the counts, "
                   f"{data.num_resamples} resamples — this is Fisher's test again, it adds "
                   f"nothing; {PSEUDO}"))
    if data.base_rewards is None or data.cand_rewards is None:
        return not_applicable("permutation", "rewards are not binary and "
                              "emergence/generations.jsonl is unavailable", level="generation",
                              unit="reward")
    p, how = methods.permutation_mean_diff(data.base_rewards, data.cand_rewards,
                                           num_resamples=data.num_resamples, rng=rng)
    delta = float(data.cand_rewards.mean() - data.base_rewards.mean())
    return TestResult(
        name="permutation", p_value=p, delta=delta, unit="reward", level="generation",
        notes=f"permutation test of the difference in mean reward ({how}); {PSEUDO}")


@hookimpl
def textpolicy_register_significance_tests() -> Iterable[SignificanceTest]:
    return [
        SignificanceTest(name="seeds_prompts", fn=seeds_prompts, role="primary",
                         doc="two-way random-effects t over seed pairs x eval prompts "
                             "(method of moments, Satterthwaite df)"),
        SignificanceTest(name="paired_seeds", fn=paired_seeds, params=PairedSeedsParams,
                         role="primary",
                         doc="paired t over seed pairs (on this eval set), exact sign-flip "
                             "p beside it"),
        SignificanceTest(name="crossed_bootstrap", fn=crossed_bootstrap, role="secondary",
                         doc="seed x prompt pigeonhole bootstrap CI (Owen 2007)"),
        SignificanceTest(name="welch_runs", fn=welch_runs, role="primary",
                         doc="Welch t on per-run values (primary when runs are unpaired)"),
        SignificanceTest(name="prompt_paired", fn=prompt_paired, role="primary",
                         doc="per-prompt paired t (primary only with one run per arm; caveat)"),
        SignificanceTest(name="fisher", fn=fisher, role="generation_level",
                         doc="Fisher exact test on pooled training counts (pseudo-replicated)"),
        SignificanceTest(name="bootstrap", fn=bootstrap, role="generation_level",
                         doc="binomial bootstrap of pooled correct rates (pseudo-replicated)"),
        SignificanceTest(name="permutation", fn=permutation, role="generation_level",
                         doc="permutation test of rewards (pseudo-replicated)"),
    ]
