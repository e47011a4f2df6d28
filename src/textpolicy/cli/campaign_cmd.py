"""``tp campaign``: the seed document's campaign (``scripts/tinker_campaign.py``) as a command.

Dry run by default (manifest.json + run_commands.sh); ``--execute`` runs it, then the
analysis. Its flags build the same spec table a ``kind = "campaign"`` TOML file holds.
"""

from __future__ import annotations

from typing import Any

import click

from textpolicy.cli.params import finite
from textpolicy.cli.run_cmd import (
    common_table,
    engine_options,
    eval_options,
    execute_spec,
    execution_options,
    parse_seeds,
    sampling_options,
    stage_options,
    timestamp,
)
from textpolicy.runner.spec import MAX_RESAMPLES


@click.command(context_settings={"show_default": True})
@click.option("--campaign-root", default=None,
              help="Output directory. [default: results/tinker_campaign_<timestamp>]")
@click.option("--execute", is_flag=True, help="Run the campaign (default is dry-run).")
@engine_options
@click.option("--max-steps", type=click.IntRange(min=1), default=100, help="Steps per arm.")
@sampling_options(group_size=8)
@click.option("--lr", type=finite(), default=None,
              help="Learning rate (every arm, unless overridden). [default: the task's; "
                   "math: 4e-5]")
@click.option("--baseline-lr", type=finite(), default=None,
              help="Override LR for the baseline arm. [default: uses --lr]")
@click.option("--candidate-lr", type=finite(), default=None,
              help="Override LR for the candidate arm. [default: uses --lr]")
@click.option("--baseline", "baseline_pipeline", default="grpo",
              help="Pipeline of the baseline arm.")
@click.option("--candidate", "candidate_pipeline", default="full",
              help="Pipeline of the candidate arm.")
@click.option("--seeds", default="0",
              help="Paired seeds of every arm (e.g. 0,1,2 or 0-7).")
@click.option("--max-examples", type=click.IntRange(min=1), default=None,
              help="Limit dataset size. [default: all]")
@click.option("--save-every", type=click.IntRange(min=0), default=20,
              help="Checkpoint interval.")
@eval_options
@stage_options
@click.option("--alpha", type=finite(), default=0.05, help="Significance level.")
@click.option("--resamples", type=click.IntRange(min=1, max=MAX_RESAMPLES), default=20000,
              help="Permutation/bootstrap resamples.")
@click.option("--margin", "margin_pp", type=float, default=None,
              help="Non-inferiority/equivalence margin (pp) for the analysis.")
@click.option("--lr-sweep", default=None,
              help="sweep_results.json (or sweep root) of the sweep that chose the LRs: the "
                   "manifest and the report record its split and seeds and any overlap.")
@execution_options
def campaign(**params: Any) -> None:
    """Plan a campaign of paired arms; --execute runs it, then the analysis.

    The baseline and candidate arms run every seed; seed s is the same init, data order and
    eval prompts in both.

    \b
    Examples:
      tp campaign --max-steps 100 --batch-size 4 --group-size 8 \\
          --baseline-lr 5e-4 --candidate-lr 5e-5
      tp campaign --baseline-lr 5e-4 --candidate-lr 5e-5 --seeds 0-7 \\
          --campaign-root results/tinker_ab_v1 --execute --parallel 2
    """
    from pathlib import Path

    root = params["campaign_root"] or f"results/tinker_campaign_{timestamp()}"
    raw = common_table(params)
    baseline: dict[str, Any] = {"name": "baseline", "pipeline": params["baseline_pipeline"]}
    candidate: dict[str, Any] = {"name": "candidate", "pipeline": params["candidate_pipeline"]}
    if params["baseline_lr"] is not None:
        baseline["lr"] = params["baseline_lr"]
    if params["candidate_lr"] is not None:
        candidate["lr"] = params["candidate_lr"]
    raw.update({
        "kind": "campaign", "name": Path(root).name, "output": root,
        "seeds": parse_seeds(params["seeds"]), "arms": [baseline, candidate],
        "baseline": "baseline",
        "analysis": {"alpha": params["alpha"], "resamples": params["resamples"],
                     **({"margin_pp": params["margin_pp"]}
                        if params["margin_pp"] is not None else {})},
        **({"lr_sweep": params["lr_sweep"]} if params["lr_sweep"] is not None else {}),
    })
    execute_spec(raw, source="tp campaign", params=params, execute=params["execute"],
                 flags=CAMPAIGN_FLAGS)


#: spec keys only tp campaign's flags set (the rest: run_cmd.COMMON_FLAGS)
CAMPAIGN_FLAGS = {
    "arms[0].lr": "--baseline-lr", "arms[1].lr": "--candidate-lr",
    "arms[0].pipeline": "--baseline", "arms[1].pipeline": "--candidate",
    "arms[0]": "--baseline", "arms[1]": "--candidate",
    "seeds": "--seeds", "analysis.alpha": "--alpha", "analysis.resamples": "--resamples",
    "analysis.margin_pp": "--margin", "lr_sweep": "--lr-sweep",
    "output": "--campaign-root", "name": "--campaign-root",
}
