"""Setting up one run's session: building its components, checking a resume, the entry point.

:func:`run_training` locks the run directory, builds the task, pipeline and engine from the
config (``make_task`` / ``make_engine``, ``check_engine`` judging the engine options without
making one), checks a stored run against the config (``check_resumable``) and its files against
the checkpoint (:mod:`textpolicy.training.integrity`: plan, then apply a recovery), writes
config.json for a fresh run, resumes the training client and pipeline state from a checkpoint,
and hands over to the step loop (:mod:`textpolicy.training.loop`). Resume: see
:mod:`textpolicy.training.runfiles`.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from textpolicy.engines.base import Engine, TrainingClient
from textpolicy.errors import ConfigError, ServiceUnreachable
from textpolicy.plugins import Registry, get_registry, structure_params
from textpolicy.tasks.base import Example, Task, held_out_examples
from textpolicy.training.config import TrainConfig
from textpolicy.training.data import DataOrder
from textpolicy.training.dirlock import DirLock
from textpolicy.training.evaluation import result_from_rows
from textpolicy.training.integrity import (
    Recovery,
    apply_recovery,
    expected_rows,
    plan_recovery,
)
from textpolicy.training.loop import Run, RunOutcome, train_steps
from textpolicy.training.progress import PROGRESS_MODES, make_reporter
from textpolicy.training.run_record import (
    build_record,
    check_resumable,
    redact,
)
from textpolicy.training.runfiles import (
    CHECKPOINTS,
    CONFIG,
    EVAL,
    RunFiles,
    read_jsonl,
)

# ---------------------------------------------------------------------------------------------
# Building the components


def make_task(config: TrainConfig, registry: Registry | None = None) -> Task:
    """The task named by ``config.task`` with ``config.task_params``."""
    reg = registry if registry is not None else get_registry()
    record = reg.tasks.get(config.task)
    params = structure_params(record.params, config.task_params, where=f"task {record.name!r}")
    task: Task = record.factory(params)
    return task


def check_engine(config: TrainConfig, registry: Registry | None = None) -> Any:
    """The engine's registry record, after checking that ``config.engine`` is registered and
    accepts ``config.engine_options`` by name (its values are judged when it is made)."""
    reg = registry if registry is not None else get_registry()
    record = reg.engines.get(config.engine)
    options = dict(config.engine_options)
    try:
        inspect.signature(record.factory).bind(**options)
    except TypeError:
        try:
            accepted = [p for p in inspect.signature(record.factory).parameters
                        if p not in ("self", "args", "kwargs")]
        except (TypeError, ValueError):
            accepted = []
        unknown = [k for k in options if k not in accepted] if accepted else list(options)
        raise ConfigError(
            f"engine {record.name!r} does not accept the options "
            f"{sorted(redact(unknown))}; allowed: {', '.join(accepted) or '(none)'}") from None
    except ValueError:
        pass  # no signature available: let the factory judge
    return record


def make_engine(config: TrainConfig, registry: Registry | None = None) -> Engine:
    """The engine named by ``config.engine``, made with ``**config.engine_options``."""
    record = check_engine(config, registry)
    engine: Engine = record.factory(**dict(config.engine_options))
    return engine


def _engine_description(engine: Engine, config: TrainConfig) -> dict[str, Any]:
    info: dict[str, Any] = {"name": getattr(engine, "name", config.engine),
                            "options": redact(config.engine_options)}
    describe = getattr(engine, "describe", None)
    if callable(describe):
        try:
            extra = describe()
        except Exception:  # a description is informative only
            extra = None
        if isinstance(extra, Mapping):
            info.update(redact(extra))
    return info


def _saves_locally(engine: Engine) -> bool:
    """Whether the engine's ``save_state`` takes an absolute local path as the name (then
    states go to ``<log_dir>/checkpoints/``); engines may say so with ``saves_locally``."""
    flag = getattr(engine, "saves_locally", None)
    if isinstance(flag, bool):
        return flag
    return getattr(engine, "name", "") == "local"


def _task_description(task: Task) -> dict[str, Any]:
    out = dict(task.describe())
    out.setdefault("name", task.name)
    out["fingerprint"] = dict(task.fingerprint())
    return out


def _load_pipeline(config: TrainConfig) -> Any:
    from textpolicy.pipeline import load_pipeline

    return load_pipeline(config.pipeline, **dict(config.pipeline_params))


def run_training(
    config: TrainConfig,
    *,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    stop: threading.Event | None = None,
    engine: Engine | None = None,
    progress: str = "auto",
    restart_from: int | None = None,
    on_start: Callable[[], None] | None = None,
) -> RunOutcome:
    """Train one run into ``config.log_dir`` (resuming from its last checkpoint if any).

    ``on_step(row)`` is called after each metrics row is written; ``stop`` is checked between
    steps (a set event ends the session cleanly after the current step, with a checkpoint);
    ``engine`` reuses an engine the caller made (it is not closed here); ``progress`` is one
    of ``auto`` | ``bar`` | ``plain`` | ``off``; ``restart_from`` rolls the run back to its
    checkpoint at that step (0: start over), discarding later rows and checkpoints;
    ``on_start()`` is called once the lock is held and the run's files passed their checks
    (before anything is changed), so a caller's first lines never precede a refusal.

    The run directory is locked for the whole session (:mod:`textpolicy.training.dirlock`:
    a second writer gets ``LockedError``), and a resume first checks the files against the
    checkpoint (:mod:`textpolicy.training.integrity`: ``RunDamagedError``, nothing changed).
    """
    if progress not in PROGRESS_MODES:
        raise ConfigError(f"progress {progress!r} is not one of {', '.join(PROGRESS_MODES)}")
    if restart_from is not None and restart_from < 0:
        raise ConfigError(f"--restart-from-step {restart_from}: must be >= 0")
    with DirLock(config.log_dir, what="run"):
        return _run_session(config, on_step=on_step, stop=stop, engine=engine,
                            progress=progress, restart_from=restart_from,
                            on_start=on_start or (lambda: None))


def _run_session(
    config: TrainConfig,
    *,
    on_step: Callable[[dict[str, Any]], None] | None,
    stop: threading.Event | None,
    engine: Engine | None,
    progress: str,
    restart_from: int | None,
    on_start: Callable[[], None],
) -> RunOutcome:
    registry = get_registry()
    task = make_task(config, registry)
    pipeline = _load_pipeline(config)
    model = config.model or task.default_model
    condition = config.condition or config.pipeline
    examples = _examples(config, task)
    files = RunFiles(config.log_dir)
    files.check_links()
    where = str(files.path(CONFIG))

    stored = files.read_config()
    checkpoint: dict[str, Any] | None = None
    recovery: Recovery | None = None
    if stored is not None and not files.has_any_rows():
        stored = None  # a start that failed before its first row (e.g. a bad --model)
    if stored is not None:
        check_resumable(stored, config, where)
        recovery = plan_recovery(files, expected_rows(config, len(examples[1])),
                                 restart_from=restart_from)
        checkpoint = recovery.checkpoint
        done = recovery.step
        if checkpoint is not None and done >= config.max_steps:
            # what was asked is still checked: a typo must not pass as "complete"
            check_engine(config, registry)
            old_options = (stored.get("config") or {}).get("engine_options") or {}
            if engine is None and dict(old_options) != dict(config.engine_options):
                make_engine(config, registry).close()  # judge the changed option values
            on_start()
            note = f"{config.log_dir}: run already complete at step {done}"
            return RunOutcome(log_dir=config.log_dir, steps_done=done, status="finished",
                              resumed_from=done, final_eval=_final_eval(files, config, done),
                              note=note)
    elif files.has_any_rows():
        raise ConfigError(f"{config.log_dir} holds run files but no config.json; "
                          f"use another --log-dir")
    elif restart_from:
        raise ConfigError(f"--restart-from-step {restart_from}: {config.log_dir} holds no "
                          f"checkpoint to roll back to")
    on_start()

    if stop is not None and stop.is_set():  # asked to stop before anything started
        done = int(checkpoint["step"]) if checkpoint else 0
        return RunOutcome(log_dir=config.log_dir, steps_done=done, status="stopped",
                          note="stop was requested before the run started")

    owns_engine = engine is None
    if engine is None:
        engine = make_engine(config, registry)
    reporter = make_reporter(progress)
    tc: TrainingClient | None = None
    run: Run | None = None
    try:
        start = int(checkpoint["step"]) if checkpoint else 0
        if recovery is not None:
            apply_recovery(files, recovery)
        if checkpoint is not None:
            tc = engine.resume_training_client(_state_location(files, checkpoint))
            pipeline.load_state_dict(checkpoint.get("pipeline_state") or {})
        else:
            tc = engine.create_training_client(model, lora_rank=config.lora_rank,
                                               seed=config.seed)
        if stored is None:  # written once the model loaded: a bad --model leaves no record
            record = build_record(
                config, condition=condition, model=model, pipeline=pipeline.describe(),
                task=_task_description(task), engine=_engine_description(engine, config))
            files.write_config(record)
        run = Run(config, task, pipeline, files, tc, reporter, condition,
                   local_states=_saves_locally(engine), examples=examples)
        if checkpoint is not None:
            loop_state = checkpoint.get("loop_state") or {}
            run.correct_total = int(loop_state.get("correct_total", 0))
            run.completions_total = int(loop_state.get("completions_total", 0))
        return train_steps(run, start, resumed=checkpoint is not None, on_step=on_step, stop=stop)
    except ServiceUnreachable as exc:  # one line: what, how long, what is safe, what next
        rows = read_jsonl(files.path(CHECKPOINTS))
        saved = (f"the last checkpoint is step {rows[-1].get('step')}" if rows
                 else "no checkpoint was saved yet")
        raise ServiceUnreachable(f"{exc}; stopped: {saved} in {config.log_dir}; run the same "
                                 "command again to resume") from None
    finally:
        reporter.close()
        files.close()
        if tc is not None:
            tc.close()
        if owns_engine:
            engine.close()


def _examples(config: TrainConfig, task: Task) -> tuple[DataOrder, list[Example]]:
    """The run's training order and held-out examples (checked before anything is written)."""
    train = list(task.train_examples(config.seed))
    if config.max_examples is not None:
        train = train[: config.max_examples]
    if not train:
        raise ConfigError(f"task {task.name!r} has no training examples")
    held_out = (held_out_examples(task, config.eval_split, config.eval_prompts)
                if config.eval_every > 0 else [])
    if config.eval_every > 0 and not held_out:
        raise ConfigError(f"task {task.name!r} has no {config.eval_split} examples to evaluate; "
                          f"set eval_every to 0 (--eval-every 0)")
    return DataOrder(train, config.seed), held_out


def _state_location(files: RunFiles, checkpoint: Mapping[str, Any]) -> str:
    """A checkpoint's state path; relative paths are relative to the run directory."""
    path = str(checkpoint["state_path"])
    if "://" in path or Path(path).is_absolute():
        return path
    return str((files.root / path).resolve())


def _final_eval(files: RunFiles, config: TrainConfig, step: int) -> dict[str, float] | None:
    if config.eval_every <= 0:
        return None
    rows = [r for r in read_jsonl(files.path(EVAL)) if r.get("step") == step]
    if not rows:
        return None
    return result_from_rows(step, rows, config.eval_samples).metrics(prefix="")


__all__ = [
    "check_engine",
    "make_engine",
    "make_task",
    "run_training",
]
