"""Campaigns: the plan files (manifest.json, run_commands.sh) and the closing analysis.

Layout (the contract analysis reads)::

    <campaign>/manifest.json       kind, baseline, arms (name, role, pipeline, lr, runs), alpha,
                                   resamples, analysis_seed, commands, versions, git, task,
                                   lr_selection (the sweep's ``selection``: split, seeds and
                                   prompts that chose the LRs; null when no sweep did)
    <campaign>/run_commands.sh     one `tp train` per run; re-running one resumes it
    <campaign>/<arm>/seed<s>/      run directories
    <campaign>/analysis/           textpolicy.analysis.analyze_campaign's reports (or, when the
                                   analysis package is unavailable, comparison.{json,md})
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from textpolicy.runner import manifest as mf
from textpolicy.runner.execute import RunResult
from textpolicy.runner.plan import Plan
from textpolicy.runner.results import summarize_run
from textpolicy.runner.spec import Spec


def manifest_data(spec: Spec, plan: Plan, *, status: str = "planned",
                  results: Sequence[RunResult] = (), tuned: dict[str, float] | None = None,
                  selection: Mapping[str, Any] | None = None) -> dict[str, Any]:
    baseline = spec.baseline_arm.label
    by_key = {r.key: r for r in results}
    arms = []
    for arm in spec.arms:
        runs = [r for r in plan.runs if r.arm == arm.label]
        entries = []
        for run in runs:
            entry = mf.run_entry(run)
            if run.key in by_key:
                entry["status"] = by_key[run.key].status
                entry["steps_done"] = by_key[run.key].steps_done
                if by_key[run.key].error:
                    entry["error"] = by_key[run.key].error
            entries.append(entry)
        lr_source = ("arm" if arm.lr is not None else
                     "sweep" if tuned and arm.label in tuned else "training.lr")
        arms.append({
            "name": arm.label, "role": "baseline" if arm.label == baseline else "candidate",
            "pipeline": arm.pipeline, "lr": runs[0].lr if runs else None,
            "lr_source": lr_source, "params": runs[0].config.pipeline_params if runs else {},
            "runs": entries})
    commands = [mf.run_entry(r)["command"] for r in plan.runs]
    return {
        "kind": "campaign", "name": spec.name, "status": status, "created_at": mf.now(),
        "baseline": baseline, "arms": arms, "seeds": list(spec.seeds),
        "alpha": spec.analysis.alpha, "resamples": spec.analysis.resamples,
        "analysis_seed": spec.analysis.seed, "mde": spec.analysis.mde,
        "margin_pp": spec.analysis.margin_pp,
        "lr_selection": dict(selection) if selection is not None else None,
        "commands": commands, "versions": mf.versions(), "git": mf.git_commit(),
        "task": mf.task_fingerprint(spec.task.name, spec.task.params),
        "engine": {"name": spec.engine.name, "options": mf.redact(dict(spec.engine.options))},
        "spec": spec.to_dict(),
    }


def write_plan(spec: Spec, plan: Plan, tuned: dict[str, float] | None = None,
               selection: Mapping[str, Any] | None = None) -> None:
    plan.root.mkdir(parents=True, exist_ok=True)
    mf.write_json(plan.root / "manifest.json",
                  manifest_data(spec, plan, tuned=tuned, selection=selection))
    mf.write_run_commands(plan, header=[
        f"campaign {spec.name}: arms {', '.join(a.label for a in spec.arms)}; "
        f"seeds {', '.join(map(str, spec.seeds))}"])


def update_manifest(spec: Spec, plan: Plan, results: Sequence[RunResult],
                    tuned: dict[str, float] | None = None,
                    selection: Mapping[str, Any] | None = None) -> str:
    states = {r.status for r in results}
    status = ("finished" if states <= {"finished", "skipped"} else
              "failed" if "failed" in states else "incomplete")
    data = manifest_data(spec, plan, status=status, results=results, tuned=tuned,
                         selection=selection)
    mf.write_json(plan.root / "manifest.json", data)
    return status


def analyze(spec: Spec, plan: Plan) -> tuple[Path, str, bool]:
    """Run the analysis into <campaign>/analysis; return (directory, text to print, whether
    the significance analysis succeeded)."""
    out = plan.root / "analysis"
    try:
        from textpolicy.analysis import analyze_campaign
    except ImportError:
        return out, fallback_comparison(spec, plan), True
    try:
        report = analyze_campaign(plan.root, alpha=spec.analysis.alpha,
                                  num_resamples=spec.analysis.resamples,
                                  seed=spec.analysis.seed, mde=spec.analysis.mde, out_dir=out,
                                  margin_pp=spec.analysis.margin_pp)
    except Exception as exc:  # the runs are done; never lose them to a failing analysis
        text = fallback_comparison(spec, plan)
        return out, (f"{text}\nThe significance analysis failed "
                     f"({type(exc).__name__}: {exc}); re-run it with: tp analyze {plan.root}"
                     ), False
    text = ""
    for attr in ("summary_text", "markdown", "to_markdown"):
        value = getattr(report, attr, None)
        if callable(value):
            value = value()
        if isinstance(value, str) and value:
            text = value
            break
    if not text and (out / "significance.md").is_file():
        text = (out / "significance.md").read_text(encoding="utf-8")
    return out, text, True


def fallback_comparison(spec: Spec, plan: Plan) -> str:
    """comparison.json/md with the seed document's metrics (no significance tests)."""
    out = plan.root / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    arms: list[dict[str, Any]] = []
    for arm in spec.arms:
        runs = [r for r in plan.runs if r.arm == arm.label]
        sums = [summarize_run(Path(r.config.log_dir)) for r in runs]
        correct = sum(s.correct_count for s in sums)
        total = sum(s.total_count for s in sums)
        evals = [s.eval_accuracy for s in sums if s.eval_accuracy is not None]
        running = [s.running_correct_rate for s in sums if s.running_correct_rate is not None]
        arms.append({"name": arm.label, "pipeline": arm.pipeline, "seeds": len(runs),
                     "correct_count": correct, "total_count": total,
                     "correct_rate": correct / total if total else None,
                     "final_running_correct_rate": sum(running) / len(running) if running
                     else None,
                     "final_eval_accuracy": sum(evals) / len(evals) if evals else None})
    base = arms[0] if spec.baseline is None else next(a for a in arms
                                                        if a["name"] == spec.baseline)
    for a in arms:
        a["delta_correct_rate"] = (None if a["correct_rate"] is None
                                   or base["correct_rate"] is None
                                   else a["correct_rate"] - base["correct_rate"])
    mf.write_json(out / "comparison.json", {"baseline": base["name"], "arms": arms})
    # the final running correct rate stays in the JSON: with runs of equal length it is the
    # correct rate again, so the table shows each quantity once
    lines = ["# Campaign comparison", "", "| arm | pipeline | seeds | correct | correct rate | "
             "final eval | Δ correct rate |", "|---|---|---|---|---|---|---|"]
    for a in arms:
        def pct(v: Any) -> str:
            return "-" if v is None else f"{100 * v:.1f}%"
        lines.append(f"| {a['name']} | {a['pipeline']} | {a['seeds']} | {a['correct_count']}/"
                     f"{a['total_count']} | {pct(a['correct_rate'])} | "
                     f"{pct(a['final_eval_accuracy'])} | {pct(a['delta_correct_rate'])} |")
    text = "\n".join(lines) + "\n"
    (out / "comparison.md").write_text(text, encoding="utf-8")
    return text


