"""Review findings: decision/CI agreement under Holm, degenerate differences, power wording."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from textpolicy.analysis import build_sepa_significance_markdown, evaluate_significance, methods

PROMPTS, SAMPLES = 10, 10  # 100 eval samples per run: accuracies in whole percentage points


def _run(path: Path, *, seed: int, correct: int | dict[int, int],
         train: tuple[int, int] = (40, 100), steps: tuple[int, ...] = (0,)) -> Path:
    """A run whose held-out accuracy at each eval step is ``correct`` % (an int: the same at
    every step; a dict: per step), spread over the prompts."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"seed": seed, "config": {}}))
    (path / "emergence").mkdir(exist_ok=True)
    (path / "emergence" / "steps.jsonl").write_text(json.dumps(
        {"step": 0, "mean_reward": train[0] / train[1], "correct_count": train[0],
         "total_count": train[1]}) + "\n")
    at = correct if isinstance(correct, dict) else dict.fromkeys(steps, correct)

    def hits(s: int, j: int) -> int:
        return at[s] // PROMPTS + (j < at[s] % PROMPTS)

    rows = [{"step": s, "prompt_id": f"p{j}", "sample": k, "correct": k < hits(s, j)}
            for s in steps for j in range(PROMPTS) for k in range(SAMPLES)]
    (path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _arms(root: Path, diffs: dict[str, list[int]], base: int = 40) -> dict[str, list[Path]]:
    seeds = range(len(next(iter(diffs.values()))))
    arms = {"baseline": [_run(root / "baseline" / f"s{s}", seed=s, correct=base)
                         for s in seeds]}
    for name, d in diffs.items():
        arms[name] = [_run(root / name / f"s{s}", seed=s, correct=base + x)
                      for s, x in zip(seeds, d, strict=True)]
    return arms


def _ci_excludes_zero(primary: dict[str, float]) -> bool:
    return primary["ci_low"] > 0 or primary["ci_high"] < 0


def test_holm_levels_agree_with_holm_decisions_for_random_p() -> None:
    rng = np.random.default_rng(11)
    alpha = 0.05
    for trial in range(3000):
        m = int(rng.integers(1, 8))
        # ties and values just either side of alpha/k (no p exactly on a boundary)
        p = rng.choice([0.001, 0.0099, 0.0101, 0.0124, 0.0126, 0.0166, 0.0168, 0.024, 0.026,
                        0.04, 0.049, 0.051, 0.2, 0.9], size=m) if rng.random() < 0.5 else (
            rng.uniform(0, 0.1, size=m))
        levels = methods.holm_ci_alphas(list(p), alpha)
        adjusted = np.asarray(methods.holm(list(p)))
        if trial < 15:  # multipletests costs a gc.collect() per call
            assert adjusted == pytest.approx(multipletests(p, method="holm")[1])
        rejected = adjusted < alpha  # the p < alpha convention of the report
        # a t-based CI at level 1 - a excludes 0 exactly when the raw p < a
        assert [bool(pi < a) for pi, a in zip(p, levels, strict=True)] == rejected.tolist(), (
            p, levels)
        assert all(alpha / m <= a <= alpha for a in levels)


def test_holm_ci_never_contradicts_the_recommendation(tmp_path: Path) -> None:
    # raw primary (seeds_prompts) p 0.0315 and 0.0479: Holm adjusts both to 0.063 -> neither
    # is significant, so neither CI may exclude 0 (the second one's plain 95% CI does)
    arms = _arms(tmp_path, {"a": [-1, 6, 6, 7, 7], "b": [8, 7, 3, 6, -1]})
    rep = evaluate_significance(arms, baseline="baseline", num_resamples=200)
    data = rep.to_dict()
    raw = sorted(c["primary"]["p_value_unadjusted"] for c in data["comparisons"])
    assert raw[0] == pytest.approx(0.0315, abs=5e-4) and raw[1] == pytest.approx(0.0479, abs=5e-4)
    for c in data["comparisons"]:
        assert c["recommendation"] == "not_significant"
        assert not _ci_excludes_zero(c["primary"]), c["primary"]
        assert c["primary"]["ci_level"] == pytest.approx(0.975)
    # one clear winner: it is rejected at alpha/2, the other then at alpha (and agrees)
    arms = _arms(tmp_path / "two", {"a": [9, 10, 11, 10, 9], "b": [8, 7, 3, 6, -1]})
    data = evaluate_significance(arms, baseline="baseline", num_resamples=200).to_dict()
    for c in data["comparisons"]:
        sig = c["recommendation"] != "not_significant"
        assert sig == _ci_excludes_zero(c["primary"]), c["primary"]
        assert sig == (c["primary"]["p_value"] < 0.05)
    assert {c["recommendation"] for c in data["comparisons"]} == {"significant_improvement"}


@pytest.mark.parametrize("diff", [2, 0])
def test_identical_pair_differences_give_no_t_p_value(tmp_path: Path, diff: int) -> None:
    # every pair differs by exactly `diff` pp: SD 0, t undefined -> no p, no CI, not a claim
    arms = _arms(tmp_path, {"candidate": [diff, diff, diff, diff]})
    rep = evaluate_significance(arms, baseline="baseline", num_resamples=200)
    data = rep.to_dict()
    assert data["primary"]["delta"] == pytest.approx(diff)
    assert data["primary"]["p_value"] is None
    assert data["primary"]["ci_low"] is None and data["primary"]["ci_high"] is None
    assert data["recommendation"] == "not_significant"
    assert "undefined" in data["primary"]["notes"]
    assert data["primary"]["sign_flip_p"] == pytest.approx(0.125 if diff else 1.0)
    json.dumps(data, allow_nan=False)
    md = build_sepa_significance_markdown(rep)
    assert "None" not in md


def test_negligible_observed_difference_is_not_estimable(tmp_path: Path) -> None:
    # the quickstart case: pooled training counts differ by one generation in 10240, and the
    # seed pairs by exactly 0 on average
    root = tmp_path
    arms = {"baseline": [_run(root / "b" / f"s{s}", seed=s, correct=40,
                              train=(4406 if s == 0 else 0, 10240 if s == 0 else 1))
                         for s in range(3)],
            "candidate": [_run(root / "c" / f"s{s}", seed=s, correct=40 + d,
                               train=(4407 if s == 0 else 0, 10240 if s == 0 else 1))
                          for s, d in enumerate([2, -2, 0])]}
    rep = evaluate_significance(arms, baseline="baseline", num_resamples=200, mde=2.0)
    pw = rep.to_dict()["power"]
    assert pw["observed_delta_pp"] == pytest.approx(0.0, abs=1e-12)
    assert pw["seeds_needed_observed"]["t_refined"] is None
    assert "not estimable" in pw["seeds_needed_observed"]["note"]
    assert pw["seeds_needed_mde"]["t_refined"] >= 2  # the MDE figure is still given
    gen = pw["generation_level"]
    assert gen["needed_per_arm_observed"] is None
    assert "not estimable" in gen["needed_per_arm_observed_note"]
    md = build_sepa_significance_markdown(rep)
    assert "not estimable (observed difference ≈ 0" in md
    assert "None" not in md and "403515892" not in md


def test_observed_effect_power_numbers_are_kept_when_estimable(tmp_path: Path) -> None:
    arms = _arms(tmp_path, {"candidate": [3, 5, 1, 4]})
    pw = evaluate_significance(arms, baseline="baseline", num_resamples=200).to_dict()["power"]
    so = pw["seeds_needed_observed"]
    assert so["t_refined"] is not None and so["t_refined"] >= 2 and "note" not in so
    assert not math.isnan(pw["observed_delta_pp"])


def test_tp_power_pilot_by_step_says_not_estimable(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from textpolicy.analysis.planning import pilot_inputs
    from textpolicy.cli import main

    # step 0: both arms are the same initial model (identical pairs); step 2: every pair
    # differs by exactly 3 pp (SD 0); step 4: a real spread
    ends = [1, 5, 2, 6]
    for s, end in enumerate(ends):
        _run(tmp_path / "baseline" / f"s{s}", seed=s, correct={0: 40, 2: 40, 4: 40},
             steps=(0, 2, 4))
        _run(tmp_path / "candidate" / f"s{s}", seed=s, correct={0: 40, 2: 43, 4: 40 + end},
             steps=(0, 2, 4))
    by_step = pilot_inputs(tmp_path, mde_pp=2.0).pilot["pilot_by_step"]
    assert [r["seeds_needed_observed"] for r in by_step[:2]] == [None, None]
    assert [r["seeds_needed_mde"] for r in by_step[:2]] == [None, None]  # no variance known
    assert by_step[2]["seeds_needed_observed"] >= 2 and by_step[2]["seeds_needed_mde"] >= 2
    res = CliRunner().invoke(main, ["power", "--pilot", str(tmp_path), "--sims", "0"])
    assert res.exit_code == 0, res.output
    assert "pairs needed at observed Δ not estimable" in res.output
    assert "None" not in res.output


def test_one_run_per_arm_recommendation_is_scoped_to_these_runs(tmp_path: Path) -> None:
    arms = {"baseline": [_run(tmp_path / "b", seed=0, correct=30)],
            "candidate": [_run(tmp_path / "c", seed=0, correct=70)]}
    rep = evaluate_significance(arms, baseline="baseline", num_resamples=200)
    data = rep.to_dict()
    assert data["primary"]["test"] == "prompt_paired"
    assert data["primary"]["p_value"] < 0.05  # but one run per arm is no claim at all
    assert data["recommendation"] == "insufficient_seeds"
    assert data["recommendation_scope"] == data["primary"]["scope"] == "these_runs"
    md = build_sepa_significance_markdown(rep)
    assert md.count("for these runs only") == 2  # the headline and the comparison heading
    seeds = evaluate_significance(_arms(tmp_path / "s", {"candidate": [3, 5, 1, 4]}),
                                  baseline="baseline", num_resamples=200).to_dict()
    assert seeds["recommendation_scope"] == "seeds"
