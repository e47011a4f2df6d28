"""``tp sweep``: the seed document's LR sweep (``scripts/tinker_lr_sweep.py``) as a command.

Its flags build the same spec table a ``kind = "sweep"`` TOML file holds, validated and run by
the same code.
"""

from __future__ import annotations

from typing import Any

import click

from textpolicy.cli.run_cmd import (
    common_table,
    engine_options,
    eval_options,
    execute_spec,
    execution_options,
    parse_floats,
    parse_seeds,
    sampling_options,
    stage_options,
    timestamp,
)


@click.command(context_settings={"show_default": True})
@click.option("--sweep-root", default=None,
              help="Output directory. [default: results/lr_sweep_<timestamp>]")
@click.option("--probe-steps", type=click.IntRange(min=1), default=20,
              help="Steps per probe.")
@engine_options
@sampling_options(group_size=16)
@click.option("--lr-values", default="5e-5,2e-4,5e-4,1e-3",
              help="Comma-separated LR values.")
@click.option("--algorithms", default="grpo,full",
              help="Comma-separated algorithms (pipelines) to sweep; a composition is one "
                   "of them: grpo,maxrl,gtpo,hicra sweeps grpo and maxrl,gtpo,hicra.")
@click.option("--seeds", default="1000",
              help="Seeds of every probe (e.g. 1000,1001 or 1000-1002); the best LR averages "
                   "over them. The recommended campaign's seeds avoid them.")
@click.option("--split", type=click.Choice(["validation", "test"]), default="validation",
              help="Held-out split the probes are evaluated on (test: the campaign endpoint's "
                   "prompts; its report then says so).")
@click.option("--select", type=click.Choice(["auto", "eval", "running_correct_rate"]),
              default="auto",
              help="Metric that picks the best LR (auto: eval on --split when eval runs).")
@click.option("--max-steps", type=click.IntRange(min=1), default=None,
              help="Steps per run of the recommended campaign. [default: 100]")
@eval_options
@stage_options
@execution_options
def sweep(**params: Any) -> None:
    """Run an LR sweep: short probes of each algorithm at each LR, best LR per algorithm.

    Prints the results table, the best LR per algorithm (and the metric that chose it) and
    the recommended campaign; writes sweep_results.json, sweep_plot.png and a ready-to-run
    campaign.toml into the sweep root.

    \b
    Examples:
      tp sweep --sweep-root results/lr_sweep
      tp sweep --lr-values "1e-5,5e-5,1e-4,5e-4" --sweep-root results/lr_sweep_fine
      tp sweep --engine local --task arithmetic --lr-values 3e-4,1e-3,3e-3 --seeds 1000-1001
    """
    from pathlib import Path

    from textpolicy.pipeline import split_pipeline_list

    root = params["sweep_root"] or f"results/lr_sweep_{timestamp()}"
    raw = common_table(params)
    algorithms = split_pipeline_list(params["algorithms"])
    raw.update({
        "kind": "sweep", "name": Path(root).name, "output": root,
        "arms": [{"pipeline": a, "name": _arm_name(a)} for a in algorithms],
        "sweep": {"lr_values": parse_floats(params["lr_values"], "--lr-values"),
                  "probe_steps": params["probe_steps"],
                  "seeds": parse_seeds(params["seeds"]), "select": params["select"],
                  "split": params["split"]},
    })
    flags = {"sweep.lr_values": "--lr-values", "sweep.probe_steps": "--probe-steps",
             "sweep.seeds": "--seeds", "sweep.select": "--select", "sweep.split": "--split",
             "arms": "--algorithms",
             "output": "--sweep-root", "name": "--sweep-root",
             **{f"arms[{i}].{key}": "--algorithms" for i in range(len(algorithms))
                for key in ("pipeline", "name")},
             **{f"arms[{i}]": "--algorithms" for i in range(len(algorithms))}}
    execute_spec(raw, source="tp sweep", params=params, execute=True, flags=flags)


def _arm_name(pipeline: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", pipeline).strip("_") or "arm"
