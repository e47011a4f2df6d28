"""Running a spec: sweep, campaign, or experiment (sweep → campaign at the tuned LRs →
analysis). ``tp run``, ``tp sweep`` and ``tp campaign`` all end here.

Output directories: a sweep or a campaign writes into the spec's output directory; an
experiment writes ``<output>/sweep/`` and ``<output>/campaign/`` (its analysis in
``<output>/campaign/analysis/``) and ``<output>/experiment.json``.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from textpolicy.errors import TextPolicyError
from textpolicy.runner import campaign as cmp
from textpolicy.runner import manifest as mf
from textpolicy.runner import sequential
from textpolicy.runner import sweep as swp
from textpolicy.runner.execute import Executor, RunResult, WandbTarget
from textpolicy.runner.executors import RunExecutor, make_executor
from textpolicy.runner.follow import wandb_problem
from textpolicy.runner.plan import (
    Plan,
    campaign_plan,
    check_existing_runs,
    format_lr,
    sweep_plan,
)
from textpolicy.runner.preflight import check_plan
from textpolicy.runner.progress import Display
from textpolicy.runner.results import completed_steps, is_finished
from textpolicy.runner.spec import Spec, WandbSpec
from textpolicy.training.dirlock import DirLock
from textpolicy.training.summary import effective_model, settings_lines
from textpolicy.wording import plural

EXIT_OK, EXIT_FAILED, EXIT_STOPPED = 0, 1, 130

Echo = Callable[[str], None]


class RunFailedError(TextPolicyError):
    """Runs of a sweep or campaign failed (exit code 1)."""


@attrs.frozen
class Options:
    """How to run (the spec says what)."""

    execute: bool = True
    parallel: int | None = None  # None: the spec's
    continue_on_error: bool | None = None
    workers: str = "auto"
    progress: str = "auto"
    #: how a dry run tells the user to execute (`tp campaign --execute`, `tp run` without
    #: `--dry-run`)
    execute_hint: str = "add --execute to run it"


@attrs.frozen
class Outcome:
    exit_code: int
    root: Path
    sweep: swp.SweepReport | None = None
    campaign_status: str | None = None
    analysis_dir: Path | None = None


def _wandb_settings(spec: Spec, echo: Echo) -> WandbSpec | None:
    """The [wandb] settings the runs use, checked once before training starts: without a key
    or a reachable W&B they log offline, and one line says so."""
    if spec.wandb is None:
        return None
    problem = wandb_problem(spec.wandb.mode)
    if problem is None:
        return spec.wandb
    echo(f"W&B: {problem}: logging offline instead (upload later with `wandb sync`)")
    return attrs.evolve(spec.wandb, mode="offline")


def _parallel(spec: Spec, opts: Options) -> int:
    return opts.parallel if opts.parallel is not None else spec.parallel


def _backend(spec: Spec, plan: Plan, opts: Options, echo: Echo) -> RunExecutor | None:
    """The spec's executor (None: ``local``). A dry run says what would be submitted where;
    a real run connects now, before any plan file is written (an unreachable cluster is
    refused with nothing written)."""
    backend = make_executor(spec.executor.name, dict(spec.executor.options), plan.root)
    if backend is None:
        return None
    if not opts.execute:
        todo = [r.key for r in plan.runs
                if not is_finished(Path(r.config.log_dir), r.config.max_steps)]
        echo(f"Executor {spec.executor.name}: would submit {plural(len(todo), 'run')} to "
             f"{backend.where()}, at most {_parallel(spec, opts)} at a time"
             + (f": {', '.join(todo)}" if todo else ""))
        return None
    backend.start()
    echo(f"Executor {spec.executor.name}: {backend.where()}")
    return backend


def _execute(spec: Spec, plan: Plan, opts: Options, stop: threading.Event, title: str,
             wandb_settings: WandbSpec | None, backend: RunExecutor | None
             ) -> list[RunResult]:
    try:
        return _executor(spec, plan, opts, stop, title, wandb_settings, backend).run()
    finally:
        if backend is not None:
            backend.close()


def _executor(spec: Spec, plan: Plan, opts: Options, stop: threading.Event,
              title: str, wandb_settings: WandbSpec | None,
              backend: RunExecutor | None = None) -> Executor:
    parallel = _parallel(spec, opts)
    cont = (opts.continue_on_error if opts.continue_on_error is not None
            else spec.continue_on_error)
    wandb = (WandbTarget(wandb_settings, group=spec.name or plan.root.name)
             if wandb_settings is not None else None)
    return Executor(plan, parallel=parallel, continue_on_error=cont, workers=opts.workers,
                    display=Display(title, mode=opts.progress), wandb=wandb, stop=stop,
                    backend=backend)


def _check(results: list[RunResult], stop: threading.Event, echo: Echo) -> int:
    if stop.is_set() or any(r.status == "stopped" for r in results):
        echo("Stopped: every run saved a checkpoint; run the same command again to resume.")
        return EXIT_STOPPED
    for r in results:
        if r.wandb_error:
            echo(f"W&B logging of {r.key} stopped (training went on; its metrics.jsonl is "
                 f"complete, `tp follow` can log it): {r.wandb_error}")
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        echo(f"FAILED {r.key}: {r.error}")
    return EXIT_FAILED if failed else EXIT_OK


def run_states(plan: Plan) -> dict[str, int]:
    """How many of the plan's runs are finished, partly made, and not started."""
    counts = {"finished": 0, "partial": 0, "pending": 0}
    for run in plan.runs:
        log_dir = Path(run.config.log_dir)
        if is_finished(log_dir, run.config.max_steps):
            counts["finished"] += 1
        elif completed_steps(log_dir) or (log_dir / "checkpoints.jsonl").is_file():
            counts["partial"] += 1
        else:
            counts["pending"] += 1
    return counts


