"""The LR sweep: probes, the seed document's results table, best LR per arm, the recommended
campaign (command and ready-to-run spec), and a plot of the selection metric against LR.

Files in the sweep root::

    manifest.json  run_commands.sh          the plan (written before anything runs)
    <arm>_lr<lr>/[seed<s>/]                  one run directory per probe
    sweep_results.json                       every probe, the per-LR summary, best_lr per arm
    sweep_plot.png                           selection metric vs LR, one line per arm
    campaign.toml                            ready-to-run campaign spec at the tuned LRs
                                             (only when every arm has a successful probe)

The best LR is chosen on eval accuracy on the task's validation split (``sweep.split``) at the
probe's last step, averaged over the sweep seeds, when eval is configured; otherwise on the final
running correct rate (the seed document's rule). The table and sweep_results.json say which
metric, split, seeds and prompts chose it (``selection``). Ties go to the smaller LR. Sweep seeds
are disjoint from the campaign seeds (the recommended campaign's too), so no campaign run
replays a probe and the campaign's test prompts never took part in choosing its LRs. An arm
without a successful probe has no LR: the sweep then recommends nothing (no campaign.toml,
sweep_results.json's ``untuned`` names what became of its probes) and fails.
"""

from __future__ import annotations

import shlex
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from textpolicy.runner import manifest as mf
from textpolicy.runner.execute import RunResult
from textpolicy.runner.plan import Plan, format_lr, swept_arms
from textpolicy.runner.results import EVAL, iter_jsonl, summarize_run
from textpolicy.runner.spec import Spec
from textpolicy.runner.toml_out import dumps as toml_dumps
from textpolicy.training.run_record import redact
from textpolicy.urls import redact_url

RULE_WIDTH = 80
METRIC_EVAL = "eval_accuracy"
METRIC_RUNNING = "running_correct_rate"
#: campaign seeds recommended after a plain sweep: this many, the smallest that no probe used
RECOMMENDED_SEED_COUNT = 4


@attrs.frozen
class ProbeRow:
    """One (arm, LR) of the table, averaged over the sweep seeds."""

    algorithm: str
    pipeline: str
    lr: float
    steps: int
    datums: int
    correct_rate: float | None
    running_correct_rate: float | None
    mean_loss: float | None
    eval_accuracy: float | None
    status: str
    seeds: int

    def metric(self, name: str) -> float | None:
        value = getattr(self, name)
        return float(value) if value is not None else None


def selection_metric(spec: Spec, plan: Plan) -> str:
    eval_on = bool(plan.runs) and plan.runs[0].config.eval_every > 0
    if spec.sweep.select == "eval" or (spec.sweep.select == "auto" and eval_on):
        return METRIC_EVAL
    return METRIC_RUNNING


def metric_label(metric: str, seeds: int, step: int, split: str = "validation") -> str:
    over = f"mean over {seeds} seeds" if seeds > 1 else "1 seed"
    if metric == METRIC_EVAL:
        return f"{split} accuracy at step {step} ({over})"
    return f"final running correct rate ({over})"


def recommended_seeds(sweep_seeds: Sequence[int]) -> tuple[int, ...]:
    """The smallest RECOMMENDED_SEED_COUNT seeds >= 0 that no probe used."""
    used = set(sweep_seeds)
    out: list[int] = []
    seed = 0
    while len(out) < RECOMMENDED_SEED_COUNT:
        if seed not in used:
            out.append(seed)
        seed += 1
    return tuple(out)


