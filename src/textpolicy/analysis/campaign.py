"""Campaign directories → arms, and ``analyze_campaign`` (writes ``<campaign>/analysis/``).

Layouts understood, in order:
1. ``manifest.json`` with ``arms: [{name, role, runs: [{seed, log_dir}]}]`` (the runner's);
2. the seed document's ``<campaign>/<arm>/metrics.jsonl`` (one run per arm);
3. ``<campaign>/<arm>/<run>/`` run directories without a manifest.
The baseline arm is the manifest's ``baseline`` (else the arm with role baseline, else the arm
called ``baseline``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from textpolicy import strictjson
from textpolicy.analysis import sequential
from textpolicy.analysis.files import write_texts
from textpolicy.analysis.jsonl import read_json
from textpolicy.analysis.markdown import build_sepa_significance_markdown, comparison_markdown
from textpolicy.analysis.records import _jsonable
from textpolicy.analysis.report import SignificanceReport, evaluate_significance
from textpolicy.analysis.rundata import RunData
from textpolicy.errors import AnalysisError

RUN_FILES = ("metrics.jsonl", "emergence/steps.jsonl", "eval.jsonl")


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in RUN_FILES)


def discover_arms(campaign_dir: str | os.PathLike[str]) -> tuple[dict[str, list[Path]], str,
                                                                  dict[str, Any]]:
    """(arm name → run dirs, baseline arm, manifest or {})."""
    root = Path(campaign_dir)
    if not root.exists():
        raise AnalysisError(f"campaign directory {root} does not exist")
    if not root.is_dir():
        raise AnalysisError(f"{root} is not a directory")
    manifest_path = root / "manifest.json"
    if (root / "experiment.json").is_file() and (root / "campaign").is_dir():
        raise AnalysisError(f"{root} is an experiment; its campaign is {root / 'campaign'} "
                            f"(tp analyze {root / 'campaign'})")
    if manifest_path.is_file():
        manifest = read_json(manifest_path)
        if manifest.get("kind") == "sweep":
            raise AnalysisError(
                f"{root} is an LR sweep, not a campaign: its results are in "
                f"{root / 'sweep_results.json'}; analyse the campaign it recommends")
        arms_spec = manifest.get("arms")
        if isinstance(arms_spec, list) and arms_spec:
            arms: dict[str, list[Path]] = {}
            baseline = manifest.get("baseline")
            for arm in arms_spec:
                if not isinstance(arm, dict) or "name" not in arm:
                    raise AnalysisError(f"{manifest_path}: every arm needs a name")
                name = str(arm["name"])
                runs = arm.get("runs") or []
                dirs = []
                for run in runs:
                    log_dir = run.get("log_dir") if isinstance(run, dict) else None
                    if not log_dir:
                        raise AnalysisError(f"{manifest_path}: arm {name!r} has a run "
                                            "without log_dir")
                    p = Path(log_dir)
                    dirs.append(p if p.is_absolute() else root / p)
                if not dirs:
                    raise AnalysisError(f"{manifest_path}: arm {name!r} lists no runs")
                arms[name] = dirs
                if baseline is None and arm.get("role") == "baseline":
                    baseline = name
            if baseline is None:
                baseline = "baseline" if "baseline" in arms else next(iter(arms))
            if baseline not in arms:
                raise AnalysisError(f"{manifest_path}: baseline {baseline!r} is not an arm")
            return arms, str(baseline), manifest
    else:
        manifest = {}
    arms = {}
    for child in sorted(root.iterdir()):
        if not child.is_dir() or child.name == "analysis":
            continue
        if _is_run_dir(child):
            arms[child.name] = [child]
            continue
        runs = sorted(p for p in child.iterdir() if _is_run_dir(p))
        if runs:
            arms[child.name] = runs
    if len(arms) < 2:
        raise AnalysisError(
            f"{root}: found {len(arms)} arm(s); expected manifest.json or at least two arm "
            "directories holding run files (metrics.jsonl / emergence/steps.jsonl / eval.jsonl)")
    if "baseline" in arms:
        baseline = "baseline"
    else:
        raise AnalysisError(f"{root}: no manifest.json and no arm called 'baseline' among "
                            f"{sorted(arms)}; use tp analyze --baseline DIR... --candidate DIR...")
    return arms, baseline, manifest


def comparison_dict(report: SignificanceReport) -> dict[str, Any]:
    """The seed document's per-arm metrics (comparison.json)."""
    arms = []
    for name, runs in report.runs.items():
        arms.append(_arm_metrics(name, runs, report))
    base = next(a for a in arms if a["name"] == report.baseline)
    deltas = []
    for a in arms:
        if a["name"] == report.baseline:
            continue
        d: dict[str, Any] = {"baseline": report.baseline, "candidate": a["name"]}
        for key in ("correct_rate", "heldout_accuracy", "mean_reward"):
            if a.get(key) is not None and base.get(key) is not None:
                d[f"{key}_delta_pp" if key != "mean_reward" else "mean_reward_delta"] = (
                    (a[key] - base[key]) * (100 if key != "mean_reward" else 1))
        deltas.append(d)
    return _jsonable({"baseline": report.baseline, "endpoint": report.endpoint.label,
                      "arms": arms, "deltas": deltas})


