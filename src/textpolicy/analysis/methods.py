"""Vectorised statistical procedures (no Python loop over resamples anywhere).

Each function is a plain numpy/scipy computation that the significance-test plugins
(``textpolicy_builtins.significance``) and the power simulator call.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np
from scipy import stats

from textpolicy.analysis.records import FloatArray

EXACT_SIGN_FLIP_MAX = 16  # 2**16 sign vectors x S <= 1M entries
_CHUNK_ELEMENTS = 4_000_000  # resamples x units per block (bounds memory, keeps BLAS busy)


def sign_flip_p(d: np.ndarray, *, num_resamples: int = 20000, rng: np.random.Generator
                | None = None, max_exact: int = EXACT_SIGN_FLIP_MAX) -> tuple[float, bool]:
    """Two-sided sign-flip (paired randomisation) p for mean(d) = 0.

    Exact when ``len(d) <= max_exact`` (all 2^S sign vectors, the observed one included; the
    smallest possible p is 2/2^S); otherwise Monte Carlo with the observed statistic counted
    once: p = (1 + #{|mean*| >= |mean|}) / (R + 1). Returns (p, exact).
    """
    d = np.asarray(d, dtype=np.float64)
    s = len(d)
    if s == 0:
        return math.nan, True
    observed = abs(d.sum())
    tol = 1e-9 * max(1.0, float(np.abs(d).sum()))
    if s <= max_exact:
        codes = np.arange(2 ** s, dtype=np.uint32)[:, None]
        bits = (codes >> np.arange(s, dtype=np.uint32)) & 1
        signs = 1.0 - 2.0 * bits
        sums = np.abs(signs @ d)
        return float(np.mean(sums >= observed - tol)), True
    if rng is None:
        rng = np.random.default_rng(0)
    flips = rng.integers(0, 2, size=(num_resamples, s), dtype=np.int8) * 2 - 1
    sums = np.abs(flips @ d)
    return float((1 + np.sum(sums >= observed - tol)) / (num_resamples + 1)), False


def paired_t(d: np.ndarray, *, alpha: float) -> tuple[float, float, float, float, int]:
    """Paired t over per-pair differences: (t, p, ci_low, ci_high, df) with a 1−alpha CI.

    NaN t/p/CI when fewer than 2 pairs or when every difference is the same (SD 0: t
    undefined).
    """
    d = np.asarray(d, dtype=np.float64)
    n = len(d)
    if n < 2:
        return math.nan, math.nan, math.nan, math.nan, 0
    if float(d.std(ddof=1)) <= 1e-12 * max(1.0, float(np.abs(d).max())):
        # all differences equal: the t statistic is 0/0 or ±inf (no variance to estimate), so
        # there is no t p value or CI — reporting p = 0 from two identical pairs would be a
        # false claim; the caller shows the sign-flip p beside it
        return math.nan, math.nan, math.nan, math.nan, n - 1
    res = stats.ttest_1samp(d, 0.0)
    ci = res.confidence_interval(confidence_level=1.0 - alpha)
    return float(res.statistic), float(res.pvalue), float(ci.low), float(ci.high), n - 1


@attrs.frozen
class SeedPromptT:
    """The two-way random-effects (seed pair × prompt) t for the grand mean of a matrix."""

    estimate: float
    se: float  # NaN when undefined (no variation at all)
    df: float
    t: float
    p_value: float
    ci_low: float
    ci_high: float
    ms_seed: float
    ms_prompt: float
    ms_resid: float
    var_paired: float  # MS_seed/(S·M): the paired t's variance of the mean
    var_prompt: float  # max(0, MS_prompt − MS_resid)/(S·M): the arm × prompt interaction
    prompt_component_truncated: bool

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def seed_prompt_moments(diff: np.ndarray) -> dict[str, np.ndarray]:
    """Mean squares, variance of the mean and Satterthwaite df of ``seed_prompt_t`` for a
    stack of seed-pair × prompt matrices ``[..., S, M]`` (vectorised; every entry an array
    over the leading axes). ``var`` is NaN where it is not positive (t undefined)."""
    d = np.asarray(diff, dtype=np.float64)
    s, m = d.shape[-2:]
    if s < 2 or m < 2:
        raise ValueError(f"needs >= 2 seed pairs and >= 2 prompts, got {s} x {m}")
    grand = d.mean(axis=(-2, -1))
    row = d.mean(axis=-1)
    col = d.mean(axis=-2)
    g = grand[..., None]
    ms_seed = m * np.sum((row - g) ** 2, axis=-1) / (s - 1)
    ms_prompt = s * np.sum((col - g) ** 2, axis=-1) / (m - 1)
    df_resid = (s - 1) * (m - 1)
    resid = d - row[..., :, None] - col[..., None, :] + grand[..., None, None]
    ms_resid = np.sum(resid * resid, axis=(-2, -1)) / df_resid
    n = s * m
    truncated = ms_prompt <= ms_resid
    var_paired = ms_seed / n
    var_prompt = np.where(truncated, 0.0, (ms_prompt - ms_resid) / n)
    var = var_paired + var_prompt
    # Satterthwaite: df of Σ c_i MS_i is (Σ c_i MS_i)² / Σ (c_i MS_i)²/df_i
    denom = np.where(truncated, ms_seed ** 2 / (s - 1),
                     ms_seed ** 2 / (s - 1) + ms_prompt ** 2 / (m - 1)
                     + ms_resid ** 2 / df_resid)
    scale = 1e-12 * np.maximum(1.0, np.abs(d).max(axis=(-2, -1)))
    # identical pair means (MS_seed = 0): seed-to-seed variance cannot be estimated, so t
    # is undefined (as for the paired t), whatever the prompts show
    ok = (var_paired > scale * scale / n) & (denom > 0)
    var = np.where(ok, var, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(ok, (var * n) ** 2 / denom, np.nan)
    return {"estimate": grand, "var": var, "df": df, "ms_seed": ms_seed,
            "ms_prompt": ms_prompt, "ms_resid": ms_resid, "var_paired": var_paired,
            "var_prompt": var_prompt, "truncated": truncated}


def seed_prompt_p(diff: np.ndarray) -> np.ndarray:
    """Two-sided ``seed_prompt_t`` p values for a stack ``[..., S, M]`` (NaN: undefined)."""
    mo = seed_prompt_moments(diff)
    with np.errstate(invalid="ignore"):
        t = np.abs(mo["estimate"]) / np.sqrt(mo["var"])
    return np.asarray(2 * stats.t.sf(t, mo["df"]), dtype=np.float64)


def seed_prompt_t(diff: np.ndarray, *, alpha: float) -> SeedPromptT:
    """t test of mean(D) = 0 for a seed-pairs × prompts difference matrix D (S ≥ 2, M ≥ 2),
    treating both seeds and prompts as random (the estimand is over both populations).

    Method of moments on the two-way ANOVA without replication (D_sm = μ + a_s + b_m + e_sm):
    E[MS_seed] = σ²_e + M·σ²_a, E[MS_prompt] = σ²_e + S·σ²_b, E[MS_resid] = σ²_e, so
    Var(D̄) = σ²_a/S + σ²_b/M + σ²_e/(SM) = (MS_seed + MS_prompt − MS_resid)/(S·M). Written as
    MS_seed/(S·M) (exactly the paired t's variance of the mean over seed pairs) plus the arm ×
    prompt term (MS_prompt − MS_resid)/(S·M); that term is a variance-component estimate and is
    truncated at 0 when negative (the data show no arm × prompt interaction), so V > 0 whenever
    the pairs differ and the test then *is* the paired t (df S − 1). Identical pair means
    (MS_seed = 0) leave the seed variance unestimable: t, p and CI are then undefined (NaN).
    Degrees of freedom by Satterthwaite for the linear combination of mean squares actually
    used. The t reference
    gives p and the 1 − alpha CI (one procedure).

    Written by hand: scipy has no crossed random-effects ANOVA and statsmodels' MixedLM fits
    nested groups by REML (no closed-form crossed method of moments, and far slower).
    """
    mo = {k: v.item() for k, v in seed_prompt_moments(np.asarray(diff)[None]).items()}
    grand, var, df = float(mo["estimate"]), float(mo["var"]), float(mo["df"])
    rest = (float(mo["ms_seed"]), float(mo["ms_prompt"]), float(mo["ms_resid"]),
            float(mo["var_paired"]), float(mo["var_prompt"]), bool(mo["truncated"]))
    nan = math.nan
    if math.isnan(var):
        # every seed pair has the same mean difference and no prompt term: t is undefined
        return SeedPromptT(grand, nan, nan, nan, nan, nan, nan, *rest)
    se = math.sqrt(var)
    t = grand / se
    p = float(2 * stats.t.sf(abs(t), df))
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    return SeedPromptT(grand, se, df, t, p, grand - crit * se, grand + crit * se, *rest)


def multinomial_counts(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """``size`` rows of counts of a uniform multinomial over ``n`` cells with ``n`` draws."""
    if size * n >= 2**31:
        raise ValueError("block too large for int32 indices")
    idx = rng.integers(0, n, size=(size, n), dtype=np.int32)
    idx += (np.arange(size, dtype=np.int32) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=size * n).reshape(size, n)


def crossed_bootstrap(diff: np.ndarray, *, num_resamples: int, rng: np.random.Generator
                      ) -> FloatArray:
    """Owen's (2007) pigeonhole bootstrap of the grand mean of a seeds × prompts matrix.

    Independent multinomial weights ``w`` over rows (seed pairs) and ``v`` over columns
    (prompts); each replicate is ``w' D v / (S M)``. Computed in blocks of resamples with
    matrix products (no loop over individual resamples).
    """
    d = np.asarray(diff, dtype=np.float64)
    s, m = d.shape
    out = np.empty(num_resamples, dtype=np.float64)
    block = max(1, _CHUNK_ELEMENTS // max(m, 1))
    for start in range(0, num_resamples, block):
        r = min(block, num_resamples - start)
        v = multinomial_counts(rng, m, r)  # [r, m]
        w = multinomial_counts(rng, s, r) if s > 1 else np.ones((r, 1))
        out[start:start + r] = np.einsum("rs,rs->r", w, v @ d.T) / (s * m)
    return out


def bootstrap_p(replicates: np.ndarray, null: float = 0.0) -> float:
    """Two-sided percentile-bootstrap p: 2·min(P*(Δ ≤ null), P*(Δ ≥ null)), capped at 1."""
    r = np.asarray(replicates)
    n = len(r)
    lo = (1 + np.sum(r <= null)) / (n + 1)
    hi = (1 + np.sum(r >= null)) / (n + 1)
    return float(min(1.0, 2.0 * min(lo, hi)))


def hypergeometric_permutation(k1: int, n1: int, k2: int, n2: int, *, num_resamples: int,
                               rng: np.random.Generator) -> tuple[float, FloatArray]:
    """Permutation test of a difference in proportions from counts alone.

    Under random relabelling of the n1 + n2 binary outcomes, group 2's successes follow a
    hypergeometric law; each replicate is one draw. Returns (p, replicate differences).
    """
    total = k1 + k2
    x2 = rng.hypergeometric(total, n1 + n2 - total, n2, size=num_resamples)
    diffs = x2 / n2 - (total - x2) / n1
    observed = k2 / n2 - k1 / n1
    tol = 1e-12
    p = (1 + np.sum(np.abs(diffs) >= abs(observed) - tol)) / (num_resamples + 1)
    return float(p), diffs.astype(np.float64)


def permutation_mean_diff(a: np.ndarray, b: np.ndarray, *, num_resamples: int,
                          rng: np.random.Generator, max_levels: int = 256
                          ) -> tuple[float, str]:
    """Two-sided permutation p for mean(b) − mean(a) on arbitrary values, vectorised.

    * few distinct values (≤ ``max_levels``, e.g. 0/0.1/1 shaped rewards): the group-b value
      counts under relabelling are multivariate hypergeometric — drawn directly;
    * otherwise, when ``R·N`` is small enough, explicit random permutations in blocks;
    * otherwise the permutation distribution of the mean difference is used through its
      exact first two moments (normal approximation; N is then in the tens of thousands).
    Returns (p, method).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    pooled = np.concatenate([a, b])
    n_a, n_b = len(a), len(b)
    n = n_a + n_b
    observed = b.mean() - a.mean()
    total = pooled.sum()
    levels, counts = np.unique(pooled, return_counts=True)
    tol = 1e-12 * max(1.0, float(np.abs(pooled).max()))
    if len(levels) <= max_levels:
        draws = rng.multivariate_hypergeometric(counts, n_b, size=num_resamples)
        sum_b = draws @ levels
        diffs = sum_b / n_b - (total - sum_b) / n_a
        p = (1 + np.sum(np.abs(diffs) >= abs(observed) - tol)) / (num_resamples + 1)
        return float(p), "multivariate hypergeometric draws on value counts"
    if num_resamples * n <= 50_000_000:
        block = max(1, 4_000_000 // n)
        hits = 0
        for start in range(0, num_resamples, block):
            r = min(block, num_resamples - start)
            keys = rng.random((r, n))
            in_b = np.argpartition(keys, n_b - 1, axis=1)[:, :n_b] if n_b < n else None
            sum_b = pooled[in_b].sum(axis=1) if in_b is not None else np.full(r, total)
            diffs = sum_b / n_b - (total - sum_b) / n_a
            hits += int(np.sum(np.abs(diffs) >= abs(observed) - tol))
        return float((1 + hits) / (num_resamples + 1)), "random permutations"
    var_pop = pooled.var()
    se = math.sqrt(var_pop * n / (n - 1) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 1.0, "degenerate (all values equal)"
    z = abs(observed) / se
    return float(2 * stats.norm.sf(z)), "normal approximation to the permutation distribution"


def binomial_bootstrap(k1: int, n1: int, k2: int, n2: int, *, num_resamples: int,
                       rng: np.random.Generator) -> FloatArray:
    """Parametric bootstrap replicates of p2 − p1 from binomial draws on the counts."""
    p1 = rng.binomial(n1, k1 / n1, size=num_resamples) / n1
    p2 = rng.binomial(n2, k2 / n2, size=num_resamples) / n2
    return np.asarray(p2 - p1, dtype=np.float64)


CONDITIONAL_OR_MAX_MARGIN = 400  # scipy's exact conditional CI costs seconds beyond this
WOOLF_MIN_CELL = 20


def odds_ratio_ci(table: np.ndarray, *, alpha: float) -> tuple[float, float, float, str]:
    """Odds ratio of a 2x2 table with a 1−alpha CI: (estimate, low, high, method).

    The conditional MLE and exact CI (``scipy.stats.contingency.odds_ratio``,
    ``kind="conditional"``, as R's fisher.test) when some margin is <= 400 or some cell < 20.
    Otherwise (every margin > 400 and every cell >= 20), where scipy's exact CI takes seconds
    to minutes: the sample odds ratio with Woolf's logit CI, to which the conditional MLE and
    its CI converge.
    """
    from scipy.stats.contingency import odds_ratio

    t = np.asarray(table, dtype=np.int64)
    margins = np.concatenate([t.sum(axis=0), t.sum(axis=1)])
    if margins.min() <= CONDITIONAL_OR_MAX_MARGIN or t.min() < WOOLF_MIN_CELL:
        res = odds_ratio(t, kind="conditional")
        ci = res.confidence_interval(confidence_level=1 - alpha)
        return float(res.statistic), float(ci.low), float(ci.high), "conditional MLE (exact CI)"
    est = float(t[0, 0] * t[1, 1] / (t[0, 1] * t[1, 0]))
    se = math.sqrt(float(np.sum(1.0 / t)))
    z = float(stats.norm.ppf(1 - alpha / 2))
    return (est, est * math.exp(-z * se), est * math.exp(z * se),
            "sample odds ratio, Woolf CI (large table: ≈ conditional MLE)")


def holm(p_values: list[float]) -> list[float]:
    """Holm step-down adjusted p values; NaN stays NaN (and is not counted in the family).

    Same numbers as ``statsmodels.stats.multitest.multipletests(p, method="holm")`` (the
    tests check it); written out because multipletests calls ``gc.collect()`` (~0.2 s).
    """
    arr = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(arr, np.nan)
    ok = np.flatnonzero(~np.isnan(arr))
    m = len(ok)
    if m:
        order = ok[np.argsort(arr[ok], kind="stable")]
        scaled = arr[order] * (m - np.arange(m))
        out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return [float(x) for x in out]


def holm_ci_alphas(p_values: list[float], alpha: float) -> list[float]:
    """Per-hypothesis CI levels (1 − a) that agree with Holm's decisions at ``alpha``.

    Sorted by p, hypothesis ``r`` (0-based) gets ``a = α/(m − r)`` while every hypothesis up
    to it is rejected; from the first non-rejected one on, the level stays at that step's
    ``α/(m − r₀)``. For a test whose CI is its inversion (t tests), the CI then excludes 0
    exactly when Holm rejects: a rejected one has p_(r) < α/(m − r), and every later one has
    p ≥ p_(r₀) ≥ α/(m − r₀). (The plain "level of its rank" could exclude 0 for a hypothesis
    that Holm keeps because an earlier one was kept.) NaN p values get ``alpha``.
    """
    arr = np.asarray(p_values, dtype=np.float64)
    out = [alpha] * len(arr)
    ok = np.flatnonzero(~np.isnan(arr))
    m = len(ok)
    order = ok[np.argsort(arr[ok], kind="stable")]
    level = alpha
    stopped = False
    for r, i in enumerate(order):
        if not stopped:
            level = alpha / (m - r)
            stopped = not arr[i] * (m - r) < alpha  # the arithmetic of ``holm``
        out[int(i)] = level
    return out


def cohens_h(p1: float, p0: float) -> float:
    """Cohen's h = 2·asin√p1 − 2·asin√p0."""
    return 2.0 * math.asin(math.sqrt(p1)) - 2.0 * math.asin(math.sqrt(p0))


def probability_of_improvement(base: np.ndarray, cand: np.ndarray, *, paired: bool) -> float:
    """P(candidate run beats baseline run), ties counting one half. Paired: over seed pairs;
    unpaired: over all baseline × candidate run combinations (Mann–Whitney)."""
    b = np.asarray(base, dtype=np.float64)
    c = np.asarray(cand, dtype=np.float64)
    if paired:
        d = c - b
        return float(np.mean((d > 0) + 0.5 * (d == 0)))
    diff = c[:, None] - b[None, :]
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))
