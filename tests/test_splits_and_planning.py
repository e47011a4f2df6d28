"""Issue 10 items 2, 5, 7: LR selection on a validation split that never leaks into the verdict,
plans that deliver the power they promise, and the summaries the field expects."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from textpolicy.cli import main
from textpolicy.errors import ConfigError
from textpolicy.runner.results import iter_jsonl
from textpolicy.runner.toml_out import dumps
from textpolicy.tasks.arithmetic import ArithmeticTask
from textpolicy.tasks.base import held_out_examples

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MATH_DATA = Path("/work/shared/data/math")


# ---------------------------------------------------------------------- item 2: splits
def test_arithmetic_has_three_fixed_disjoint_splits() -> None:
    task = ArithmeticTask()
    train = {e.id for e in task.train_examples(seed=3)}
    val = [e.id for e in task.eval_examples(split="validation")]
    test = [e.id for e in task.eval_examples(split="test")]
    assert (len(train), len(val), len(test)) == (50, 20, 30)
    assert not train & set(val) and not train & set(test) and not set(val) & set(test)
    assert len(train | set(val) | set(test)) == 100
    assert test == [e.id for e in task.eval_examples()]  # the default is the test split
    assert val == [e.id for e in ArithmeticTask().eval_examples(split="validation")]
    assert "arith/3+4" in test  # pinned: the quickstart's endpoint prompts did not move
    fp = task.fingerprint()
    assert fp["num_validation"] == 20 and fp["validation_ids_sha256"] != fp["eval_ids_sha256"]
    with pytest.raises(ConfigError, match="allowed: validation, test"):
        task.eval_examples(split="train")


class _TestOnlyTask:
    """A plugin task written before splits: ``eval_examples`` takes no ``split``."""

    name = "legacy"

    def eval_examples(self, limit: int | None = None) -> list[Any]:
        return ["a", "b", "c"][:limit]


def test_a_task_without_a_validation_split_refuses_to_select_on_it() -> None:
    legacy: Any = _TestOnlyTask()
    assert held_out_examples(legacy, "test", 2) == ["a", "b"]
    with pytest.raises(ConfigError, match=r"task 'legacy' has no validation split.*"
                                          r"\[sweep\] split = 'test'"):
        held_out_examples(legacy, "validation")


@pytest.fixture(scope="module")
def math_task() -> Iterator[Any]:
    from textpolicy.tasks.math import MathParams, MathTask

    if not (MATH_DATA / "math500_test.jsonl").is_file():
        pytest.skip("shared MATH data not available")
    task = MathTask(MathParams(
        train_files=(str(MATH_DATA / "math_train.jsonl"), str(MATH_DATA / "math_test.jsonl")),
        eval_files=str(MATH_DATA / "math500_test.jsonl"), subjects="all", grader_workers=1))
    yield task
    task.close()


def test_math_validation_is_carved_from_train_minus_math500(math_task: Any) -> None:
    from textpolicy.tasks.math import MathParams, _carve_validation, _norm_problem

    test = math_task.eval_examples()
    val = math_task.eval_examples(split="validation")
    train = math_task.train_examples(0)
    assert len(test) == 500 and len(val) == 500
    assert len(train) + len(val) + math_task.excluded_eval_overlap == 12500 - sum(
        math_task.rejected_gold.values())
    test_ids, val_ids = {e.id for e in test}, {e.id for e in val}
    train_ids = {e.id for e in train}
    assert not val_ids & test_ids and not val_ids & train_ids and not train_ids & test_ids
    texts = {_norm_problem(e.prompt) for e in test}
    assert not texts & {_norm_problem(e.prompt) for e in val}
    # the rule: the smallest sha256(f"{seed}:{id}") of the pool outside MATH-500
    pool = sorted([*train, *val], key=lambda e: e.id)
    rest, carved = _carve_validation(pool, test, 500, 0)
    assert [e.id for e in carved] == [e.id for e in val]
    assert {e.id for e in rest} == train_ids
    _, other = _carve_validation(pool, test, 500, 1)
    assert {e.id for e in other} != val_ids
    assert MathParams().validation_size is None  # default: 500 (a tenth of a small pool)
    desc = math_task.describe()
    assert desc["validation_size"] == 500 and "sha256('0:' + id)" in desc["split"]


def _tiny_experiment(tmp_path: Path, **sweep: Any) -> dict[str, Any]:
    raw = tomllib.loads((EXAMPLES / "quickstart.toml").read_text())
    raw["output"] = str(tmp_path / "exp")
    raw["seeds"] = [0, 1]
    raw["training"].update(max_steps=2)
    raw["eval"] = {"every": 2, "samples": 2}
    raw["sweep"].update({"lr_values": [1e-3], "probe_steps": 2, "seeds": [1000], **sweep})
    raw["analysis"] = {"resamples": 200}
    raw["stage_params"]["sepa"] = {"ramp_steps": 2, "delay_steps": 0}
    return raw


def _run_spec(tmp_path: Path, raw: dict[str, Any], name: str = "spec.toml",
              *extra: str) -> Any:
    path = tmp_path / name
    path.write_text(dumps(raw))
    return CliRunner().invoke(main, ["run", str(path), "--progress", "off", *extra])


def test_quickstart_sweep_selects_on_validation_and_campaign_is_independent(
        tmp_path: Path) -> None:
    # the quickstart itself: the sweep's seeds are disjoint from the campaign's
    quick = tomllib.loads((EXAMPLES / "quickstart.toml").read_text())
    assert not set(quick["sweep"]["seeds"]) & set(quick["seeds"])
    assert quick["sweep"]["split"] == "validation"
    result = _run_spec(tmp_path, _tiny_experiment(tmp_path))
    assert result.exit_code == 0, result.output
    assert "(chosen on 20 validation prompts, sweep seeds 1000)" in result.output
    exp = tmp_path / "exp"
    task = ArithmeticTask()
    val_ids = {e.id for e in task.eval_examples(split="validation")}
    test_ids = {e.id for e in task.eval_examples()}
    probe = exp / "sweep" / "grpo_lr1e-03"
    assert {r["prompt_id"] for r in iter_jsonl(probe / "eval.jsonl")} == val_ids
    assert json.loads((probe / "config.json").read_text())["config"]["eval_split"] == \
        "validation"
    script = (exp / "sweep" / "run_commands.sh").read_text()
    assert "--eval-split validation" in script
    # the probe's tp train command reproduces its config (eval split included)
    import shlex

    line = next(ln for ln in script.splitlines() if ln.startswith("tp train"))
    argv = shlex.split(line)[1:]
    argv[argv.index("--log-dir") + 1] = str(probe)
    again = CliRunner().invoke(main, argv)
    assert again.exit_code == 0 and "run already complete at step 2" in again.output, \
        again.output
    argv[argv.index("--eval-split") + 1] = "test"
    other = CliRunner().invoke(main, argv)
    assert other.exit_code == 2 and "eval_split: 'validation' -> 'test'" in other.output
    for arm in ("grpo", "full"):
        run = exp / "campaign" / arm / "seed1"
        assert {r["prompt_id"] for r in iter_jsonl(run / "eval.jsonl")} == test_ids
    results = json.loads((exp / "sweep" / "sweep_results.json").read_text())
    sel = results["selection"]
    assert (sel["split"], sel["seeds"], sel["n_prompts"]) == ("validation", [1000], 20)
    assert set(sel["prompt_ids"]) == val_ids
    manifest = json.loads((exp / "campaign" / "manifest.json").read_text())
    assert manifest["lr_selection"]["split"] == "validation"
    assert manifest["lr_selection"]["sweep_results"].endswith("sweep_results.json")
    sig = json.loads((exp / "campaign" / "analysis" / "significance.json").read_text())
    lr = sig["lr_selection"]
    assert lr["independent"] is True and lr["seed_overlap"] == [] and lr["prompt_overlap"] == 0
    md = (exp / "campaign" / "analysis" / "significance.md").read_text()
    assert ("**LR selection:** LRs chosen by validation accuracy over 20 prompts at probe step "
            "2, sweep seeds 1000: disjoint from this campaign's seeds and test prompts") in md
    # the sweep's campaign.toml names the sweep: a campaign run from it records the selection
    campaign_spec = exp / "sweep" / "campaign.toml"
    spec = tomllib.loads(campaign_spec.read_text())
    assert spec["lr_sweep"].endswith("sweep_results.json")
    assert not set(spec["seeds"]) & {1000}
    spec["output"] = str(tmp_path / "again")
    dry = _run_spec(tmp_path, spec, "again.toml", "--dry-run")
    assert dry.exit_code == 0, dry.output
    again = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert again["lr_selection"]["seeds"] == [1000]
    # so does the printed `tp campaign` command
    import shlex

    line = next(ln.strip() for ln in result.output.splitlines()
                if ln.strip().startswith("tp campaign"))
    argv = [a for a in shlex.split(line)[1:] if a != "--execute"]
    assert "--lr-sweep" in argv
    dry = CliRunner().invoke(main, [*argv, "--campaign-root", str(tmp_path / "cmd")])
    assert dry.exit_code == 0, dry.output
    cmd = json.loads((tmp_path / "cmd" / "manifest.json").read_text())
    assert cmd["lr_selection"]["split"] == "validation"


def test_a_campaign_that_overlaps_its_sweep_says_so(tmp_path: Path) -> None:
    from textpolicy.analysis import analyze_campaign
    from textpolicy.analysis.synthetic import SyntheticDesign, write_campaign
    from textpolicy.runner.campaign import seed_overlap_note
    from textpolicy.runner.spec import load_spec

    design = SyntheticDesign(steps=4, eval_every=4, eval_prompts=12, eval_samples=2,
                             generations=False)
    root = write_campaign(tmp_path / "c", arms={"grpo": 0.0, "full": 0.2}, seeds=range(4),
                          design=design)
    manifest = json.loads((root / "manifest.json").read_text())
    for arm in manifest["arms"]:
        arm["lr_source"] = "sweep"
    # LRs chosen on 5 of the endpoint prompts by probes at campaign seeds 0 and 1
    selection = {"metric": "eval_accuracy", "split": "test", "seeds": [0, 1, 1000],
                 "probe_steps": 20, "n_prompts": 5,
                 "prompt_ids": [f"math500/{i}" for i in range(5)]}
    manifest["lr_selection"] = selection
    (root / "manifest.json").write_text(json.dumps(manifest))
    report = analyze_campaign(root, num_resamples=200, plots=False)
    lr = report.to_dict()["lr_selection"]
    assert lr["independent"] is False and lr["seed_overlap"] == [0, 1]
    assert lr["prompt_overlap"] == 5 and lr["split"] == "test"
    md = (root / "analysis" / "significance.md").read_text()
    assert ("**LR selection:** LRs chosen by test accuracy over 5 prompts at probe step 20, "
            "sweep seeds 0, 1, 1000. Overlap with this campaign: campaign seeds 0, 1 were also "
            "sweep seeds (those runs replay probes at the chosen LR); 5 of the 12 endpoint "
            "prompts took part in choosing the LRs: the verdict is not independent of the LR "
            "choice.") in md
    # a manifest from before selections were recorded: unknown, never "independent"
    del manifest["lr_selection"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    lr = analyze_campaign(root, num_resamples=200, plots=False).to_dict()["lr_selection"]
    assert lr["independent"] is False and "split and seeds are not recorded" in lr["statement"]
    # LRs fixed in the spec: nothing to say
    for arm in manifest["arms"]:
        arm["lr_source"] = "arm"
    (root / "manifest.json").write_text(json.dumps(manifest))
    assert analyze_campaign(root, num_resamples=200, plots=False).lr_selection is None
    # the runner says so at plan time too
    spec = load_spec({"kind": "campaign", "seeds": [0, 1, 2]}, resolve=False)
    assert seed_overlap_note(spec, selection) == (
        "note: campaign seeds 0, 1 were also seeds of the sweep that chose the LRs: those runs "
        "replay its probes, and the report says so")
    assert seed_overlap_note(spec, {"seeds": [1000]}) is None


def test_overlapping_seeds_need_an_explicit_key(tmp_path: Path) -> None:
    raw = _tiny_experiment(tmp_path, seeds=[1, 1000])
    result = _run_spec(tmp_path, raw, "bad.toml", "--dry-run")
    assert result.exit_code == 2
    assert ("sweep.seeds: [1, 1000]: 1 is also campaign seed: a campaign run would replay a "
            "probe and the LR choice would leak into the verdict; allowed: seeds disjoint from "
            "seeds (default [1000]), or sweep.share_seeds = true to reuse them knowingly"
            ) in result.output
    assert "Traceback" not in result.output and not (tmp_path / "exp").exists()
    raw = _tiny_experiment(tmp_path, split="train")
    result = _run_spec(tmp_path, raw, "bad2.toml", "--dry-run")
    assert result.exit_code == 2 and "sweep.split: 'train': not allowed" in result.output
    camp = {"kind": "campaign", "seeds": [0, 1], "lr_sweep": str(tmp_path / "nowhere"),
            "output": str(tmp_path / "c")}
    result = _run_spec(tmp_path, camp, "bad3.toml", "--dry-run")
    assert result.exit_code == 2
    assert "lr_sweep: " in result.output and "no sweep_results.json there" in result.output


def test_a_plain_sweep_recommends_campaign_seeds_no_probe_used(tmp_path: Path) -> None:
    from textpolicy.runner.sweep import recommended_seeds

    assert recommended_seeds([1000]) == (0, 1, 2, 3)
    assert recommended_seeds([0, 2]) == (1, 3, 4, 5)


# ---------------------------------------------------------------------- item 5: planning
def _realised(sigma: float, planned: Any) -> Any:
    """True power (2 pp, paired t) of campaigns with ``planned`` pairs when SD(D) = sigma."""
    import numpy as np

    from textpolicy.analysis import power as pw

    levels, index = np.unique(planned, return_inverse=True)
    return np.array([pw.paired_t_power(2.0 / sigma, int(n)) for n in levels])[index]


def test_plans_from_a_4_pair_pilot_deliver_the_power_they_promise() -> None:
    import numpy as np

    from textpolicy.analysis import power as pw

    rng = np.random.default_rng(11)
    chi = rng.chisquare(3, 4000) / 3  # SD of 4-pair pilots, relative to the true SD
    for n_star in (8, 24):
        es = pw.t_mde(1.0, n_star)
        assert es is not None
        sigma = 2.0 / es  # the true SD(D) at which n* pairs give 80 %
        sds = sigma * np.sqrt(chi)
        factor = pw.sd_upper(1.0, 4, level=pw.PLANNING_LEVEL)
        planned = pw.t_seeds_many(sds * factor, 2.0)
        assert list(planned[:3]) == [pw.planned_seeds(float(x), 4, 2.0) for x in sds[:3]]
        real = _realised(sigma, planned)
        assert real.mean() >= 0.78 and (real >= 0.7).mean() >= 0.75, (n_star, real.mean())
        # the point estimate, the old headline, does not deliver
        point = _realised(sigma, pw.t_seeds_many(sds, 2.0))
        assert point.mean() < 0.74 and (point >= 0.7).mean() < 0.62


def _pilot(tmp_path: Path, eval_rho: float) -> Path:
    from textpolicy.analysis.synthetic import SyntheticDesign, write_campaign

    design = SyntheticDesign(steps=4, eval_every=4, eval_prompts=120, eval_samples=4,
                             sigma_int=0.6, generations=False, eval_rho=eval_rho)
    return write_campaign(tmp_path / f"pilot{eval_rho}", arms={"baseline": 0.0,
                                                                "candidate": 0.1},
                          seeds=range(6), design=design)


def test_tp_power_accounts_for_the_shared_eval_sampling_seeds(tmp_path: Path) -> None:
    import numpy as np

    from textpolicy.analysis import power as pw
    from textpolicy.analysis.planning import pilot_inputs, plan_table
    from textpolicy.analysis.report import evaluate_significance

    root = _pilot(tmp_path, 0.8)
    inputs = pilot_inputs(root, mde_pp=2.0)
    vc = inputs.pilot["variance_components"]
    assert vc["sampling_source"].startswith("matched samples")
    assert 0.55 < inputs.rho_eval < 0.95 and inputs.sigma_int_pp > 0
    plan = plan_table(inputs, seeds=[6], eval_prompts=[120], eval_samples=[4], steps=[4],
                      batch_size=4, group_size=8)
    observed = inputs.pilot["sd_pair_diff_pp"]
    assert plan["rows"][0]["sd_pair_diff_pp"] == pytest.approx(observed, rel=1e-6)
    # assuming independent eval samples (the old decomposition) overstates SD(D) here
    runs = {"baseline": sorted((root / "baseline").iterdir()),
            "candidate": sorted((root / "candidate").iterdir())}
    data = evaluate_significance(runs, num_resamples=200).comparisons[0].data
    naive = pw.variance_components(data.base_units, data.cand_units, 4)
    assert naive.sigma_int == 0.0 and 100 * np.sqrt(naive.project(4, 120)) > observed * 1.05
    # the headline plan from the pilot is the upper-bound figure, labelled as such
    needed = plan["seeds_needed"][0]
    assert needed["seeds_planned"] == pw.planned_seeds(needed["sd_pair_diff_pp"], 6, 2.0)
    assert needed["seeds_planned"] > needed["seeds_t"]
    assert needed["planned_with"] == ("the 70% upper confidence bound of the SD estimated "
                                      "from 6 pilot pairs")
    out = CliRunner().invoke(main, ["power", "--pilot", str(root), "--eval-prompts", "120",
                                    "--seeds", "6", "--sims", "0"])
    assert out.exit_code == 0, out.output
    assert f"M=120, K=4: {needed['seeds_planned']} seed pairs for 80% power at 2 pp, planned " \
           "with the 70% upper confidence bound of the SD estimated from 6 pilot pairs " \
           f"(point estimate {needed['seeds_t']};" in out.output
    assert f"ρ_eval {inputs.rho_eval:.2f}" in out.output
    # flags: --eval-rho shrinks the sampling term, and the simulator models it
    flags = CliRunner().invoke(main, ["power", "--eval-rho", "0.6", "--seeds", "8",
                                      "--eval-prompts", "50", "--sims", "300", "--json"])
    assert flags.exit_code == 0, flags.output
    row = json.loads(flags.output)["rows"][0]
    assert row["sd_pair_diff_pp"] == pytest.approx(100 * np.sqrt(
        2 * 0.01 ** 2 + 2 * (0.14 ** 2 + 0.4 * 0.15 / 4) / 50), rel=1e-9)
    assert abs(row["power_sim"] - row["power_t"]) < 0.1
    bad = CliRunner().invoke(main, ["power", "--eval-rho", "1.5"])
    assert bad.exit_code == 2 and "--eval-rho must lie in [0, 1), got 1.5" in bad.output


def test_the_report_labels_post_hoc_power_and_leads_with_the_planned_figure(
        tmp_path: Path) -> None:
    from textpolicy.analysis import analyze_campaign
    from textpolicy.analysis import power as pw

    root = _pilot(tmp_path, 0.0)
    report = analyze_campaign(root, num_resamples=200, mde=2.0, plots=False)
    p = report.to_dict()["power"]
    assert p["power_at_observed_label"].startswith("descriptive (post hoc)")
    sm = p["seeds_needed_mde"]
    assert sm["planned"] == pw.planned_seeds(p["sd_pair_diff_pp"], 6, 2.0) > sm["t_refined"]
    md = (root / "analysis" / "significance.md").read_text()
    assert (f"- Seed pairs needed at MDE 2.000 pp: **{sm['planned']}** (planned with the 70% "
            "upper bound of the SD, which delivers the promised power") in md
    assert "— descriptive (post hoc): a function of the p value, not a planning figure." in md


# ---------------------------------------------------------------------- item 7: summaries
def test_summary_statistics_match_scipy_and_statsmodels() -> None:
    import numpy as np
    from scipy import stats
    from statsmodels.stats.weightstats import ttost_paired

    from textpolicy.analysis import summaries as sm

    for k, n in ((0, 4), (3, 8), (7, 7), (5, 13)):
        ci = stats.binomtest(k, n).proportion_ci(method="wilson")
        assert sm.wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)
    x = np.array([5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 100.0])
    assert sm.iqm(x) == pytest.approx(np.mean(np.sort(x)[2:6]))
    arm = sm.arm_summary("a", x / 100, alpha=0.05)
    ci = stats.ttest_1samp(x, 0).confidence_interval(0.95)
    assert (arm["ci_low"], arm["ci_high"]) == pytest.approx((ci.low, ci.high))
    rng = np.random.default_rng(3)
    base, cand = rng.normal(40, 2, 10), rng.normal(40.5, 2, 10)
    m = sm.margin_tests(cand - base, 2.0, alpha=0.05)
    p_tost = ttost_paired(cand, base, -2.0, 2.0)[0]
    assert m["equivalence_p"] == pytest.approx(p_tost, rel=1e-9)
    assert m["non_inferiority_p"] == pytest.approx(
        stats.ttest_1samp(cand - base, -2.0, alternative="greater").pvalue)
    poi = sm.probability_of_improvement(np.array([1.0, -1.0, 0.0, 2.0]), alpha=0.05)
    assert poi["estimate"] == 0.625 and poi["ci_low"] < 0.625 < poi["ci_high"]


def test_non_inferiority_holds_its_level_at_the_margin() -> None:
    import numpy as np

    from textpolicy.analysis import summaries as sm

    rng = np.random.default_rng(5)
    for n in (4, 16):
        d = rng.normal(-2.0, 3.0, size=(800, n))  # true Δ exactly at −margin
        tests = [sm.margin_tests(row, 2.0, alpha=0.05) for row in d]
        rejected = np.mean([t["non_inferiority_p"] < 0.05 for t in tests])
        assert 0.03 <= rejected <= 0.07, (n, rejected)
        # equivalence at the edge of the margin is claimed at most α of the time
        assert np.mean([t["equivalence_p"] < 0.05 for t in tests]) <= 0.07


def test_report_summaries_from_real_run_files(tmp_path: Path) -> None:
    import numpy as np

    from textpolicy.analysis import analyze_campaign
    from textpolicy.analysis.synthetic import SyntheticDesign, write_campaign

    subjects = ("algebra", "geometry", "number_theory")
    design = SyntheticDesign(steps=4, eval_every=4, eval_prompts=60, eval_samples=4,
                             generations=False, eval_subjects=subjects)
    root = write_campaign(tmp_path / "c", arms={"baseline": 0.0, "candidate": 0.3},
                          seeds=range(6), design=design)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["margin_pp"] = 2.0  # what a spec's [analysis] margin_pp puts there
    (root / "manifest.json").write_text(json.dumps(manifest))
    report = analyze_campaign(root, num_resamples=500, plots=False)
    out = report.to_dict()["summaries"]
    comp = report.comparisons[0]
    d = 100 * comp.data.pair_differences
    arms = {a["arm"]: a for a in out["arms"]}
    assert arms["baseline"]["mean_pp"] == pytest.approx(100 * comp.data.base_values.mean())
    assert arms["candidate"]["ci_low"] < arms["candidate"]["mean_pp"] < \
        arms["candidate"]["ci_high"]
    row = out["comparisons"][0]
    wins = float(np.sum(d > 0) + 0.5 * np.sum(d == 0)) / len(d)
    assert row["probability_of_improvement"]["estimate"] == pytest.approx(wins)
    # per subject: the three subjects' prompts, averaging back to the pooled difference
    per = {s["subject"]: s for s in row["per_subject"]}
    assert set(per) == set(subjects) and all(s["n_prompts"] == 20 for s in per.values())
    assert np.mean([s["delta_pp"] for s in per.values()]) == pytest.approx(d.mean())
    assert row["margin"]["margin_pp"] == 2.0
    assert row["margin"]["non_inferior"] == (row["margin"]["non_inferiority_p_holm"] < 0.05)
    md = (root / "analysis" / "significance.md").read_text()
    assert "## Summaries (secondary; the primary test decides)" in md
    assert "| subject | prompts | baseline (pp) | candidate (pp) | Δ (pp) | CI | p |" in md
    assert "- Margin 2 pp: **" in md and "TOST p = " in md
    assert report.recommendation == report.headline.recommendation  # the primary still decides
    # tp analyze --margin overrides the manifest; a bad margin is one line, exit 2
    cli = CliRunner().invoke(main, ["analyze", str(root), "--margin", "5", "--json",
                                    "--no-plots", "--resamples", "500"])
    assert cli.exit_code == 0, cli.output
    data = json.loads(cli.stdout)
    assert data["summaries"]["comparisons"][0]["margin"]["margin_pp"] == 5.0
    bad = CliRunner().invoke(main, ["analyze", str(root), "--margin", "-1"])
    assert bad.exit_code == 2
    assert "margin must be a positive number of percentage points, got -1.0" in bad.output


def test_margin_is_a_spec_key_recorded_in_the_manifest(tmp_path: Path) -> None:
    from textpolicy.runner.campaign import manifest_data
    from textpolicy.runner.plan import campaign_plan
    from textpolicy.runner.spec import load_spec

    spec = load_spec({"kind": "campaign", "seeds": [0, 1], "analysis": {"margin_pp": 1.5}})
    assert manifest_data(spec, campaign_plan(spec, tmp_path))["margin_pp"] == 1.5
    raw = {"kind": "campaign", "analysis": {"margin_pp": 0}, "output": str(tmp_path / "x")}
    result = _run_spec(tmp_path, raw, "m.toml", "--dry-run")
    assert result.exit_code == 2 and "analysis.margin_pp: 0: must be > 0" in result.output
