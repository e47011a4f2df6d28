"""Reading run directories: exact file formats, repairs and clear errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from textpolicy.analysis import AnalysisWarning, RunData, evaluate_significance
from textpolicy.analysis.jsonl import read_jsonl
from textpolicy.errors import AnalysisError, IncompleteRunsError


def _write_jsonl(path: Path, rows: list[dict[str, object]], tail: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail, encoding="utf-8")


def make_run(path: Path, *, seed: int | None, rates: list[float], eval_acc: list[float] | None
             = None, prompts: int = 6, samples: int = 4, eval_steps: tuple[int, ...] = (0, 2),
             total: int = 16) -> Path:
    """A run dir in the contract's format with given per-step correct rates and, per eval
    step, an accuracy (per-prompt correctness spread deterministically)."""
    path.mkdir(parents=True, exist_ok=True)
    cfg: dict[str, object] = {"config": {"pipeline": "grpo"}, "condition": path.parent.name}
    if seed is not None:
        cfg["seed"] = seed
    (path / "config.json").write_text(json.dumps(cfg))
    steps = [{"step": t, "mean_reward": round(r * total) / total,
              "correct_count": round(r * total), "total_count": total, "condition": "x"}
             for t, r in enumerate(rates)]
    _write_jsonl(path / "emergence" / "steps.jsonl", steps)
    _write_jsonl(path / "metrics.jsonl", [
        {"step": t, "loss": 0.1, "mean_reward": s["mean_reward"],
         "correct_rate": s["correct_count"] / total, "running_correct_rate": 0.5,
         "max_token_hit_rate": 0.0, "sepa_lambda": 0.0, "sepa_gate_open": 0,
         "num_datums": total, "step_time_s": 1.0, "condition": "x"}
        for t, s in enumerate(steps)])
    if eval_acc is not None:
        rows = []
        for step, acc in zip(eval_steps, eval_acc, strict=True):
            n_correct = round(acc * prompts * samples)
            for i in range(prompts * samples):
                rows.append({"step": step, "prompt_id": f"p{i // samples}",
                             "sample": i % samples, "correct": i < n_correct})
        _write_jsonl(path / "eval.jsonl", rows)
    return path


def test_reads_contract_formats(tmp_path: Path) -> None:
    run = RunData(make_run(tmp_path / "r", seed=3, rates=[0.25, 0.5, 0.75],
                           eval_acc=[0.25, 0.5]))
    assert run.seed == 3
    assert run.step_counts is not None
    assert run.step_counts["correct"].tolist() == [4, 8, 12]
    assert run.rewards_binary
    ev = run.eval
    assert ev is not None and ev.steps.tolist() == [0, 2]
    assert ev.samples.sum() == 48 and ev.correct[1].sum() == 12
    assert run.metrics["correct_rate"].tolist() == [0.25, 0.5, 0.75]


def test_truncated_last_line_is_dropped_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    _write_jsonl(path, [{"step": 0}, {"step": 1}], tail='{"step": 2, "lo')
    with pytest.warns(AnalysisWarning, match="truncated"):
        rows = read_jsonl(path)
    assert [r["step"] for r in rows] == [0, 1]


def test_broken_middle_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 0}\n{"step": \n{"step": 2}\n')
    with pytest.raises(AnalysisError, match=r"m.jsonl:2: not valid JSON"):
        read_jsonl(path)


def test_blank_lines_and_nan_literals(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 0, "loss": NaN}\n\n{"step": 1, "loss": 1.0}\n')
    rows = read_jsonl(path)
    assert len(rows) == 2 and np.isnan(rows[0]["loss"])


def test_nan_in_a_used_field_is_an_error(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r", seed=0, rates=[0.5, 0.5])
    (run / "emergence" / "steps.jsonl").write_text(
        '{"step": 0, "mean_reward": NaN, "correct_count": 1, "total_count": 2}\n')
    with pytest.raises(AnalysisError, match="NaN"):
        _ = RunData(run).step_counts


def test_missing_and_empty_directories(tmp_path: Path) -> None:
    with pytest.raises(AnalysisError, match="does not exist"):
        RunData(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnalysisError, match="not a run directory"):
        RunData(tmp_path / "empty")
    with pytest.raises(AnalysisError, match="no run directories"):
        evaluate_significance(baseline_run_dirs=[], candidate_run_dirs=[tmp_path])


def test_empty_files_are_an_error(tmp_path: Path) -> None:
    a = tmp_path / "a"
    (a / "emergence").mkdir(parents=True)
    (a / "emergence" / "steps.jsonl").write_text("")
    b = make_run(tmp_path / "b", seed=None, rates=[0.5])
    with pytest.raises(AnalysisError, match=r"no eval\.jsonl and no training correctness"):
        evaluate_significance(baseline_run_dirs=[a], candidate_run_dirs=[b])


def test_arms_with_different_seeds_are_an_error(tmp_path: Path) -> None:
    b = [make_run(tmp_path / f"b{s}", seed=s, rates=[0.5, 0.5]) for s in (0, 1)]
    c = [make_run(tmp_path / f"c{s}", seed=s, rates=[0.5, 0.6]) for s in (0, 2)]
    with pytest.raises(AnalysisError, match=r"different seeds .*only in baseline: \[1\]"):
        evaluate_significance(baseline_run_dirs=b, candidate_run_dirs=c, num_resamples=200)
    rep = evaluate_significance({"baseline": b, "candidate": c}, paired=False,
                                num_resamples=200)
    assert rep.primary["test"] == "welch_runs"


def test_pairs_by_seed_not_by_order_and_by_position_without_seeds(tmp_path: Path) -> None:
    b = [make_run(tmp_path / f"b{s}", seed=s, rates=[0.25 + 0.25 * s] * 2) for s in (0, 1)]
    c = [make_run(tmp_path / f"c{s}", seed=s, rates=[0.25 + 0.25 * s + 0.125] * 2)
         for s in (0, 1)]
    rep = evaluate_significance(baseline_run_dirs=b, candidate_run_dirs=c[::-1],
                                num_resamples=200)
    diffs = rep.comparisons[0].primary.extra["differences_pp"]
    assert diffs == pytest.approx([12.5, 12.5])  # seed-matched, despite reversed order
    nb = [make_run(tmp_path / f"nb{s}", seed=None, rates=[0.5, 0.5]) for s in (0, 1, 2)]
    nc = [make_run(tmp_path / f"nc{s}", seed=None, rates=[0.5, 0.5]) for s in (0, 1)]
    with pytest.raises(AnalysisError, match="paired by position"):
        evaluate_significance(baseline_run_dirs=nb, candidate_run_dirs=nc)
    rep = evaluate_significance(baseline_run_dirs=nb[:2], candidate_run_dirs=nc,
                                num_resamples=200)
    assert rep.comparisons[0].pairing == "position"


def test_eval_steps_must_reach_the_latest_step(tmp_path: Path) -> None:
    # no plan recorded: the endpoint is the latest eval step any run reached (2), not a
    # common step the runs happen to share; a run without it stops the analysis
    b = make_run(tmp_path / "b", seed=0, rates=[0.5], eval_acc=[0.5], eval_steps=(1,))
    c = make_run(tmp_path / "c", seed=0, rates=[0.5], eval_acc=[0.5], eval_steps=(2,))
    with pytest.raises(IncompleteRunsError, match="no eval at the planned final step 2 "
                       r"\(last eval at step 1\)"):
        evaluate_significance(baseline_run_dirs=[b], candidate_run_dirs=[c])


def test_a_missing_last_eval_does_not_move_the_endpoint(tmp_path: Path) -> None:
    # it used to move every run's endpoint back to the last common step (2)
    b = [make_run(tmp_path / f"b{s}", seed=s, rates=[0.5], eval_acc=[0.25, 0.5, 0.75],
                  eval_steps=(0, 2, 4)) for s in (0, 1)]
    c = [make_run(tmp_path / f"c{s}", seed=s, rates=[0.5], eval_acc=[0.25, 0.75],
                  eval_steps=(0, 2)) for s in (0, 1)]
    with pytest.raises(IncompleteRunsError) as info:
        evaluate_significance(baseline_run_dirs=b, candidate_run_dirs=c, num_resamples=200)
    lines = str(info.value).splitlines()
    assert len(lines) == 3 and all("no eval at the planned final step 4" in x
                                   for x in lines[1:])