def selection_record(spec: Spec, plan: Plan, metric: str) -> dict[str, Any]:
    """What chose the LRs: metric, split, seeds and the prompts the choice saw (the prompt ids
    the probes evaluated at their last eval; training prompts for the running correct rate)."""
    on_eval = metric == METRIC_EVAL
    prompt_ids: set[str] = set()
    if on_eval:
        for run in plan.runs:
            rows = list(iter_jsonl(Path(run.config.log_dir) / EVAL))
            if rows:
                last = max(int(r.get("step", 0)) for r in rows)
                prompt_ids.update(str(r["prompt_id"]) for r in rows
                                  if r.get("step") == last and "prompt_id" in r)
    return {"metric": metric, "split": spec.sweep.split if on_eval else "train",
            "seeds": list(spec.sweep.seeds), "share_seeds": spec.sweep.share_seeds,
            "probe_steps": spec.sweep.probe_steps, "task": spec.task.name,
            "n_prompts": len(prompt_ids) if on_eval else None,
            "prompt_ids": sorted(prompt_ids)}


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def write_plan(spec: Spec, plan: Plan) -> None:
    """manifest.json + run_commands.sh of the sweep."""
    plan.root.mkdir(parents=True, exist_ok=True)
    runs = [{"algorithm": r.arm, "pipeline": r.pipeline, **mf.run_entry(r)} for r in plan.runs]
    mf.write_json(plan.root / "manifest.json", {
        "kind": "sweep", "name": spec.name, "created_at": mf.now(),
        "lr_values": list(spec.sweep.lr_values), "probe_steps": spec.sweep.probe_steps,
        "seeds": list(spec.sweep.seeds), "select": spec.sweep.select, "split": spec.sweep.split,
        "runs": runs, "commands": [r["command"] for r in runs],
        "spec": spec.to_dict(), "versions": mf.versions(), "git": mf.git_commit(),
        "task": mf.task_fingerprint(spec.task.name, spec.task.params),
    })
    mf.write_run_commands(plan, header=[f"LR sweep {spec.name}"])


def summarize(spec: Spec, plan: Plan, results: Sequence[RunResult]) -> list[ProbeRow]:
    status = {r.key: r for r in results}
    rows: list[ProbeRow] = []
    groups: dict[tuple[str, float], list[Any]] = {}
    for run in plan.runs:
        groups.setdefault((run.arm, run.lr), []).append(run)
    for (arm, lr), runs in groups.items():
        summaries = [summarize_run(Path(r.config.log_dir)) for r in runs]
        states = [status[r.key].status if r.key in status else "not_started" for r in runs]
        ok = [s in ("finished", "skipped") for s in states]
        label = "ok" if all(ok) else (
            f"{sum(ok)}/{len(ok)} ok" if len(ok) > 1 else ("failed" if "failed" in states
                                                           else states[0]))
        rows.append(ProbeRow(
            algorithm=arm, pipeline=runs[0].pipeline, lr=lr,
            steps=round(sum(s.steps for s in summaries) / len(summaries)),
            datums=round(sum(s.datums for s in summaries) / len(summaries)),
            correct_rate=_mean([s.correct_rate for s in summaries]),
            running_correct_rate=_mean([s.running_correct_rate for s in summaries]),
            mean_loss=_mean([s.mean_loss for s in summaries]),
            eval_accuracy=_mean([s.eval_accuracy for s in summaries]),
            status=label, seeds=len(runs)))
    return rows


def best_lrs(rows: Sequence[ProbeRow], metric: str) -> dict[str, dict[str, float]]:
    """Best LR per arm among probes with status ok (ties → smaller LR)."""
    best: dict[str, dict[str, float]] = {}
    for row in sorted(rows, key=lambda r: r.lr):
        value = row.metric(metric)
        if row.status != "ok" or value is None:
            continue
        current = best.get(row.algorithm)
        if current is None or value > current["metric"]:
            best[row.algorithm] = {"lr": row.lr, "metric": value}
    return best


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def format_table(rows: Sequence[ProbeRow], *, with_eval: bool, split: str = "validation"
                 ) -> str:
    header = (f"{'Algorithm':>10} {'LR':>10} {'Steps':>6} {'Datums':>7} {'Correct%':>9} "
              f"{'Running%':>9} {'MeanLoss':>10}")
    if with_eval:
        header += f" {'Eval%':>8}"
    header += f" {'Status':>8}"
    width = max(RULE_WIDTH, len(header) + 4)
    lines = ["=" * width, "  LEARNING RATE SWEEP RESULTS", "=" * width, header, "─" * width]
    for r in rows:
        loss = "-" if r.mean_loss is None else f"{r.mean_loss:.4f}"
        line = (f"{r.algorithm:>10} {format_lr(r.lr):>10} {r.steps:>6} {r.datums:>7} "
                f"{_pct(r.correct_rate):>9} {_pct(r.running_correct_rate):>9} {loss:>10}")
        if with_eval:
            line += f" {_pct(r.eval_accuracy):>8}"
        line += f" {r.status:>8}"
        lines.append(line)
    lines.append("=" * width)
    return "\n".join(lines + table_legend(rows, with_eval=with_eval, split=split))