def _state_line(counts: dict[str, int]) -> str:
    parts = [f"{counts['finished']} finished"]
    if counts["partial"]:
        parts.append(f"{counts['partial']} partly made (would resume)")
    parts.append(f"{counts['pending']} pending")
    todo = counts["partial"] + counts["pending"]
    tail = "nothing to run" if not todo else f"{plural(todo, 'run')} to run"
    return f"Runs: {', '.join(parts)}; {tail}"


def _keeps_record(root: Path, counts: dict[str, int]) -> bool:
    """Whether the plan files in ``root`` record runs already made (a dry run must not
    rewrite them: the manifest holds each run's status and steps)."""
    if not (root / "manifest.json").is_file():
        return False
    if counts["finished"] or counts["partial"]:
        return True
    return _recorded_status(root / "manifest.json") not in (None, "planned")


def _recorded_status(path: Path) -> str | None:
    """The ``status`` a JSON record holds (None: no file or no status; "unreadable")."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return "unreadable"  # not ours to overwrite without running
    status = data.get("status") if isinstance(data, dict) else "unreadable"
    return status if isinstance(status, str) or status is None else "unreadable"


def _echo_settings(plan: Plan, echo: Echo) -> None:
    """Engine, task, model and sizes (the same in every run of a plan)."""
    if plan.runs:
        config = plan.runs[0].config
        for line in settings_lines(config, effective_model(config), run=False):
            echo(line)


def _dry_run(spec: Spec, plan: Plan, notes: list[str], echo: Echo,
             write: Callable[[], None], hint: str = "") -> None:
    counts = run_states(plan)
    echo(_state_line(counts))
    root = plan.root
    if _keeps_record(root, counts):
        echo(f"Dry run: kept {root / 'manifest.json'} and {root / 'run_commands.sh'} as they "
             "are (they record the runs already made)")
    else:
        write()
        echo(f"Dry run: wrote {root / 'manifest.json'} and {root / 'run_commands.sh'}{hint}")
    for note in _environment_notes(spec, notes):
        echo(f"Not ready on this machine: {note}")


def _environment_notes(spec: Spec, engine_notes: list[str]) -> list[str]:
    """What would stop the runs on this machine (the engine's, the task data's, W&B's)."""
    notes = list(engine_notes)
    task = mf.task_fingerprint(spec.task.name, spec.task.params)
    if task.get("fingerprint_error"):
        notes.append(f"task {spec.task.name!r} data: {task['fingerprint_error']}")
    if spec.wandb is not None:
        problem = wandb_problem(spec.wandb.mode)
        if problem is not None:
            notes.append(f"W&B: {problem}; the runs would log offline")
    return notes


def sweep(spec: Spec, root: Path, opts: Options, stop: threading.Event, echo: Echo,
          wandb_settings: WandbSpec | None, campaign_output: str | None = None
          ) -> tuple[int, swp.SweepReport | None]:
    plan = sweep_plan(spec, root)
    check_existing_runs(plan)
    notes = check_plan(plan)
    echo(f"LR sweep: {plural(len(plan.runs), 'probe')} ({plural(plan.total_steps, 'step')}) "
         f"in {root}")
    _echo_settings(plan, echo)
    backend = _backend(spec, plan, opts, echo)
    if not opts.execute:
        _dry_run(spec, plan, notes, echo, lambda: swp.write_plan(spec, plan))
        return EXIT_OK, None
    swp.write_plan(spec, plan)
    results = _execute(spec, plan, opts, stop, f"sweep {spec.name}", wandb_settings, backend)
    code = _check(results, stop, echo)
    if code == EXIT_STOPPED:
        return code, None
    report = swp.finish_sweep(spec, plan, results, campaign_output)
    echo(report.text())
    if report.untuned:  # an arm without an LR: nothing to recommend, the sweep failed
        code = EXIT_FAILED
    return code, report


def campaign(spec: Spec, root: Path, opts: Options, stop: threading.Event, echo: Echo,
             wandb_settings: WandbSpec | None, tuned: dict[str, float] | None = None,
             selection: Mapping[str, Any] | None = None
             ) -> tuple[int, str | None, Path | None]:
    plan = campaign_plan(spec, root, tuned)
    check_existing_runs(plan)
    notes = check_plan(plan)
    if selection is None:
        selection = cmp.sweep_selection(spec)
    lrs = ", ".join(f"{a.label}={format_lr(next(r.lr for r in plan.runs if r.arm == a.label))}"
                    for a in spec.arms)
    echo(f"Campaign: {plural(len(spec.arms), 'arm')} × {plural(len(spec.seeds), 'seed')} = "
         f"{plural(len(plan.runs), 'run')} ({plural(plan.total_steps, 'step')}) in {root}; "
         f"LRs {lrs}")
    _echo_settings(plan, echo)
    few = few_seeds_warning(len(spec.seeds))
    if few:
        echo(few)
    note = cmp.seed_overlap_note(spec, selection)
    if note:
        echo(note)
    if spec.sequential is not None:
        echo(sequential.describe(spec))
    backend = _backend(spec, plan, opts, echo)
    if not opts.execute:
        _dry_run(spec, plan, notes, echo,
                 lambda: cmp.write_plan(spec, plan, tuned, selection), f"; {opts.execute_hint}")
        return EXIT_OK, "planned", None
    if spec.sequential is not None:  # waves of seeds, a look after each
        try:
            code, status, _ = sequential.campaign(
                spec, plan, tuned, selection, echo=echo,
                check=lambda r: _check(r, stop, echo),
                run_wave=lambda wave: _executor(spec, wave, opts, stop,
                                                f"campaign {spec.name}", wandb_settings,
                                                backend).run())
        finally:
            if backend is not None:
                backend.close()
    else:
        cmp.write_plan(spec, plan, tuned, selection)
        results = _execute(spec, plan, opts, stop, f"campaign {spec.name}", wandb_settings,
                           backend)
        status = cmp.update_manifest(spec, plan, results, tuned, selection)
        code = _check(results, stop, echo)
    if code != EXIT_OK:
        return code, status, None
    if not spec.analysis.enabled:
        return code, status, None
    out, text, ok = cmp.analyze(spec, plan)
    if spec.sequential is not None and ok:  # every look and the design-adjusted p first
        text = sequential.report_text(plan.root) + "\n" + text
    if text:
        echo(text.rstrip())
    echo(f"Analysis written to {out}")
    return (code if ok else EXIT_FAILED), status, out


def few_seeds_warning(n_seeds: int) -> str | None:
    """The plan-time warning for a campaign with fewer seeds than the analysis needs."""
    from textpolicy.analysis.records import MIN_SEED_PAIRS

    if n_seeds >= MIN_SEED_PAIRS:
        return None
    return (f"Warning: {plural(n_seeds, 'seed')} per arm; the analysis needs at least "
            f"{MIN_SEED_PAIRS} paired seeds before it can call a difference significant "
            "(with fewer its recommendation is insufficient_seeds). Plan more seeds "
            f"(--seeds 0-{MIN_SEED_PAIRS - 1}, or seeds = [...] in the spec); `tp power --mde PP` "
            "gives how many an effect of PP points needs.")


def run_spec(spec: Spec, opts: Options | None = None, *, echo: Echo = print,
             stop: threading.Event | None = None) -> Outcome:
    """Run (or with ``execute=False`` only plan) a spec of any kind.

    The output directory is locked for the whole call (one ``tp run`` / ``tp sweep`` /
    ``tp campaign`` per output; a second gets ``LockedError`` before writing anything), and
    each run's directory is locked by the run itself."""
    opts = opts or Options()
    stop = stop or threading.Event()
    root = spec.output_dir()
    if spec.kind == "pool":  # trains nothing; analyses, then locks and writes (runner.pool)
        from textpolicy.runner.pool import run_pool

        return Outcome(run_pool(spec, execute=opts.execute, echo=echo,
                                hint=f"; {opts.execute_hint}"), root,
                       analysis_dir=root if opts.execute else None)
    with contextlib.ExitStack() as locks:
        locks.enter_context(DirLock(root, what="output directory"))
        if spec.kind == "experiment":  # its parts are outputs of their own too
            for part in ("sweep", "campaign"):
                locks.enter_context(DirLock(root / part, what="output directory"))
        return _run_spec(spec, opts, echo, stop)


def _run_spec(spec: Spec, opts: Options, echo: Echo, stop: threading.Event) -> Outcome:
    root = spec.output_dir()
    wandb = _wandb_settings(spec, echo) if opts.execute else None
    if spec.kind == "sweep":
        code, report = sweep(spec, root, opts, stop, echo, wandb)
        return Outcome(code, root, sweep=report)
    if spec.kind == "campaign":
        code, status, analysis = campaign(spec, root, opts, stop, echo, wandb)
        return Outcome(code, root, campaign_status=status, analysis_dir=analysis)
    # experiment
    root.mkdir(parents=True, exist_ok=True)
    campaign_root = root / "campaign"
    code, report = sweep(spec, root / "sweep", opts, stop, echo, wandb,
                         campaign_output=str(campaign_root))
    if not opts.execute:
        few = few_seeds_warning(len(spec.seeds))  # its campaign is planned after the sweep
        if few:
            echo(few)
        if _recorded_status(root / "experiment.json") not in (None, "planned"):
            return Outcome(code, root)  # it records an experiment already run
        mf.write_json(root / "experiment.json", {
            "kind": "experiment", "name": spec.name, "status": "planned",
            "sweep": "sweep", "campaign": "campaign",
            "note": "the campaign is planned once the sweep has chosen each arm's LR",
            "spec": spec.to_dict()})
        return Outcome(code, root)
    cont = (opts.continue_on_error if opts.continue_on_error is not None
            else spec.continue_on_error)
    if report is None or code == EXIT_STOPPED or (code == EXIT_FAILED and not cont):
        return Outcome(code, root, sweep=report)
    if report.untuned:
        raise RunFailedError(f"the sweep found no LR: {report.failure()}")
    tuned = report.best_lr
    echo("Campaign LRs from the sweep: "
         + ", ".join(f"{k}={format_lr(v)}" for k, v in tuned.items()))
    selection = {**report.selection, "sweep_results": str(report.results_path)}
    code2, status, analysis = campaign(spec, campaign_root, opts, stop, echo, wandb, tuned,
                                       selection)
    mf.write_json(root / "experiment.json", {
        "kind": "experiment", "name": spec.name, "status": status,
        "sweep": "sweep", "campaign": "campaign", "best_lr": tuned,
        "selection_metric": report.metric, "selection_split": selection.get("split"),
        "selection_seeds": selection.get("seeds"), "analysis": "campaign/analysis" if analysis
        else None, "spec": spec.to_dict()})
    return Outcome(code2 if code2 != EXIT_OK else code, root, sweep=report,
                   campaign_status=status, analysis_dir=analysis)