def _arm_metrics(name: str, runs: Sequence[RunData], report: SignificanceReport
                 ) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "runs": len(runs),
                           "run_dirs": [str(r.path) for r in runs]}
    counts = [c for r in runs if (c := r.step_counts) is not None]
    if len(counts) == len(runs):
        correct = sum(float(c["correct"].sum()) for c in counts)
        total = sum(float(c["total"].sum()) for c in counts)
        reward = sum(float((c["mean_reward"] * c["total"]).sum()) for c in counts)
        out.update(total_generations=int(total), correct_count=int(correct),
                   correct_rate=correct / total, mean_reward=reward / total,
                   steps=int(max(len(c["step"]) for c in counts)))

    def last_mean(key: str) -> float | None:
        vals = [r.metrics[key][-1] for r in runs if key in r.metrics]
        vals = [v for v in vals if np.isfinite(v)]
        return float(np.mean(vals)) if vals else None

    def all_mean(key: str) -> float | None:
        vals = [r.metrics[key] for r in runs if key in r.metrics]
        if not vals:
            return None
        arr = np.concatenate(vals)
        arr = arr[np.isfinite(arr)]
        return float(arr.mean()) if len(arr) else None

    out["final_running_correct_rate"] = last_mean("running_correct_rate")
    out["uses_sepa_lambda"] = _uses_sepa_lambda(runs)
    out["final_sepa_lambda"] = (None if out["uses_sepa_lambda"] is False
                                else last_mean("sepa_lambda"))
    out["max_token_hit_rate"] = all_mean("max_token_hit_rate")
    out["mean_step_time_s"] = all_mean("step_time_s")
    out["mean_loss"] = all_mean("loss")
    if "steps" not in out and runs[0].metrics:
        out["steps"] = int(max(len(r.metrics["step"]) for r in runs))
    if report.endpoint.kind == "heldout":
        out["heldout_accuracy"] = float(np.mean([report.values[r].value for r in runs]))
        out["heldout_step"] = report.endpoint.step
    return out


def _uses_sepa_lambda(runs: Sequence[RunData]) -> bool | None:
    """Whether the arm's pipeline has a scheduled λ (SEPA), from each run's config.json
    (None: a run does not record its pipeline). A pipeline without one logs λ = 0."""
    described = [d for r in runs if isinstance(d := r.config.get("pipeline"), Mapping)
                 and "scheduler" in d]
    if not runs or len(described) != len(runs):
        return None
    return any(d["scheduler"] is not None for d in described)


