"""The primary test (seeds_prompts), its calibration for the seeds-and-prompts claim, and
insufficient_seeds below the minimum number of seed pairs."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from textpolicy.analysis import analyze_campaign, build_sepa_significance_markdown
from textpolicy.analysis.methods import seed_prompt_moments, seed_prompt_p, seed_prompt_t
from textpolicy.analysis.records import MIN_SEED_PAIRS
from textpolicy.analysis.synthetic import (
    SyntheticDesign,
    logit_effect_for,
    simulate_campaigns,
    simulate_eval_units,
    write_campaign,
)
from textpolicy.cli import main

SMALL = SyntheticDesign(steps=4, batch_size=2, group_size=2, eval_every=4, eval_prompts=30,
                        eval_samples=4, completion_chars=20, generations=False)


def test_mean_squares_equal_statsmodels_two_way_anova() -> None:
    import pandas as pd
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    rng = np.random.default_rng(4)
    d = rng.normal(size=(5, 12)) + rng.normal(size=(5, 1)) + 0.8 * rng.normal(size=(1, 12))
    res = seed_prompt_t(d, alpha=0.05)
    s, m = d.shape
    frame = pd.DataFrame({"y": d.ravel(), "seed": np.repeat(np.arange(s), m),
                          "prompt": np.tile(np.arange(m), s)})
    table = anova_lm(smf.ols("y ~ C(seed) + C(prompt)", data=frame).fit())
    assert res.ms_seed == pytest.approx(table.loc["C(seed)", "mean_sq"], rel=1e-10)
    assert res.ms_prompt == pytest.approx(table.loc["C(prompt)", "mean_sq"], rel=1e-10)
    assert res.ms_resid == pytest.approx(table.loc["Residual", "mean_sq"], rel=1e-10)
    assert not res.prompt_component_truncated
    v = (res.ms_seed + res.ms_prompt - res.ms_resid) / (s * m)
    assert res.se == pytest.approx(np.sqrt(v), rel=1e-12)
    df = (v * s * m) ** 2 / (res.ms_seed ** 2 / (s - 1) + res.ms_prompt ** 2 / (m - 1)
                             + res.ms_resid ** 2 / ((s - 1) * (m - 1)))
    assert res.df == pytest.approx(df, rel=1e-12)
    assert res.p_value == pytest.approx(2 * stats.t.sf(abs(d.mean()) / np.sqrt(v), df))
    half = stats.t.ppf(0.975, df) * np.sqrt(v)
    assert (res.ci_low, res.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))


def test_without_an_arm_by_prompt_term_it_is_the_paired_t() -> None:
    rng = np.random.default_rng(0)
    d = rng.normal(size=(6, 1)) + rng.normal(size=(6, 40))  # no prompt effect in the truth
    res = seed_prompt_t(d, alpha=0.05)
    if not res.prompt_component_truncated:  # remove the prompt means: MS_prompt = 0
        d = d - (d.mean(axis=0) - d.mean())[None, :]
        res = seed_prompt_t(d, alpha=0.05)
    assert res.prompt_component_truncated and res.var_prompt == 0.0
    ref = stats.ttest_1samp(d.mean(axis=1), 0.0)
    ci = ref.confidence_interval(0.95)
    assert res.df == 5 and res.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert (res.ci_low, res.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-12)
    same = seed_prompt_t(np.full((4, 10), 2.0), alpha=0.05)  # no variation: t undefined
    assert np.isnan(same.p_value) and np.isnan(same.se)


def _rates(seeds: int, tau: float, effect_pp: float, campaigns: int, rng: np.random.Generator
           ) -> tuple[float, float]:
    """Rejection rates at alpha 0.05 of (seeds_prompts, paired t) over simulated campaigns."""
    design = SyntheticDesign(eval_prompts=50, eval_samples=4, sigma_arm_prompt=tau)
    p0 = 1 / (1 + np.exp(-(design.base_logit + design.slope * design.steps)))
    b, c = simulate_campaigns(effect=logit_effect_for(effect_pp, float(p0)), seeds=seeds,
                              campaigns=campaigns, design=design, rng=rng)
    diff = (c - b) * 100
    prim = seed_prompt_p(diff)
    paired = stats.ttest_1samp(diff.mean(axis=2), 0.0, axis=1).pvalue
    return float(np.mean(prim < 0.05)), float(np.mean(paired < 0.05))


@pytest.mark.parametrize("seeds", [4, 8])
def test_primary_is_calibrated_for_the_seeds_and_prompts_claim(seeds: int) -> None:
    # a true null over seeds and the prompt population, with and without an arm x prompt
    # interaction (the arms differ prompt by prompt, not on average); the full grid
    # S in {4, 8, 16, 32} is benchmarks/primary_calibration.py (docs/statistics.md)
    rng = np.random.default_rng([11, seeds])
    fpr, fpr_paired = _rates(seeds, 0.0, 0.0, 2000, rng)
    fpr_int, fpr_paired_int = _rates(seeds, 0.6, 0.0, 2000, rng)
    power, power_paired = _rates(seeds, 0.0, 8.0, 2000, rng)
    print(f"S={seeds}: FPR {fpr:.3f} (paired t {fpr_paired:.3f}); with interaction "
          f"{fpr_int:.3f} (paired t {fpr_paired_int:.3f}); power {power:.3f} "
          f"(paired t {power_paired:.3f})")
    assert 0.03 <= fpr <= 0.07 and 0.03 <= fpr_int <= 0.07
    assert fpr_paired_int > 0.08  # the paired t treats the eval set as fixed
    assert abs(power - power_paired) <= 0.03 and power > 0.25


def test_the_file_simulator_and_the_vectorised_one_sample_the_same_model() -> None:
    # the calibration above uses simulate_campaigns (bulk draws); the runs written to disk
    # come from per-run streams (simulate_eval_units = what write_campaign writes). Same model:
    # the same laws of the baseline accuracy and of the seed, prompt (arm x prompt) and
    # residual mean squares of the difference matrix
    design = SyntheticDesign(steps=1, batch_size=1, group_size=1, eval_every=1, eval_prompts=40,
                             eval_samples=4, train_prompts=2, sigma_arm_prompt=0.6)
    arms = {"baseline": 0.0, "candidate": 0.0}
    base, diff = [], []
    for data_seed in range(300):
        u = simulate_eval_units(arms=arms, seeds=range(4), design=design, data_seed=data_seed)
        base.append(u["baseline"])
        diff.append((u["candidate"] - u["baseline"]) * 100)
    b, c = simulate_campaigns(effect=0.0, seeds=4, campaigns=3000, design=design,
                              rng=np.random.default_rng(1))
    files = seed_prompt_moments(np.stack(diff))
    bulk = seed_prompt_moments((c - b) * 100)
    for key in ("ms_seed", "ms_prompt", "ms_resid"):
        assert stats.ks_2samp(files[key], bulk[key]).pvalue > 0.01, key
    assert stats.ks_2samp(np.stack(base).mean(axis=(1, 2)), b.mean(axis=(1, 2))).pvalue > 0.01
    assert stats.kstest(seed_prompt_p(np.stack(diff)), "uniform").pvalue > 0.01
    # and the check has teeth: without the interaction the prompt mean square differs
    plain = seed_prompt_moments(np.subtract(*simulate_campaigns(
        effect=0.0, seeds=4, campaigns=3000, design=attrs.evolve(design, sigma_arm_prompt=0.0),
        rng=np.random.default_rng(2))[::-1]) * 100)
    assert stats.ks_2samp(files["ms_prompt"], plain["ms_prompt"]).pvalue < 1e-6


def test_primary_through_run_files_is_the_simulated_matrix(tmp_path: Path) -> None:
    design = SyntheticDesign(steps=4, batch_size=2, group_size=2, eval_every=4,
                             eval_prompts=25, eval_samples=4, generations=False,
                             sigma_arm_prompt=0.6)
    arms = {"baseline": 0.0, "candidate": 0.2}
    root = write_campaign(tmp_path / "c", arms=arms, seeds=range(5), design=design,
                          data_seed=3)
    report = analyze_campaign(root, num_resamples=200, plots=False)
    units = simulate_eval_units(arms=arms, seeds=range(5), design=design, data_seed=3)
    order = np.argsort([f"math500/{m}" for m in range(25)])  # the analysis sorts prompt ids
    expected = seed_prompt_t((units["candidate"] - units["baseline"])[:, order] * 100,
                             alpha=0.05)
    primary = report.to_dict()["primary"]
    assert primary["test"] == "seeds_prompts" and primary["n_pairs"] == 5
    assert primary["delta"] == pytest.approx(expected.estimate, abs=1e-12)
    assert primary["p_value"] == pytest.approx(expected.p_value, rel=1e-12)
    assert primary["ci_low"] == pytest.approx(expected.ci_low, rel=1e-12)
    assert "population of eval prompts" in primary["estimand"]
    assert primary["p_value_holm_adjusted"] is True and primary["min_seed_pairs"] == 4
    assert primary["sign_flip_can_reach_alpha"] is False  # 5 pairs: smallest p 0.0625
    paired = next(t for t in report.to_dict()["tests"] if t["name"] == "paired_seeds")
    assert "on this eval set" in paired["notes"]
    md = build_sepa_significance_markdown(report)
    assert "population of eval prompts" in md and "seeds_prompts" in md


def test_one_run_per_arm_is_insufficient_seeds(tmp_path: Path) -> None:
    # an A/A campaign with one seed per arm (run SD about 3.5 pp) whose prompt-level p is
    # 0.003: it used to read significant_* (19-73 % of such campaigns did)
    root = write_campaign(tmp_path / "one", arms={"baseline": 0.0, "candidate": 0.0},
                          seeds=[0], design=SyntheticDesign(sigma_seed=0.15, sigma_run=0.15),
                          data_seed=10)
    report = analyze_campaign(root, num_resamples=300, plots=False)
    data = json.loads((root / "analysis" / "significance.json").read_text())
    assert report.recommendation == data["recommendation"] == "insufficient_seeds"
    assert data["primary"]["p_value"] < 0.05  # the prompt-level p that used to decide
    assert f"at least {MIN_SEED_PAIRS} seed pairs" in data["recommendation_reason"]
    assert data["recommendation_reason"].startswith("1 seed pair:")
    md = (root / "analysis" / "significance.md").read_text()
    assert "`insufficient_seeds`" in md and data["recommendation_reason"] in md
    assert "Significant" not in md.split("## Warnings")[0].replace("not significant", "")


@pytest.mark.parametrize(("seeds", "expected"), [(3, "insufficient_seeds"),
                                                  (4, "significant_improvement")])
def test_minimum_seed_pairs_boundary(tmp_path: Path, seeds: int, expected: str) -> None:
    root = write_campaign(tmp_path / "c", arms={"baseline": 0.0, "candidate": 1.5},
                          seeds=range(seeds), design=SMALL)
    report = analyze_campaign(root, num_resamples=200, plots=False)
    assert report.recommendation == expected
    assert report.primary["p_value"] < 0.05  # a strong effect either way
    assert (report.to_dict()["recommendation_reason"] is None) == (seeds >= MIN_SEED_PAIRS)


def test_unpaired_runs_need_the_minimum_per_arm(tmp_path: Path) -> None:
    root = write_campaign(tmp_path / "u", arms={"baseline": 0.0, "candidate": 1.5},
                          seeds=range(3), design=SMALL)
    report = analyze_campaign(root, num_resamples=200, plots=False, paired=False)
    assert report.primary["test"] == "welch_runs"
    assert report.recommendation == "insufficient_seeds"
    assert (report.headline.reason or "").startswith("3 runs per arm:")
    assert f"at least {MIN_SEED_PAIRS} runs per arm" in (report.headline.reason or "")


def test_tp_campaign_warns_at_plan_time_about_one_seed(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["campaign", "--campaign-root", str(tmp_path / "c1"),
                               "--task", "arithmetic", "--engine", "local"])
    assert res.exit_code == 0, res.output
    assert (f"1 seed per arm; the analysis needs at least {MIN_SEED_PAIRS} paired seeds"
            in res.output)
    assert "insufficient_seeds" in res.output
    res = runner.invoke(main, ["campaign", "--campaign-root", str(tmp_path / "c4"),
                               "--task", "arithmetic", "--engine", "local", "--seeds", "0-3"])
    assert res.exit_code == 0, res.output
    assert "insufficient_seeds" not in res.output


def test_tp_run_warns_at_plan_time_about_one_seed(tmp_path: Path) -> None:
    spec = tmp_path / "camp.toml"
    spec.write_text(
        'kind = "campaign"\nname = "one"\nseeds = [0]\n'
        f'output = "{tmp_path / "out"}"\n'
        '[task]\nname = "arithmetic"\n[engine]\nname = "local"\n'
        '[[arms]]\nname = "baseline"\npipeline = "grpo"\n'
        '[[arms]]\nname = "candidate"\npipeline = "full"\n', encoding="utf-8")
    res = CliRunner().invoke(main, ["run", str(spec), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "1 seed per arm" in res.output and "insufficient_seeds" in res.output


# ---- the endpoint is the plan's -------------------------------------------------------------
PLANNED = SyntheticDesign(steps=8, batch_size=2, group_size=2, eval_every=4, eval_prompts=30,
                          eval_samples=4, completion_chars=20, generations=False)


def _campaign(tmp_path: Path, seeds: int = 5) -> Path:
    root = write_campaign(tmp_path / "camp", arms={"baseline": 0.0, "candidate": 0.5},
                          seeds=range(seeds), design=PLANNED)
    manifest = json.loads((root / "manifest.json").read_text())
    for arm in manifest["arms"]:  # the runner records each run's resuming command
        for run in arm["runs"]:
            run["command"] = f"tp train --seed {run['seed']} --log-dir {run['log_dir']}"
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def _keep_rows(path: Path, keep: object) -> None:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows if keep(r)))  # type: ignore[operator]


def _stop_early(run: Path, at: int) -> None:
    """The run was interrupted after ``at`` training steps (its files cut as on resume)."""
    for name in ("metrics.jsonl", "emergence/steps.jsonl"):
        _keep_rows(run / name, lambda r: r["step"] < at)
    _keep_rows(run / "eval.jsonl", lambda r: r["step"] <= at)


def test_incomplete_runs_stop_the_analysis_with_one_line_each(tmp_path: Path) -> None:
    root = _campaign(tmp_path)
    analyze_campaign(root, num_resamples=200, plots=False)  # a complete earlier analysis
    before = (root / "analysis" / "significance.json").read_text()
    (root / "candidate" / "seed1" / "eval.jsonl").unlink()  # 1 of 10 runs lost its eval
    _stop_early(root / "candidate" / "seed3", 4)  # stopped at step 4 of 8
    _keep_rows(root / "baseline" / "seed4" / "eval.jsonl",  # final eval on 20 of 30 prompts
               lambda r: r["step"] < 8 or int(r["prompt_id"].split("/")[1]) < 20)
    res = CliRunner().invoke(main, ["analyze", str(root), "--resamples", "200", "--no-plots"])
    assert res.exit_code == 3, res.output
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith("Error: the planned endpoint (held-out pass@1 at the planned "
                               "final eval step 8) cannot be measured in 3 of 10 runs")
    assert len(lines) == 4
    by_run = {x.split(": ")[0].strip(): x for x in lines[1:]}
    seed1 = by_run[str(root / "candidate" / "seed1")]
    assert "no held-out eval (eval.jsonl missing or empty" in seed1
    assert f"resume: cd {root} && tp train --seed 1 --log-dir candidate/seed1" in seed1
    seed3 = by_run[str(root / "candidate" / "seed3")]
    assert ("no eval at the planned final step 8 (last eval at step 4); training reached "
            "step 4 of 8") in seed3
    assert "covers 20 of the 30 test prompts" in by_run[str(root / "baseline" / "seed4")]
    # nothing written before is lost, nothing half-written
    assert (root / "analysis" / "significance.json").read_text() == before


def test_partial_drops_incomplete_runs_and_their_partners_and_says_so(tmp_path: Path) -> None:
    root = _campaign(tmp_path, seeds=6)
    _stop_early(root / "candidate" / "seed3", 4)
    report = analyze_campaign(root, num_resamples=200, plots=False, partial=True)
    data = json.loads((root / "analysis" / "significance.json").read_text())
    assert data["recommendation_partial"] is True
    assert data["primary"]["n_pairs"] == 5 and data["endpoint"]["step"] == 8
    assert data["endpoint"]["n_prompts"] == 30
    assert [d.split(":")[0] for d in data["dropped_runs"]] == [
        str(root / "candidate" / "seed3"), str(root / "baseline" / "seed3")]
    md = (root / "analysis" / "significance.md").read_text()
    first = md.splitlines()[0]
    assert first.startswith("**PARTIAL ANALYSIS — dropped 2 runs")
    assert "candidate/seed3" in first and "partial" in first.split(". ")[-1]
    assert f"**Recommendation (PARTIAL): `{report.recommendation}`**" in md


def test_runs_planned_differently_are_one_clear_error(tmp_path: Path) -> None:
    root = _campaign(tmp_path, seeds=4)
    cfg_path = root / "candidate" / "seed0" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["config"]["max_steps"] = 12
    cfg_path.write_text(json.dumps(cfg))
    res = CliRunner().invoke(main, ["analyze", str(root), "--no-plots"])
    assert res.exit_code == 1 and len(res.stderr.strip().splitlines()) == 1
    assert "planned with different max_steps 8 in" in res.stderr and "12 in" in res.stderr


def test_a_truncated_metrics_file_is_a_warning_in_the_report(tmp_path: Path) -> None:
    root = _campaign(tmp_path, seeds=4)
    path = root / "baseline" / "seed2" / "metrics.jsonl"
    path.write_text(path.read_text() + '{"step": 8, "loss": 0.')  # a writer killed mid-row
    with pytest.warns(UserWarning, match="incomplete"):
        analyze_campaign(root, num_resamples=200, plots=False)
    data = json.loads((root / "analysis" / "significance.json").read_text())
    assert any("metrics.jsonl: last line" in w and "truncated" in w for w in data["warnings"])
    md = (root / "analysis" / "significance.md").read_text()
    assert "## Warnings" in md and "metrics.jsonl: last line" in md


def test_significance_md_stands_alone(tmp_path: Path) -> None:
    root = _campaign(tmp_path, seeds=4)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["git"] = {"commit": "0123abc", "dirty": False}
    (root / "manifest.json").write_text(json.dumps(manifest))
    report = analyze_campaign(root, num_resamples=200, plots=False)
    md = build_sepa_significance_markdown(report)
    assert "## What was run" in md and "commit `0123abc`" in md
    row = next(x for x in md.splitlines() if x.startswith("| candidate | full |"))
    assert "| 4e-05 |" in row and "| 8 |" in row and "synthetic" in row
    prov = report.to_dict()["provenance"]
    assert prov["arms"]["baseline"]["lr"] == 4e-5 and prov["git"]["commit"] == "0123abc"


# ---- wording -----------------------------------------------------------------------------
def test_plots_say_what_their_bands_and_titles_are(tmp_path: Path) -> None:
    from textpolicy.analysis.plots import forest_figure, learning_figure

    root = _campaign(tmp_path, seeds=4)
    report = analyze_campaign(root, num_resamples=200, plots=False)
    fig = learning_figure(report)
    ax = fig.axes[0]
    assert "95% t CI of the mean over seeds" in ax.get_title()
    # the baseline band at the last step is the t interval of the four runs' accuracies
    ys = np.array([report.values[r].curve[-1] for r in report.runs["baseline"]]) * 100
    half = stats.t.ppf(0.975, 3) * ys.std(ddof=1) / 2
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert np.isclose(band, ys.mean() + half).any() and np.isclose(band, ys.mean() - half).any()
    title = forest_figure(report).axes[0].get_title()
    assert title.startswith("Candidate − baseline: held-out pass@1 at step 8, 30 test prompts")
    assert "heldout_pass@1@step" not in title


def test_headline_ci_level_matches_its_text_and_tables_say_holm(tmp_path: Path) -> None:
    root = write_campaign(tmp_path / "m", arms={"grpo": 0.0, "full": 0.9, "maxrl": 0.1},
                          seeds=range(5), design=PLANNED)
    report = analyze_campaign(root, num_resamples=200, plots=False)
    md = build_sepa_significance_markdown(report)
    for c in report.comparisons:
        level = f"{100 * c.ci_level:.4g}%"
        assert f"{level} CI from the same t" in c.primary.notes  # the notes name its level
        row = c.test(c.primary.name)  # and the per-test table shows the same interval
        assert row is not None and (row.ci_low, row.notes) == (c.primary.ci_low,
                                                               c.primary.notes)
        assert f"{level} CI [" in md
    assert "Holm-adjusted over 2 candidates" in md and "| p (unadjusted) |" in md


def test_odds_ratio_ci_excluding_one_beside_not_significant_is_explained(tmp_path: Path
                                                                         ) -> None:
    # big eval sets make the pooled OR CI narrow; 4 seeds with run-level noise keep the
    # seed-level test not significant
    design = SyntheticDesign(steps=4, batch_size=2, group_size=2, eval_every=4,
                             eval_prompts=400, eval_samples=8, completion_chars=20,
                             generations=False, sigma_run=0.5, sigma_seed=0.0)
    for data_seed in range(20):
        root = write_campaign(tmp_path / f"or{data_seed}", arms={"baseline": 0.0,
                                                                 "candidate": 0.15},
                              seeds=range(4), design=design, data_seed=data_seed)
        report = analyze_campaign(root, num_resamples=200, plots=False)
        orr = report.headline.effect_sizes["odds_ratio_conditional"]
        if report.recommendation == "not_significant" and (orr["ci_low"] > 1
                                                           or orr["ci_high"] < 1):
            break
    else:
        pytest.fail("no campaign with a not-significant verdict and an OR CI excluding 1")
    md = build_sepa_significance_markdown(report)
    assert "That odds-ratio CI excludes 1 while the verdict is not significant" in md
    assert "does not contradict the verdict" in md


def test_too_few_pairs_for_the_sign_flip_to_reach_alpha_is_said(tmp_path: Path) -> None:
    root = _campaign(tmp_path, seeds=4)
    md = build_sepa_significance_markdown(analyze_campaign(root, num_resamples=200,
                                                           plots=False))
    assert ("With 4 seed pairs the exact sign-flip test cannot reach α = 0.05 (its smallest "
            "two-sided p is 2/2^4 = 0.125)") in md
    root6 = _campaign(tmp_path / "six", seeds=6)
    md6 = build_sepa_significance_markdown(analyze_campaign(root6, num_resamples=200,
                                                            plots=False))
    assert "cannot reach" not in md6