def table_legend(rows: Sequence[ProbeRow], *, with_eval: bool, split: str = "validation"
                 ) -> list[str]:
    """What each column of the sweep table is (printed under it)."""
    seeds = max((r.seeds for r in rows), default=1)
    legend = [
        ("Steps", "training steps the probe ran"),
        ("Datums", "completions trained on (advantage not all zero), summed over the steps"),
        ("Correct%", "training completions answered correctly at the last step"),
        ("Running%", "training completions answered correctly over all steps"),
        ("MeanLoss", "the engine's loss (a sum over tokens, weighted by the pipeline's "
                     "advantages), mean over steps; its scale follows each pipeline's "
                     "advantages, so it is NOT comparable across pipelines"),
    ]
    if with_eval:
        legend.append(("Eval%", f"{split} accuracy (per sample) at the probe's last step"))
    legend.append(("Status", "ok: every seed's probe finished"))
    width = max(len(name) for name, _ in legend)
    out = []
    for name, text in legend:
        out += textwrap.wrap(text, 88, initial_indent=f"  {name:<{width}}  ",
                             subsequent_indent=" " * (width + 4))
    if seeds > 1:
        out.append(f"  Each row is the mean over the probe's {seeds} seeds.")
    return out


def recommended_spec(spec: Spec, best: Mapping[str, Mapping[str, float]],
                     campaign_output: str, results_path: Path | None = None) -> dict[str, Any]:
    """The campaign spec at the tuned LRs (as plain TOML data); ``lr_sweep`` names the sweep's
    results so the campaign records what chose its LRs."""
    data = spec.to_dict()
    data.pop("sweep", None)
    data["kind"] = "campaign"
    data["name"] = f"{spec.name}_campaign" if spec.name else "campaign"
    data["output"] = campaign_output
    if results_path is not None:
        data["lr_sweep"] = str(results_path)
    if spec.kind == "sweep":
        data["seeds"] = list(recommended_seeds(spec.sweep.seeds))
    arms = []
    for arm_data, arm in zip(data["arms"], spec.arms, strict=True):
        if arm.label in best:
            arm_data["lr"] = best[arm.label]["lr"]
        arms.append(arm_data)
    data["arms"] = arms
    return data


