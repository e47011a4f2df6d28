"""The sweep table and comparison.md read without a manual: every sweep column is explained
under the table (MeanLoss marked as not comparable across pipelines), comparison.md shows each
quantity once, and an arm without SEPA has no SEPA λ."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from textpolicy.analysis.markdown import comparison_markdown
from textpolicy.cli import main
from textpolicy.runner.sweep import ProbeRow, format_table


def _rows(seeds: int) -> list[ProbeRow]:
    return [ProbeRow("grpo", "grpo", 1e-3, 20, 564, 0.625, 0.311, 3.31, 0.41, "ok", seeds),
            ProbeRow("full", "full", 1e-3, 20, 580, 0.578, 0.320, 11.55, 0.36, "ok", seeds)]


def _legend(table: str) -> list[str]:
    lines = table.splitlines()
    return lines[lines.index("=" * len(lines[0]), 3) + 1:]


def test_every_sweep_column_is_explained_under_the_table() -> None:
    table = format_table(_rows(2), with_eval=True)
    legend = _legend(table)
    header = table.splitlines()[3].split()
    explained = {line.split()[0] for line in legend if line.startswith("  ") and
                 not line.startswith("    ")}
    assert set(header) - {"Algorithm", "LR"} <= explained, (header, legend)
    text = " ".join(" ".join(legend).split())
    assert "MeanLoss the engine's loss" in text
    assert "NOT comparable across pipelines" in text
    assert legend[-1] == "  Each row is the mean over the probe's 2 seeds."
    assert all(len(line) <= 88 for line in legend)


def test_quickstart_doc_shows_the_legend_as_printed() -> None:
    shown = (Path(__file__).resolve().parents[1] / "docs" / "quickstart.md").read_text(
        encoding="utf-8").splitlines()
    legend = _legend(format_table(_rows(2), with_eval=True))
    assert all(line in shown for line in legend), legend


def test_the_legend_follows_the_columns_shown() -> None:
    legend = " ".join(_legend(format_table(_rows(1), with_eval=False)))
    assert "Eval%" not in legend and "mean over the probe's" not in legend


def _arm(name: str, **values: object) -> dict[str, object]:
    base: dict[str, object] = {
        "name": name, "runs": 2, "steps": 10, "total_generations": 80, "correct_count": 32,
        "correct_rate": 0.4, "mean_reward": 0.4, "final_running_correct_rate": 0.4,
        "uses_sepa_lambda": False, "final_sepa_lambda": None, "max_token_hit_rate": 0.05,
        "mean_step_time_s": 0.1}
    base.update(values)
    return base


def _table_rows(md: str) -> dict[str, list[str]]:
    return {cells[0]: cells[1:] for line in md.splitlines() if line.startswith("| ")
            for cells in [[c.strip() for c in line.strip("|").split("|")]]}


def test_comparison_shows_each_quantity_once() -> None:
    md = comparison_markdown({"arms": [
        _arm("grpo"),
        _arm("full", correct_rate=0.45, mean_reward=0.45, final_running_correct_rate=0.45,
             uses_sepa_lambda=True, final_sepa_lambda=0.8)]})
    rows = _table_rows(md)
    assert "mean reward" not in rows and "final running correct rate" not in rows
    assert rows["correct rate"] == ["0.4000", "0.4500"]
    assert rows["final SEPA λ"] == ["n/a", "0.8000"]
    assert "not shown: mean reward" in md


def test_comparison_keeps_a_mean_reward_that_differs() -> None:
    """Graded (non-0/1) rewards: the mean reward is its own quantity and is shown."""
    md = comparison_markdown({"arms": [_arm("a", mean_reward=0.31), _arm("b", mean_reward=0.4)]})
    rows = _table_rows(md)
    assert rows["mean reward"] == ["0.3100", "0.4000"]
    assert "final SEPA λ" not in rows  # no arm has SEPA: no row of n/a


def test_campaign_analysis_of_real_runs(tmp_path: Path) -> None:
    root = tmp_path / "c"
    result = CliRunner().invoke(main, [
        "campaign", "--engine", "local", "--task", "arithmetic", "--campaign-root", str(root),
        "--max-steps", "2", "--batch-size", "2", "--group-size", "2", "--eval-every", "0",
        "--seeds", "0,1", "--resamples", "200", "--execute", "--progress", "off"])
    assert result.exit_code == 0, result.output
    md = (root / "analysis" / "comparison.md").read_text(encoding="utf-8")
    rows = _table_rows(md)
    assert rows["metric"] == ["baseline", "candidate"]
    assert rows["final SEPA λ"][0] == "n/a"          # grpo has no SEPA
    assert rows["final SEPA λ"][1] != "n/a"          # full does
    assert "mean reward" not in rows and "final running correct rate" not in rows
    data = json.loads((root / "analysis" / "comparison.json").read_text(encoding="utf-8"))
    base, cand = data["arms"]
    assert base["final_sepa_lambda"] is None and base["uses_sepa_lambda"] is False
    assert cand["uses_sepa_lambda"] is True
    assert base["mean_reward"] == base["correct_rate"]  # the JSON keeps every number