def sweep_selection(spec: Spec) -> dict[str, Any] | None:
    """The ``selection`` of the sweep named by a campaign spec's ``lr_sweep`` (None: none
    named). A sweep_results.json from before selections were recorded gives ``split: null``."""
    if spec.lr_sweep is None:
        return None
    from textpolicy.errors import ConfigError

    path = Path(spec.lr_sweep)
    if path.is_dir():
        path = path / "sweep_results.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"lr_sweep: cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("kind") != "sweep":
        raise ConfigError(f"lr_sweep: {path} is not a sweep's sweep_results.json")
    selection = data.get("selection")
    if not isinstance(selection, dict):
        selection = {"metric": data.get("selection_metric"), "split": None,
                     "seeds": data.get("seeds"), "prompt_ids": [], "n_prompts": None}
    return {**selection, "sweep_results": str(path)}


def seed_overlap_note(spec: Spec, selection: Mapping[str, Any] | None) -> str | None:
    """A plan-time note when campaign seeds were also the seeds of the sweep that chose the
    LRs (those campaign runs replay probes step for step)."""
    if not selection:
        return None
    shared = sorted(set(spec.seeds) & set(selection.get("seeds") or ()))
    if not shared:
        return None
    return (f"note: campaign seed{'s' if len(shared) > 1 else ''} "
            f"{', '.join(map(str, shared))} {'were' if len(shared) > 1 else 'was'} also "
            "seeds of the sweep that chose the LRs: those runs replay its probes, and the "
            "report says so")