def write_outputs(report: SignificanceReport, out_dir: str | os.PathLike[str], *,
                  plots: bool = True, sequential_state: Mapping[str, Any] | None = None
                  ) -> dict[str, Path]:
    """Write comparison/significance .json/.md (+ PNG plots) into ``out_dir``.

    With ``sequential_state`` (a ``[sequential]`` campaign or pooled campaigns) the verdict
    is the design's: significance.json's ``recommendation`` is the sequential decision (the
    fixed-design one is kept as ``fixed_design_recommendation``) and significance.md opens
    with it and labels the fixed-design recommendation as ignoring the looks."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    comp = comparison_dict(report)
    data = report.to_dict()
    text = build_sepa_significance_markdown(report)
    if sequential_state is not None:
        data, text = sequential.override_verdict(data, text, sequential_state)
    files = {
        "comparison.json": strictjson.dumps(comp, indent=2) + "\n",
        "comparison.md": comparison_markdown(comp),
        "significance.json": strictjson.dumps(data, indent=2) + "\n",
        "significance.md": text,
    }
    written = write_texts(out, files)
    if plots:
        from textpolicy.analysis.plots import forest_plot, learning_curves

        written["learning_curves.png"] = learning_curves(report, out / "learning_curves.png")
        written["forest.png"] = forest_plot(report, out / "forest.png")
    return written


def resume_commands(campaign_dir: str | os.PathLike[str], manifest: dict[str, Any]
                    ) -> dict[str, str]:
    """Resolved run path → the shell command that resumes it (from the manifest)."""
    root = Path(campaign_dir)
    out: dict[str, str] = {}
    for arm in manifest.get("arms") or []:
        for run in (arm.get("runs") or []) if isinstance(arm, dict) else []:
            if isinstance(run, dict) and run.get("log_dir") and run.get("command"):
                path = Path(run["log_dir"])
                path = path if path.is_absolute() else root / path
                out[str(path.resolve())] = f"cd {root} && {run['command']}"
    return out


def analyze_campaign(campaign_dir: str | os.PathLike[str], *, alpha: float | None = None,
                     num_resamples: int | None = None, seed: int | None = None,
                     mde: float | None = None, out_dir: str | os.PathLike[str] | None = None,
                     paired: bool | None = None, plots: bool = True,
                     partial: bool = False, margin_pp: float | None = None
                     ) -> SignificanceReport:
    """Analyse a campaign directory and write ``<campaign>/analysis/`` (or ``out_dir``).

    ``alpha``/``num_resamples``/``seed`` default to the manifest's ``alpha``/``resamples``/
    ``analysis_seed`` when present, else 0.05 / 20000 / 0; ``margin_pp`` to the manifest's
    ``margin_pp`` (no margin tests when absent). A run that cannot be measured at the planned
    endpoint raises ``IncompleteRunsError`` (nothing is written) unless ``partial``.
    """
    arms, baseline, manifest = discover_arms(campaign_dir)
    seq_state = sequential.campaign_state(manifest)
    if seq_state is not None:  # the seeds the procedure used, not the waves it never ran
        arms = sequential.used_runs(arms, manifest, seq_state)
    alpha = alpha if alpha is not None else float(manifest.get("alpha", 0.05))
    num_resamples = num_resamples if num_resamples is not None else int(
        manifest.get("resamples", 20000))
    seed = seed if seed is not None else int(manifest.get("analysis_seed", 0))
    if margin_pp is None and manifest.get("margin_pp") is not None:
        margin_pp = float(manifest["margin_pp"])
    report = evaluate_significance({k: list(v) for k, v in arms.items()}, baseline=baseline,
                                   alpha=alpha, num_resamples=num_resamples, seed=seed,
                                   mde=mde, paired=paired, partial=partial,
                                   resume=resume_commands(campaign_dir, manifest),
                                   manifest=manifest, margin_pp=margin_pp)
    report = _with_lr_selection(report, manifest)
    out = Path(out_dir) if out_dir is not None else Path(campaign_dir) / "analysis"
    write_outputs(report, out, plots=plots, sequential_state=seq_state)
    if seq_state is not None:
        sequential.write_report(seq_state, out, plots=plots)
    return report


def _with_lr_selection(report: SignificanceReport, manifest: dict[str, Any]
                       ) -> SignificanceReport:
    import attrs

    from textpolicy.analysis.provenance import lr_selection

    seeds = sorted({r.seed for rs in report.runs.values() for r in rs if r.seed is not None})
    section = lr_selection(manifest, campaign_seeds=seeds,
                           endpoint_prompts=report.endpoint.prompt_ids)
    return attrs.evolve(report, lr_selection=section) if section else report
