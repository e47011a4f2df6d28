"""``tp power``: plan a campaign — seeds × eval size × steps against power."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from textpolicy import strictjson
from textpolicy.cli.params import finite
from textpolicy.errors import ConfigError


def _ints(value: str, name: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated integers, got {value!r}") from None
    if not out:
        raise ConfigError(f"{name} is empty")
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--pilot", type=click.Path(path_type=Path), default=None,
              help="Estimate variance components from this finished pilot campaign.")
@click.option("--mde", type=finite(), default=2.0, show_default=True,
              help="Smallest effect worth detecting (percentage points).")
@click.option("--baseline-acc", type=finite(), default=0.5, show_default=True,
              help="Baseline held-out accuracy (fraction).")
@click.option("--sigma-seed", type=finite(), default=1.0, show_default=True,
              help="Run-to-run SD of accuracy (pp).")
@click.option("--rho", type=finite(), default=0.0, show_default=True,
              help="Correlation of the two arms' runs within a seed pair.")
@click.option("--sigma-int", type=finite(), default=14.0, show_default=True,
              help="Run x prompt interaction SD of per-prompt accuracy (pp).")
@click.option("--pq", type=finite(), default=0.15, show_default=True,
              help="E[p(1-p)] over eval prompts.")
@click.option("--eval-rho", type=float, default=0.0, show_default=True,
              help="Correlation of the two arms' outcomes on the same eval prompt and sample "
                   "(the arms share eval sampling seeds; 0 assumes independent sampling, "
                   "which overstates SD(D); a --pilot estimates it).")
@click.option("--seeds", default="4,6,8,12,16,24,32", show_default=True,
              help="Seed pairs to tabulate (comma-separated).")
@click.option("--eval-prompts", default="500", show_default=True,
              help="Eval set sizes M (comma-separated).")
@click.option("--eval-samples", default="4", show_default=True,
              help="Samples per eval prompt K (comma-separated).")
@click.option("--steps", default="100", show_default=True,
              help="Training steps per run (comma-separated; cost columns).")
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--group-size", type=int, default=8, show_default=True)
@click.option("--alpha", type=finite(), default=0.05, show_default=True)
@click.option("--power", "target_power", type=finite(), default=0.8, show_default=True)
@click.option("--sims", type=int, default=400, show_default=True,
              help="Simulated campaigns per row (0: closed form only).")
@click.option("--seed", type=int, default=0, show_default=True, help="Simulation seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("--sequential", "seq_looks", default=None, metavar="LOOKS",
              help="Also plan a group-sequential design with looks at these seed pairs "
                   "(e.g. 4,8,12,16): expected and maximum seed pairs under H0 and at --mde, "
                   "by simulation (first --eval-prompts / --eval-samples).")
@click.option("--spending", type=click.Choice(["obrien-fleming", "pocock"]),
              default="obrien-fleming", show_default=True, metavar="NAME",
              help="Lan–DeMets spending of --sequential: obrien-fleming or pocock.")
@click.option("--futility", type=click.Choice(["none", "non-binding"]), default="none",
              show_default=True, metavar="RULE",
              help="Futility rule of --sequential: none or non-binding.")
def power(pilot: Path | None, mde: float, baseline_acc: float, sigma_seed: float, rho: float,
          sigma_int: float, pq: float, eval_rho: float, seeds: str, eval_prompts: str,
          eval_samples: str, steps: str, batch_size: int, group_size: int, alpha: float,
          target_power: float, sims: int, seed: int, as_json: bool, seq_looks: str | None,
          spending: str, futility: str) -> None:
    """Plan a campaign: power of the paired seed design for each seeds x eval-size choice.

    Closed form (noncentral t on Var(D_s) = 2σ²_seed(1−ρ) + 2(σ²_int + (1−ρ_eval)E[p(1−p)]/K)/M)
    plus a simulation of the hierarchical logistic model with the same components. From a
    --pilot, the headline seed pairs use the 70% upper confidence bound of the pilot's SD.
    """
    from textpolicy.analysis.planning import PlanInputs, pilot_inputs, plan_table

    if not 0 < alpha < 1 or not 0 < target_power < 1:
        raise ConfigError("--alpha and --power must lie in (0, 1)")
    if sims < 0 or batch_size < 1 or group_size < 1:
        raise ConfigError("--sims must be >= 0; --batch-size/--group-size >= 1")
    if pilot is not None:
        inputs = pilot_inputs(pilot, mde_pp=mde, alpha=alpha)
    else:
        inputs = PlanInputs(baseline_acc=baseline_acc, mde_pp=mde, sigma_seed_pp=sigma_seed,
                            rho=rho, sigma_int_pp=sigma_int, pq=pq, rho_eval=eval_rho)
    plan = plan_table(inputs, seeds=_ints(seeds, "--seeds"),
                      eval_prompts=_ints(eval_prompts, "--eval-prompts"),
                      eval_samples=_ints(eval_samples, "--eval-samples"),
                      steps=_ints(steps, "--steps"), batch_size=batch_size,
                      group_size=group_size, alpha=alpha, target_power=target_power,
                      num_sims=sims, sim_seed=seed)
    seq = None
    if seq_looks is not None:
        from textpolicy.analysis.planning import logit_model
        from textpolicy.analysis.sequential import plan_sequential

        seq = plan_sequential(logit_model(inputs), looks=_ints(seq_looks, "--sequential"),
                              m=_ints(eval_prompts, "--eval-prompts")[0],
                              k=_ints(eval_samples, "--eval-samples")[0], alpha=alpha,
                              spending=spending, futility=futility,
                              num_sims=max(sims, 100), seed=seed)
        plan["sequential"] = seq
    if as_json:
        click.echo(strictjson.dumps(plan, indent=2))
        return
    i = plan["inputs"]
    click.echo(f"Inputs ({i['source']}): baseline accuracy {i['baseline_acc']:.3f}, "
               f"σ_seed {i['sigma_seed_pp']:.2f} pp, ρ {i['rho']:.2f}, σ_int "
               f"{i['sigma_int_pp']:.2f} pp, E[p(1-p)] {i['pq']:.3f}, ρ_eval "
               f"{i['rho_eval']:.2f}; target: "
               f"{100 * target_power:g}% power at {mde:g} pp, α = {alpha:g} (two-sided)")
    steps_list = plan["steps"]
    head = ("seeds", "M", "K", "SD(D) pp", "power (t)", *(["power (sim)"] if sims else []),
            "eval gens", *[f"train gens @{t} steps" for t in steps_list])
    click.echo("")
    click.echo(" | ".join(head))
    click.echo("|".join("---" for _ in head))
    for r in plan["rows"]:
        cells = [str(r["seeds"]), str(r["eval_prompts"]), str(r["eval_samples"]),
                 f"{r['sd_pair_diff_pp']:.2f}", f"{r['power_t']:.3f}"]
        if sims:
            cells.append(f"{r['power_sim']:.3f}")
        cells.append(str(r["eval_generations"]))
        cells += [str(r["train_generations"][str(t)]) for t in steps_list]
        click.echo(" | ".join(cells))
    click.echo("")
    for n in plan["seeds_needed"]:
        extra = ("" if n["seeds_planned"] == n["seeds_t"] and plan["inputs"]["pilot"] == {}
                 else f"point estimate {n['seeds_t']}; ")
        click.echo(f"M={n['eval_prompts']}, K={n['eval_samples']}: {n['seeds_planned']} seed "
                   f"pairs for {100 * target_power:g}% power at {mde:g} pp, planned with "
                   f"{n['planned_with']} ({extra}closed form {n['seeds_closed_form']})")
    by_step = i["pilot"].get("pilot_by_step") if i.get("pilot") else None
    if by_step:
        click.echo("\nPilot by eval step (if the campaign stopped there; pairs planned with "
                   "the 70% upper bound of that step's SD):")
        for row in by_step:
            obs, at_mde = row["seeds_needed_observed"], row["seeds_needed_mde"]
            click.echo(f"  step {row['step']}: Δ {row['delta_pp']:+.2f} pp, SD(D) "
                       f"{row['sd_pp']:.2f} pp, pairs needed at observed Δ "
                       f"{'not estimable' if obs is None else obs}, at MDE "
                       f"{'not estimable' if at_mde is None else at_mde}")
    click.echo(f"\n{plan['note']}")
    if sims:
        click.echo(f"Simulation: {sims} campaigns per row, seed {seed}, hierarchical logistic "
                   "model with matching components (delta-method conversion).")
    if seq is not None:
        _echo_sequential(seq)


def _echo_sequential(seq: dict[str, Any]) -> None:
    d = seq["design"]
    click.echo(f"\nSequential design: looks at {d['looks']} seed pairs, {d['spending']} "
               f"spending, futility {d['futility']}; M={seq['eval_prompts']}, "
               f"K={seq['eval_samples']}; {seq['num_sims']} simulated campaigns per row "
               "(primary test seeds_prompts at every look)")
    click.echo("truth | rejection rate | expected seed pairs | max seed pairs")
    click.echo("---|---|---|---")
    for label, row in (("H0", seq["null"]), (f"Δ = {seq['delta_pp']:g} pp", seq["effect"])):
        click.echo(f"{label} | {row['rejection_rate']:.3f} | "
                   f"{row['expected_seed_pairs']:.2f} | {row['max_seed_pairs']}")
    fixed = seq["fixed_design_seed_pairs_same_power"]
    click.echo(f"Fixed design of the same power ({seq['effect']['rejection_rate']:.3f}): "
               + ("not estimable" if fixed is None else f"{fixed} seed pairs") + ".")
