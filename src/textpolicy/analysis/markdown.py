"""Markdown renderings of the significance and comparison reports."""

from __future__ import annotations

from typing import Any

from textpolicy.analysis.report import GENERATION_LEVEL_NOTE, Comparison, SignificanceReport

VERDICT = {
    "significant_improvement": "Significant improvement",
    "not_significant": "Not significant",
    "significant_regression": "Significant regression",
    "insufficient_seeds": "Insufficient seeds (no recommendation)",
}

THESE_RUNS = (" — for these runs only: the primary test is prompt-level (an arm has one run), "
              "so this is not a claim over training seeds")


def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e-3 and x != 0 else f"{x:.{digits}f}"
    return str(x)


def _p(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.2e}" if x < 1e-4 else f"{x:.4f}"


def _comparison_md(c: Comparison, report: SignificanceReport) -> list[str]:
    ep = report.endpoint
    pr = c.primary
    lines = [
        f"## {c.candidate} vs {c.baseline}: **{VERDICT[c.recommendation]}** "
        f"(`{c.recommendation}`)" + (THESE_RUNS if c.scope == "these_runs" else ""), "",
        f"- Estimand: {c.estimand}",
        f"- Primary test: `{pr.name}` on {ep.description}.",
        f"- Effect: **{_f(pr.delta)} pp**, "
        + (f"{100 * c.ci_level:.4g}% CI [{_f(pr.ci_low)}, {_f(pr.ci_high)}] pp"
           if pr.ci_low is not None and pr.ci_high is not None else "no CI")
        + f"; p = {_p(c.p_adjusted)}"
        + (f" (Holm-adjusted over {len(report.comparisons)} candidates; unadjusted "
           f"{_p(c.p_raw)}; the CI is at the level Holm's step-down tests this contrast)"
           if len(report.comparisons) > 1 else " (one candidate: no multiplicity adjustment)")
        + f"; pairs: {c.data.n_pairs} (paired by {c.pairing}).",
        f"- {pr.notes}",
    ]
    if c.reason:
        lines.append(f"- No recommendation: {c.reason}.")
    flip = c.primary_dict(ep.label)
    if flip.get("sign_flip_can_reach_alpha") is False:
        lines.append(f"- With {c.data.n_pairs} seed pairs the exact sign-flip test cannot reach "
                     f"α = {report.alpha:g} (its smallest two-sided p is "
                     f"2/2^{c.data.n_pairs} = {2 / 2 ** c.data.n_pairs:.3g}).")
    lines += ["", "All tests below: p unadjusted (each test on its own), CI at "
              f"{100 * (1 - report.alpha):g}% unless marked; the headline above is the "
              "primary test" + (" with Holm's adjustment." if len(report.comparisons) > 1
                                else "."), "",
              "| test | level | delta | CI | p (unadjusted) | notes |",
              "|---|---|---|---|---|---|"]
    for t in c.tests:
        ci = f"[{_f(t.ci_low)}, {_f(t.ci_high)}]" if t.ci_low is not None else "–"
        if t.name == pr.name and abs(c.ci_level - (1 - report.alpha)) > 1e-12:
            ci = f"[{_f(pr.ci_low)}, {_f(pr.ci_high)}] ({100 * c.ci_level:.4g}%)"
        note = t.notes.replace("|", "/")
        lines.append(f"| `{t.name}` | {t.level} | {_f(t.delta)} {t.unit} | {ci} | "
                     f"{_p(t.p_value)} | {note} |")
    es = c.effect_sizes
    lines += ["", "**Effect sizes** (primary endpoint): "
              f"risk difference {_f(es.get('risk_difference_pp'))} pp; "
              f"Cohen's h {_f(es.get('cohens_h'))}; d_z {_f(es.get('d_z'))}; "
              f"probability of improvement {_f(es.get('probability_of_improvement'))}"]
    orr = es.get("odds_ratio_conditional")
    if orr:
        lines[-1] += (f"; conditional odds ratio {_f(orr['estimate'])} "
                      f"[{_f(orr['ci_low'])}, {_f(orr['ci_high'])}] ({orr['source']})")
        excludes = orr["ci_low"] is not None and (orr["ci_low"] > 1 or orr["ci_high"] < 1)
        if excludes and not c.recommendation.startswith("significant_"):
            lines[-1] += (". That odds-ratio CI excludes 1 while the verdict is "
                          f"{VERDICT[c.recommendation].lower()}: it pools every sample as "
                          "if independent and leaves out the seed-to-seed (and prompt) "
                          "variance the primary test accounts for, so it is narrower and does "
                          "not contradict the verdict")
    if c.secondary:
        lines += ["", "**Secondary endpoints** (exploratory, unadjusted):", "",
                  "| endpoint | baseline | candidate | delta (pp) | CI | p |",
                  "|---|---|---|---|---|---|"]
        for s in c.secondary:
            ci = f"[{_f(s.get('ci_low'))}, {_f(s.get('ci_high'))}]"
            lines.append(f"| {s['endpoint']} | {_f(s['baseline_mean'])} | "
                         f"{_f(s['candidate_mean'])} | {_f(s['delta'])} | {ci} | "
                         f"{_p(s.get('p_value'))} |")
    pw = c.power
    lines += ["", "**Power** (80%, two-sided α = " f"{report.alpha:g}):"]
    if "sd_pair_diff_pp" in pw:
        so = pw["seeds_needed_observed"]
        lines.append(f"- SD of per-pair differences {_f(pw['sd_pair_diff_pp'])} pp over "
                     f"{pw['n_pairs']} pairs; smallest detectable effect now "
                     f"{_f(pw['mde_pp_at_current_pairs'])} pp; power at the observed effect "
                     f"{_f(pw['power_at_observed'])} — descriptive (post hoc): a function of "
                     "the p value, not a planning figure.")
        level = f"{100 * pw.get('planning_level', 0.7):g}%"
        if so["t_refined"] is None:
            lines.append(f"- Seed pairs needed at the observed effect: {so.get('note')}.")
        else:
            lines.append(f"- Seed pairs needed at the observed effect: {so.get('planned')} "
                         f"(planned with the {level} upper bound of the SD; point estimate "
                         f"{so['t_refined']}, closed form {so['closed_form']}, "
                         f"{so['t_refined_sd_upper80']} with the 80% upper bound).")
        if "seeds_needed_mde" in pw:
            sm = pw["seeds_needed_mde"]
            if sm["t_refined"] is None:
                lines.append(f"- Seed pairs needed at MDE {_f(pw['mde_pp'])} pp: "
                             f"{sm.get('note')}.")
            else:
                lines.append(f"- Seed pairs needed at MDE {_f(pw['mde_pp'])} pp: "
                             f"**{sm.get('planned')}** (planned with the {level} upper bound "
                             f"of the SD, which delivers the promised power — docs/statistics.md"
                             f"; point estimate {sm['t_refined']}, closed form "
                             f"{sm['closed_form']}, {sm['t_refined_sd_upper80']} with the 80% "
                             "upper bound).")
    else:
        lines.append(f"- {pw.get('design')}.")
    gen = pw.get("generation_level")
    if gen:
        needed = (f"{gen['needed_per_arm_observed']} generations per arm at the observed "
                  "pooled difference" if gen["needed_per_arm_observed"] is not None else
                  "generations per arm at the observed pooled difference: "
                  + str(gen.get("needed_per_arm_observed_note")))
        lines.append(f"- Generation-level figure (seed document, for comparison): {needed}; "
                     f"detectable now ≈ {_f(gen['mde_pp_at_current'])} pp. {gen['note']}.")
    return lines