def recommended_command(spec: Spec, best: Mapping[str, Mapping[str, float]],
                        plan: Plan) -> str | None:
    """The seed document's ``tp campaign`` command when the swept arms are grpo and full."""
    labels = [a.label for a in swept_arms(spec)]
    if sorted(labels) != ["full", "grpo"] or not all(lbl in best for lbl in labels):
        return None
    cfg = plan.runs[0].config
    argv = ["tp", "campaign", "--engine", cfg.engine, "--task", cfg.task]
    if cfg.model:
        argv += ["--model", cfg.model]
    if cfg.engine_options.get("base_url"):
        argv += ["--base-url", redact_url(str(cfg.engine_options["base_url"]))]
    if cfg.engine_options.get("trusted_host"):
        argv += ["--trust-host", str(cfg.engine_options["trusted_host"])]
    for key, value in sorted(cfg.engine_options.items()):  # max_concurrent, sample_seeds, ...
        if key not in ("base_url", "trusted_host"):
            argv += ["--engine-option", redact_url(f"{key}={mf._json(value)}")]
    argv += ["--max-steps", str(spec.training.max_steps), "--batch-size", str(cfg.batch_size),
             "--group-size", str(cfg.group_size), "--lora-rank", str(cfg.lora_rank or 0),
             "--max-tokens", str(cfg.max_tokens), "--temperature", mf._num(cfg.temperature),
             "--eval-every", str(cfg.eval_every), "--eval-samples", str(cfg.eval_samples)]
    if cfg.eval_prompts is not None:
        argv += ["--eval-prompts", str(cfg.eval_prompts)]
    for (stage, param), flag in mf.STAGE_FLAGS.items():
        value = spec.stage_params.get(stage, {}).get(param)
        if value is not None:
            argv += [flag, mf._num(value) if isinstance(value, float) else str(value)]
    seeds = spec.seeds if spec.kind == "experiment" else recommended_seeds(spec.sweep.seeds)
    argv += ["--seeds", ",".join(map(str, seeds)),
             "--baseline-lr", format_lr(best["grpo"]["lr"]),
             "--candidate-lr", format_lr(best["full"]["lr"]),
             "--lr-sweep", str(plan.root / "sweep_results.json")]
    return shlex.join(argv)


