"""The summaries the field expects beside the primary test (rliable, Agarwal et al. 2021;
Miller 2024, "Adding Error Bars to Evals"). None of them decides the recommendation.

* each arm's endpoint accuracy with a t CI over its runs (seeds; the eval set held fixed);
* the interquartile mean (IQM) over runs of each arm, and the IQM of the per-pair differences
  with a percentile bootstrap CI over pairs — a robust secondary;
* the probability of improvement: the share of seed pairs where the candidate wins (ties ½)
  with a Wilson score interval over the pairs;
* per-subject differences when the endpoint prompts are MATH ids (``test/<subject>/<n>.json``):
  paired t over seed pairs on each subject's prompts, exploratory and unadjusted;
* with a margin m (``[analysis] margin_pp``, ``tp analyze --margin``): a non-inferiority test
  (H0: Δ ≤ −m, one-sided paired t, Holm across candidates) and an equivalence test (TOST:
  H0: |Δ| ≥ m; both one-sided tests at α), with the (1 − 2α) CI they correspond to.

The t tests and the bootstrap are scipy's; the Wilson interval is written out (three lines)
because scipy's ``binomtest`` needs an integer count and ties count ½ here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from textpolicy.analysis import methods

MATH_ID = re.compile(r"^[^/]+/([a-z_]+)/[^/]+$")


def wilson(successes: float, n: int, *, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of a proportion (``successes`` may be fractional: ties ½)."""
    z = float(stats.norm.isf(alpha / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def iqm(values: np.ndarray, axis: int = -1) -> Any:
    """Interquartile mean: the mean of the middle 50 % (``scipy.stats.trim_mean``, 25 %)."""
    return stats.trim_mean(values, 0.25, axis=axis)


def _t_ci(x: np.ndarray, alpha: float) -> tuple[float | None, float | None]:
    if len(x) < 2 or not float(np.std(x, ddof=1)) > 0:
        return None, None
    ci = stats.ttest_1samp(x, 0.0).confidence_interval(1 - alpha)
    return float(ci.low), float(ci.high)


def arm_summary(name: str, values: np.ndarray, *, alpha: float) -> dict[str, Any]:
    """Endpoint accuracy (pp) of one arm: mean with a t CI over runs, and the IQM."""
    pp = 100 * np.asarray(values, dtype=np.float64)
    low, high = _t_ci(pp, alpha)
    return {"arm": name, "n_runs": len(pp), "mean_pp": float(pp.mean()),
            "ci_low": low, "ci_high": high, "ci_level": 1 - alpha,
            "ci_method": "t over runs (seeds); the eval set held fixed",
            "iqm_pp": float(iqm(pp))}


def probability_of_improvement(d: np.ndarray, *, alpha: float) -> dict[str, Any]:
    wins = float(np.sum(d > 0) + 0.5 * np.sum(d == 0))
    low, high = wilson(wins, len(d), alpha=alpha)
    return {"estimate": wins / len(d), "ci_low": low, "ci_high": high, "ci_level": 1 - alpha,
            "n_pairs": len(d), "method": "share of seed pairs the candidate wins (ties ½), "
                                         "Wilson score interval"}


def iqm_difference(d: np.ndarray, *, alpha: float, resamples: int, seed: int
                   ) -> dict[str, Any]:
    out: dict[str, Any] = {"estimate_pp": float(iqm(d)), "ci_low": None, "ci_high": None,
                           "ci_level": 1 - alpha,
                           "method": "IQM of the per-pair differences, percentile bootstrap "
                                     "over pairs (narrow with few pairs: descriptive)"}
    if len(d) >= 4 and float(np.ptp(d)) > 0:
        res = stats.bootstrap((d,), iqm, n_resamples=resamples, confidence_level=1 - alpha,
                              method="percentile", rng=np.random.default_rng(seed))
        out.update(ci_low=float(res.confidence_interval.low),
                   ci_high=float(res.confidence_interval.high))
    return out


def per_subject(prompt_ids: Sequence[str], base_units: np.ndarray, cand_units: np.ndarray,
                *, alpha: float) -> list[dict[str, Any]] | None:
    """Paired differences per MATH subject (None unless every prompt id is a MATH id and
    there are at least two subjects)."""
    matches = [MATH_ID.match(p) for p in prompt_ids]
    if not matches or any(m is None for m in matches):
        return None
    subjects = [m.group(1) for m in matches if m is not None]
    if len(set(subjects)) < 2:
        return None
    labels = np.array(subjects)
    rows = []
    for subject in sorted(set(subjects)):
        cols = labels == subject
        b = 100 * base_units[:, cols].mean(axis=1)
        c = 100 * cand_units[:, cols].mean(axis=1)
        d = c - b
        low, high = _t_ci(d, alpha)
        p = (float(stats.ttest_1samp(d, 0.0).pvalue) if low is not None else None)
        rows.append({"subject": subject, "n_prompts": int(cols.sum()),
                     "baseline_pp": float(b.mean()), "candidate_pp": float(c.mean()),
                     "delta_pp": float(d.mean()), "ci_low": low, "ci_high": high,
                     "p_value": p})
    return rows


def margin_tests(d: np.ndarray, margin: float, *, alpha: float) -> dict[str, Any]:
    """Non-inferiority (H0: Δ ≤ −m) and equivalence (TOST, H0: |Δ| ≥ m) on the per-pair
    differences ``d`` (pp), one-sided paired t tests at α (scipy)."""
    out: dict[str, Any] = {"margin_pp": margin, "alpha": alpha, "n_pairs": len(d),
                           "test": "paired t over seed pairs (one-sided; TOST)"}
    if len(d) < 2 or not float(np.std(d, ddof=1)) > 0:
        out.update(non_inferiority_p=None, equivalence_p=None, ci_low=None, ci_high=None,
                   non_inferior=False, equivalent=False,
                   note="needs >= 2 seed pairs whose differences vary")
        return out
    p_ni = float(stats.ttest_1samp(d, -margin, alternative="greater").pvalue)
    p_upper = float(stats.ttest_1samp(d, margin, alternative="less").pvalue)
    ci = stats.ttest_1samp(d, 0.0).confidence_interval(1 - 2 * alpha)
    out.update(non_inferiority_p=p_ni, equivalence_p=max(p_ni, p_upper),
               ci_low=float(ci.low), ci_high=float(ci.high), ci_level=1 - 2 * alpha)
    return out


def summarise(comparisons: Sequence[Any], arms: Mapping[str, np.ndarray], *,
              prompt_ids: Sequence[str], alpha: float, resamples: int, seed: int,
              margin_pp: float | None) -> dict[str, Any]:
    """The ``summaries`` section: ``comparisons`` are report Comparisons (their ``data``),
    ``arms`` maps arm names to per-run endpoint values (fractions)."""
    rows = []
    for c in comparisons:
        data = c.data
        row: dict[str, Any] = {"baseline": data.baseline, "candidate": data.candidate}
        if data.paired and data.n_pairs >= 1:
            d = 100 * data.pair_differences
            row["probability_of_improvement"] = probability_of_improvement(d, alpha=alpha)
            row["iqm_difference"] = iqm_difference(d, alpha=alpha, resamples=resamples,
                                                   seed=seed)
            if data.unit_kind == "prompt":
                subjects = per_subject(prompt_ids, data.base_units, data.cand_units,
                                       alpha=alpha)
                if subjects:
                    row["per_subject"] = subjects
            if margin_pp is not None:
                row["margin"] = margin_tests(d, margin_pp, alpha=alpha)
        rows.append(row)
    if margin_pp is not None:
        tested = [r for r in rows if r.get("margin", {}).get("non_inferiority_p") is not None]
        adjusted = methods.holm([r["margin"]["non_inferiority_p"] for r in tested])
        for r, p_adj in zip(tested, adjusted, strict=True):
            m = r["margin"]
            m["non_inferiority_p_holm"] = float(p_adj)
            m["non_inferior"] = bool(p_adj < alpha)
            m["equivalent"] = bool(m["equivalence_p"] < alpha)
    return {"arms": [arm_summary(name, v, alpha=alpha) for name, v in arms.items()],
            "comparisons": rows,
            "note": "descriptive and secondary: the primary test alone decides the "
                    "recommendation"}


def markdown(section: Mapping[str, Any]) -> list[str]:
    """significance.md lines for the summaries section."""
    def f(x: Any) -> str:
        return "–" if x is None else f"{x:.2f}"

    lines = ["## Summaries (secondary; the primary test decides)", "",
             "| arm | runs | accuracy (pp) | CI | IQM over runs (pp) |", "|---|---|---|---|---|"]
    for a in section["arms"]:
        lines.append(f"| {a['arm']} | {a['n_runs']} | {f(a['mean_pp'])} | "
                     f"[{f(a['ci_low'])}, {f(a['ci_high'])}] | {f(a['iqm_pp'])} |")
    lines += ["", f"Accuracy CIs: {100 * section['arms'][0]['ci_level']:g}% t over runs "
              "(seeds), the eval set held fixed.", ""]
    for c in section["comparisons"]:
        head = f"**{c['candidate']} vs {c['baseline']}:**"
        parts = []
        poi = c.get("probability_of_improvement")
        if poi:
            parts.append(f"probability of improvement {poi['estimate']:.2f} "
                         f"[{poi['ci_low']:.2f}, {poi['ci_high']:.2f}] over {poi['n_pairs']} "
                         "pairs (Wilson)")
        iq = c.get("iqm_difference")
        if iq:
            parts.append(f"IQM of the pair differences {f(iq['estimate_pp'])} pp "
                         f"[{f(iq['ci_low'])}, {f(iq['ci_high'])}] (bootstrap over pairs)")
        lines.append(f"- {head} " + ("; ".join(parts) or "no paired summaries") + ".")
        m = c.get("margin")
        if m and m.get("non_inferiority_p") is not None:
            verdict = ("non-inferior" if m["non_inferior"] else "non-inferiority not shown")
            eq = "equivalent" if m["equivalent"] else "equivalence not shown"
            lines.append(
                f"- Margin {m['margin_pp']:g} pp: **{verdict}** (H0 Δ ≤ −{m['margin_pp']:g} pp,"
                f" one-sided paired t, p = {m['non_inferiority_p']:.4f}, Holm "
                f"{m['non_inferiority_p_holm']:.4f}); **{eq}** (TOST p = "
                f"{m['equivalence_p']:.4f}); {100 * m['ci_level']:g}% CI "
                f"[{f(m['ci_low'])}, {f(m['ci_high'])}] pp.")
        elif m:
            lines.append(f"- Margin {m['margin_pp']:g} pp: not testable ({m['note']}).")
        subjects = c.get("per_subject")
        if subjects:
            lines += ["", "| subject | prompts | baseline (pp) | candidate (pp) | Δ (pp) | CI | "
                      "p |", "|---|---|---|---|---|---|---|"]
            for s in subjects:
                p = "–" if s["p_value"] is None else f"{s['p_value']:.4f}"
                lines.append(f"| {s['subject']} | {s['n_prompts']} | {f(s['baseline_pp'])} | "
                             f"{f(s['candidate_pp'])} | {f(s['delta_pp'])} | "
                             f"[{f(s['ci_low'])}, {f(s['ci_high'])}] | {p} |")
            lines += ["", "Per-subject rows are exploratory (paired t over seed pairs, "
                      "unadjusted); the pooled primary decides."]
        lines.append("")
    return lines