def _provenance_md(report: SignificanceReport) -> list[str]:
    """What was run, so the report stands alone: per arm LR, steps, model, task, pipeline
    and its parameters; the commit of the code."""
    prov = report.provenance
    if not prov:
        return []
    lines = ["## What was run", "",
             "| arm | pipeline | LR | steps | model | task | pipeline parameters |",
             "|---|---|---|---|---|---|---|"]
    for name, a in prov.get("arms", {}).items():
        params = a.get("pipeline_params")
        lines.append(f"| {name} | {_f(a.get('pipeline'))} | {_f(a.get('lr'))} | "
                     f"{_f(a.get('max_steps'))} | {_f(a.get('model'))} | {_f(a.get('task'))} | "
                     f"{'`' + str(params) + '`' if params else 'defaults'} |")
    git = prov.get("git")
    commit = (f"`{git['commit']}`" + (" (uncommitted changes)" if git.get("dirty") else "")
              if isinstance(git, dict) and git.get("commit") else "not recorded")
    version = (prov.get("versions") or {}).get("textpolicy")
    lines += ["", f"Code: textpolicy {version or '(version not recorded)'}, commit {commit}.",
              ""]
    return lines


def build_sepa_significance_markdown(report: SignificanceReport) -> str:
    """The significance report as Markdown (significance.md)."""
    lines = []
    if report.partial and report.dropped:
        lines += [f"**PARTIAL ANALYSIS — dropped {len(report.dropped)} run"
                  f"{'s' if len(report.dropped) != 1 else ''} that cannot be measured at the "
                  "planned endpoint: " + "; ".join(report.dropped)
                  + ". The recommendation below is partial.**", ""]
    elif report.partial:
        lines += ["Partial analysis requested (--partial); every run reached the planned "
                  "endpoint, nothing was dropped.", ""]
    lines += ["# Significance report", "",
             f"Baseline arm: `{report.baseline}`. Endpoint: {report.endpoint.description}. "
             f"α = {report.alpha:g}, {report.num_resamples} resamples, seed {report.seed}.", "",
             f"**Recommendation{' (PARTIAL)' if report.partial and report.dropped else ''}"
             f": `{report.recommendation}`**"
             + (THESE_RUNS if report.headline.scope == "these_runs" else "")
             + " (decided by the primary test alone; p and CI come from the same procedure).",
             ""]
    if report.headline.reason:
        lines += [f"No recommendation: {report.headline.reason}.", ""]
    lines += [f"Estimand: {report.headline.estimand}", ""]
    if report.lr_selection:
        lines += [f"**LR selection:** {report.lr_selection['statement']}", ""]
    if report.endpoint.kind == "training":
        lines += ["> The endpoint is on-policy training correctness (no held-out eval in "
                  "the plan). Treat the result as descriptive.", ""]
    for c in report.comparisons:
        if c.data.n_pairs == 1 or (len(c.data.base_values) == 1 and
                                   len(c.data.cand_values) == 1):
            lines += ["> One run per arm: the result is conditional on these two runs and "
                      "does not generalise over seeds.", ""]
            break
    lines += ["| arm | role | runs | seeds | endpoint mean (pp) | SD over runs (pp) |",
              "|---|---|---|---|---|---|"]
    for a in report.arms:
        lines.append(f"| {a['name']} | {a['role']} | {a['n_runs']} | {a['seeds']} | "
                     f"{_f(a['endpoint_mean_pp'])} | {_f(a['endpoint_sd_pp'])} |")
    lines.append("")
    for c in report.comparisons:
        lines += _comparison_md(c, report)
        lines.append("")
    lines += _provenance_md(report)
    if report.summaries:
        from textpolicy.analysis.summaries import markdown as summaries_markdown

        lines += summaries_markdown(report.summaries)
    lines += [f"_{GENERATION_LEVEL_NOTE}_", ""]
    if report.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in report.warnings] + [""]
    return "\n".join(lines)