def plot(rows: Sequence[ProbeRow], metric: str, label: str, path: Path) -> Path | None:
    """Selection metric vs LR (log axis), one line per arm; None (no file) when no probe has
    a value to plot."""
    lines = {arm: sorted((r.lr, float(value)) for r in rows
                         if r.algorithm == arm and (value := r.metric(metric)) is not None)
             for arm in dict.fromkeys(r.algorithm for r in rows)}
    lines = {arm: pts for arm, pts in lines.items() if pts}
    if not lines:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for arm, pts in lines.items():
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=arm)
    ax.set_xscale("log")
    lrs = sorted({r.lr for r in rows})
    ax.set_xticks(lrs, [format_lr(lr) for lr in lrs])  # the swept LRs, not log-axis decades
    ax.minorticks_off()
    ax.set_xlabel("learning rate")
    ax.set_ylabel(("held-out eval accuracy" if metric == METRIC_EVAL
                   else "final running correct rate") + " (%)")
    ax.set_title("LR sweep: " + label, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


@attrs.frozen
class SweepReport:
    rows: tuple[ProbeRow, ...]
    metric: str
    metric_label: str
    best: Mapping[str, Mapping[str, float]]
    table: str
    campaign_spec: Path | None  # None: an arm has no LR (no campaign is recommended)
    command: str | None
    results_path: Path
    #: swept arms without a successful probe, each with what became of its probes
    untuned: tuple[tuple[str, str], ...] = ()
    selection: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def best_lr(self) -> dict[str, float]:
        return {arm: float(v["lr"]) for arm, v in self.best.items()}

    def text(self) -> str:
        lines = [self.table, f"Best LR per algorithm, chosen by {self.metric_label}:"]
        for arm, value in self.best.items():
            lines.append(f"  {arm:>10}: {format_lr(float(value['lr']))}  "
                         f"({100 * float(value['metric']):.1f}%)")
        sel = self.selection
        if sel:
            prompts = (f"{sel['n_prompts']} {sel['split']} prompts" if sel.get("n_prompts")
                       else f"{sel['split']} prompts")
            lines.append(f"  (chosen on {prompts}, sweep seeds "
                         f"{', '.join(map(str, sel['seeds']))})")
        for arm, _probes in self.untuned:
            lines.append(f"  {arm:>10}: none (no successful probe)")
        if self.untuned:
            lines.append(f"No campaign recommended: {self.failure()}")
            return "\n".join(lines)
        lines.append("Recommended campaign:")
        if self.command:
            lines.append(f"  {self.command} --execute")
        lines.append(f"  tp run {self.campaign_spec}")
        return "\n".join(lines)

    def failure(self) -> str:
        """One line naming the arms without an LR and their probes ('' when there are none)."""
        if not self.untuned:
            return ""
        arms = ", ".join(f"{arm} ({probes})" for arm, probes in self.untuned)
        return (f"no successful probe for {'arm' if len(self.untuned) == 1 else 'arms'} "
                f"{arms}; see {self.results_path}")


def finish_sweep(spec: Spec, plan: Plan, results: Sequence[RunResult],
                 campaign_output: str | None = None) -> SweepReport:
    """Write sweep_results.json, the plot and campaign.toml; return the report."""
    rows = summarize(spec, plan, results)
    metric = selection_metric(spec, plan)
    seeds = len(spec.sweep.seeds)
    label = metric_label(metric, seeds, spec.sweep.probe_steps, spec.sweep.split)
    best = best_lrs(rows, metric)
    with_eval = bool(plan.runs) and plan.runs[0].config.eval_every > 0
    table = format_table(rows, with_eval=with_eval, split=spec.sweep.split)
    status = {r.key: r for r in results}
    untuned = tuple((arm.label, _probe_states(plan, arm.label, status))
                    for arm in swept_arms(spec) if arm.label not in best)
    out = campaign_output or str(plan.root.parent / f"{plan.root.name}_campaign")
    target = plan.root / "campaign.toml"
    results_path = plan.root / "sweep_results.json"
    campaign_path: Path | None = None
    command: str | None = None
    if untuned:  # no recommendation: a campaign.toml from an earlier sweep here is not one
        target.unlink(missing_ok=True)
    else:
        target.write_text(toml_dumps(
            redact(recommended_spec(spec, best, out, results_path)),
            header=[f"Campaign at the LRs tuned by the sweep in {plan.root}",
                    f"(best LR chosen by {label}).", "Run it: tp run " + str(target)]),
            encoding="utf-8")
        campaign_path = target
        command = recommended_command(spec, best, plan)
    plot_path = plan.root / "sweep_plot.png"
    if not (spec.sweep.plot and plot(rows, metric, label, plot_path)):
        plot_path.unlink(missing_ok=True)
    selection = selection_record(spec, plan, metric)
    mf.write_json(results_path, {
        "kind": "sweep", "selection_metric": metric, "selection_metric_label": label,
        "selection": selection,
        "probe_steps": spec.sweep.probe_steps, "seeds": list(spec.sweep.seeds),
        "lr_values": list(spec.sweep.lr_values),
        "best_lr": {arm: v["lr"] for arm, v in best.items()},
        "best": {arm: dict(v) for arm, v in best.items()},
        "summary": [attrs.asdict(r) for r in rows],
        "results": [{"algorithm": r.arm, "pipeline": r.pipeline, "lr": r.lr, "seed": r.seed,
                     "log_dir": r.key,
                     "status": status[r.key].status if r.key in status else "not_started",
                     **attrs.asdict(summarize_run(Path(r.config.log_dir)))}
                    for r in plan.runs],
        "recommended_command": command,
        "campaign_spec": campaign_path.name if campaign_path is not None else None,
        "untuned": {arm: probes for arm, probes in untuned},
    })
    return SweepReport(rows=tuple(rows), metric=metric, metric_label=label, best=best,
                       table=table, campaign_spec=campaign_path, command=command,
                       results_path=results_path, untuned=untuned,
                       selection=selection)


def _probe_states(plan: Plan, arm: str, status: Mapping[str, RunResult]) -> str:
    """What became of an arm's probes, probes with the same fate together:
    ``grpo_lr1e-04, grpo_lr2e-04 failed: <error>; grpo_lr5e-04 not started``."""
    fates: dict[str, list[str]] = {}
    for run in (r for r in plan.runs if r.arm == arm):
        result = status.get(run.key)
        state = result.status if result is not None else "not_started"
        if state in ("finished", "skipped"):
            state = "finished without a value of the selection metric"
        error = f": {result.error}" if result is not None and result.error else ""
        fates.setdefault(state.replace("_", " ") + error, []).append(run.key)
    return "; ".join(f"{', '.join(keys)} {fate}" for fate, keys in fates.items())
