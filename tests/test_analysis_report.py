"""End to end: synthetic campaigns in the exact file formats → reports, plots, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from textpolicy.analysis import (
    analyze_campaign,
    build_sepa_significance_markdown,
    evaluate_sepa_significance,
    evaluate_significance,
)
from textpolicy.analysis.synthetic import SyntheticDesign, write_campaign
from textpolicy.cli import main

SMALL = SyntheticDesign(steps=6, batch_size=4, group_size=4, eval_every=3, eval_prompts=30,
                        eval_samples=4, completion_chars=40)
TEST_NAMES = {"seeds_prompts", "paired_seeds", "crossed_bootstrap", "welch_runs",
              "prompt_paired", "fisher", "bootstrap", "permutation"}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("camp")
    return write_campaign(root, arms={"baseline": 0.0, "candidate": 0.6}, seeds=range(5),
                          design=SMALL)


def test_significance_json_contract(campaign: Path, tmp_path: Path) -> None:
    report = analyze_campaign(campaign, num_resamples=500, mde=2.0, out_dir=tmp_path)
    data = json.loads((tmp_path / "significance.json").read_text())
    for key in ("alpha", "recommendation", "primary", "tests", "power", "arms"):
        assert key in data
    assert data["alpha"] == 0.05
    assert data["recommendation"] in {"significant_improvement", "not_significant",
                                      "significant_regression"}
    assert set(data["primary"]) >= {"test", "endpoint", "delta", "ci_low", "ci_high",
                                    "p_value", "n_pairs"}
    assert data["primary"]["test"] == "seeds_prompts" and data["primary"]["n_pairs"] == 5
    assert data["primary"]["endpoint"] == "heldout_pass@1@step6"
    names = [t["name"] for t in data["tests"]]
    assert set(names) == TEST_NAMES and len(names) == len(set(names))
    for t in data["tests"]:
        assert set(t) >= {"name", "p_value", "delta", "ci_low", "ci_high", "unit", "notes"}
    # p and CI from the same procedure: the CI excludes 0 exactly when p < alpha
    p = data["primary"]
    assert (p["p_value"] < 0.05) == (p["ci_low"] > 0 or p["ci_high"] < 0)
    assert report.recommendation == data["recommendation"]
    assert data["power"]["seeds_needed_mde"]["t_refined"] >= 2
    assert data["power"]["generation_level"]["needed_per_arm_observed"] > 0
    assert [a["name"] for a in data["arms"]] == ["baseline", "candidate"]
    assert report.to_dict() == data
    for name in ("comparison.json", "comparison.md", "significance.md"):
        assert (tmp_path / name).stat().st_size > 0
    for png in ("learning_curves.png", "forest.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    comp = json.loads((tmp_path / "comparison.json").read_text())
    assert {a["name"] for a in comp["arms"]} == {"baseline", "candidate"}
    assert comp["arms"][0]["total_generations"] == 5 * 6 * 4 * 4


def test_recommendation_follows_primary_and_is_deterministic(campaign: Path) -> None:
    a = evaluate_sepa_significance(baseline_run_dirs=sorted((campaign / "baseline").iterdir()),
                                   candidate_run_dirs=sorted((campaign / "candidate").iterdir()),
                                   num_resamples=500, seed=3)
    b = evaluate_sepa_significance(baseline_run_dirs=sorted((campaign / "baseline").iterdir()),
                                   candidate_run_dirs=sorted((campaign / "candidate").iterdir()),
                                   num_resamples=500, seed=3)
    assert a.to_dict() == b.to_dict()
    p = a.primary
    expected = "not_significant"
    if p["p_value"] < 0.05:
        expected = "significant_improvement" if p["delta"] > 0 else "significant_regression"
    assert a.recommendation == expected
    md = build_sepa_significance_markdown(a)
    assert "Recommendation" in md and "seeds_prompts" in md and "paired_seeds" in md


def test_regression_and_null(tmp_path: Path) -> None:
    root = write_campaign(tmp_path / "reg", arms={"baseline": 0.0, "candidate": -1.0},
                          seeds=range(6), design=SMALL)
    rep = analyze_campaign(root, num_resamples=300, plots=False)
    assert rep.recommendation == "significant_regression"
    root = write_campaign(tmp_path / "null", arms={"baseline": 0.0, "candidate": 0.0},
                          seeds=range(4), design=SMALL)
    assert analyze_campaign(root, num_resamples=300, plots=False).primary["delta"] is not None


def test_several_arms_are_holm_adjusted(tmp_path: Path) -> None:
    root = write_campaign(tmp_path / "multi", arms={"grpo": 0.0, "full": 0.8, "maxrl": 0.1},
                          seeds=range(5), design=SMALL)
    rep = analyze_campaign(root, num_resamples=300, plots=True)
    data = rep.to_dict()
    assert data["multiplicity"]["family_size"] == 2
    raw = sorted((c["primary"]["p_value_unadjusted"], c["primary"]["p_value"])
                 for c in data["comparisons"])
    assert raw[0][1] == pytest.approx(min(1.0, 2 * raw[0][0]))
    assert raw[1][1] == pytest.approx(max(raw[0][1], raw[1][0]))
    assert data["baseline"] == "grpo"
    assert data["candidate"] in {"full", "maxrl"}


def test_one_run_per_arm_seed_document_layout(tmp_path: Path) -> None:
    from textpolicy.analysis.synthetic import write_run

    write_run(tmp_path / "c" / "baseline", arm="baseline", seed=0, effect=0.0, design=SMALL)
    write_run(tmp_path / "c" / "candidate", arm="candidate", seed=0, effect=0.5, design=SMALL)
    rep = analyze_campaign(tmp_path / "c", num_resamples=300, plots=False)
    assert rep.primary["test"] == "prompt_paired"
    assert "does not generalise over seeds" in rep.primary["notes"]
    assert "does not generalise over seeds" in build_sepa_significance_markdown(rep)
    assert (tmp_path / "c" / "analysis" / "significance.json").exists()


def test_training_only_endpoint_is_labelled_and_non_binary_rewards(tmp_path: Path) -> None:
    design = SyntheticDesign(steps=5, batch_size=4, group_size=4, eval_every=0,
                             binary_rewards=False, completion_chars=20)
    root = write_campaign(tmp_path / "t", arms={"baseline": 0.0, "candidate": 0.3},
                          seeds=range(4), design=design)
    rep = analyze_campaign(root, num_resamples=300, plots=True)
    d = rep.to_dict()
    assert d["endpoint"]["kind"] == "training"
    assert "descriptive" in d["endpoint"]["description"]
    perm = next(t for t in d["tests"] if t["name"] == "permutation")
    assert perm["unit"] == "reward" and perm["p_value"] is not None
    assert "hypergeometric" in perm["notes"]  # rewards take 4 values: exact relabelling law


def test_cli_campaign_and_run_dirs(campaign: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["analyze", str(campaign), "--resamples", "300", "--json",
                               "--out", str(tmp_path / "o"), "--no-plots"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["primary"]["test"] == "seeds_prompts"
    assert (tmp_path / "o" / "significance.md").exists()
    args = ["analyze", "--resamples", "300", "--alpha", "0.1", "--seed", "1"]
    for s in range(3):
        args += ["--baseline", str(campaign / "baseline" / f"seed{s}"),
                 "--candidate", str(campaign / "candidate" / f"seed{s}")]
    res = runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "Significance report" in res.stdout and "α = 0.1" in res.stdout


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["analyze", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "Error:" in res.output and "Traceback" not in res.output
    res = runner.invoke(main, ["analyze"])
    assert res.exit_code == 2 and "Error:" in res.output
    res = runner.invoke(main, ["analyze", str(tmp_path), "--alpha", "2"])
    assert res.exit_code != 0 and "Error:" in res.output


def test_unknown_test_name_and_bad_settings(campaign: Path) -> None:
    from textpolicy.errors import ConfigError

    runs = sorted((campaign / "baseline").iterdir()), sorted((campaign / "candidate").iterdir())
    with pytest.raises(ConfigError, match="unknown significance test"):
        evaluate_significance(baseline_run_dirs=runs[0], candidate_run_dirs=runs[1],
                              tests=["fishr"])
    with pytest.raises(ConfigError, match="alpha"):
        evaluate_significance(baseline_run_dirs=runs[0], candidate_run_dirs=runs[1], alpha=0)