#: comparison.md rows left out when they equal the correct rate in every arm (row → why)
_SAME_AS_CORRECT_RATE = {
    "mean_reward": "mean reward (the rewards are 0/1)",
    "final_running_correct_rate": "final running correct rate (the runs have equal lengths)",
}


def _equals_correct_rate(arms: list[dict[str, Any]], key: str) -> bool:
    pairs = [(a.get(key), a.get("correct_rate")) for a in arms]
    return any(v is not None for v, _ in pairs) and all(
        v is None or (c is not None and abs(v - c) <= 1e-9) for v, c in pairs)


def comparison_markdown(comparison: dict[str, Any]) -> str:
    """comparison.md: the seed document's per-arm metrics table, each row a distinct
    quantity (a row equal to the correct rate everywhere is named under the table instead)."""
    arms = comparison["arms"]
    heldout = next((a.get("heldout_step") for a in arms if a.get("heldout_step") is not None),
                   None)
    keys = [("runs", "runs"), ("steps", "steps"), ("generations", "total_generations"),
            ("correct", "correct_count"), ("correct rate", "correct_rate"),
            ("mean reward", "mean_reward"),
            ("final running correct rate", "final_running_correct_rate"),
            ("final SEPA λ", "final_sepa_lambda"), ("max-token hit rate", "max_token_hit_rate"),
            ("mean step time (s)", "mean_step_time_s"),
            ("held-out accuracy (endpoint" + (f", step {heldout})" if heldout is not None
                                              else ")"), "heldout_accuracy")]
    same = [key for key in _SAME_AS_CORRECT_RATE if _equals_correct_rate(arms, key)]
    no_lambda = all(a.get("uses_sepa_lambda") is False for a in arms)
    lines = ["# Comparison", "", "| metric | " + " | ".join(a["name"] for a in arms) + " |",
             "|---|" + "---|" * len(arms)]
    for label, key in keys:
        if key in same or (key == "final_sepa_lambda" and no_lambda):
            continue
        cells = ["n/a" if key == "final_sepa_lambda" and a.get("uses_sepa_lambda") is False
                 else _f(a.get(key), 4) for a in arms]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if same:
        lines += ["", "Equal to the correct rate in every arm, so not shown: "
                  + "; ".join(_SAME_AS_CORRECT_RATE[k] for k in same) + "."]
    if any(a.get("uses_sepa_lambda") is False for a in arms) and not no_lambda:
        lines += ["", "final SEPA λ: n/a for an arm whose pipeline has no SEPA stage."]
    lines.append("")
    for d in comparison.get("deltas", []):
        lines.append(f"- {d['candidate']} − {d['baseline']}: correct rate "
                     f"{_f(d.get('correct_rate_delta_pp'))} pp; held-out accuracy "
                     f"{_f(d.get('heldout_accuracy_delta_pp'))} pp")
    lines += ["", "Pooled training numbers are descriptive; see significance.md for inference.",
              ""]
    return "\n".join(lines)
