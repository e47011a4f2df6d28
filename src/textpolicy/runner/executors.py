"""Executors: where the runs of a sweep or campaign execute.

An executor plugin (``textpolicy.hookspecs.textpolicy_register_executors``) turns the spec's
``[executor]`` table into a :class:`RunExecutor`, which takes planned runs and returns
``concurrent.futures.Future`` objects of their results — one Ray task or Slurm job per run.
``local`` is the exception: its factory returns ``None`` and the runner keeps its own slots
(threads or worker processes of this machine, :mod:`textpolicy.runner.execute`).

Everything else stays the runner's and is the same for every executor: finished runs are
skipped before anything is submitted, an interrupted run resumes from its checkpoint, each run
holds its run directory's lock while it trains (one writer per run), ``manifest.json`` and
``run_commands.sh`` are written before the first submission, a failed task or job is that
run's failure (``--continue-on-error`` as with ``local``), and Ctrl-C asks every running run to
stop after its current step (:func:`request_stop` writes ``<run>/.executor/stop``, which
:func:`run_job` watches) and cancels the runs not yet started.

**Shared filesystem.** A worker trains in the run directory the plan names, from the working
directory of ``tp``: both must be visible on every worker at the same path (NFS, Lustre, ...).
A worker that cannot see them fails that run with one line saying so. Each run's executor log
(host, start, outcome, traceback) is ``<run>/.executor/job.log``; Slurm's own stdout/stderr
files are next to it.
"""

from __future__ import annotations

import concurrent.futures
import os
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Protocol

import attrs

from textpolicy.errors import ConfigError

SIDE_DIR = ".executor"  # in each run directory: the executor's log, stop request, job files
STOP_NAME = "stop"
LOG_NAME = "job.log"


@attrs.frozen
class RunJob:
    """What a worker needs to train one planned run (plain data, picklable)."""

    key: str  # the run's directory relative to the plan's root
    config: dict[str, Any]  # TrainConfig.to_dict()
    cwd: str  # absolute working directory of `tp`: relative paths are resolved from it
    root: str  # the plan's output directory (as the plan names it)

    @property
    def run_dir(self) -> Path:
        return Path(self.cwd) / self.config["log_dir"]


def make_job(key: str, config: dict[str, Any], root: Path) -> RunJob:
    return RunJob(key=key, config=config, cwd=os.getcwd(), root=str(root))


class RunExecutor(Protocol):
    """What an executor plugin's factory returns (see docs/executors.md).

    * ``where()``: one line for a dry run, e.g. ``"ray at auto (num_cpus=1, num_gpus=0 per
      run)"``; connects to nothing.
    * ``start()``: connect (or start a local instance); raise ``ConfigError`` with one line
      when that fails. Called before the plan files are written.
    * ``submit(job)``: submit one run; return a future whose result is what
      :func:`run_job` returned for it (a failed task may raise instead: that run fails).
    * ``cancel(future, force)``: ``force=False`` cancels a run that has not started (a
      running one stops by itself after :func:`request_stop`); ``force=True`` (a second
      Ctrl-C) ends it now.
    * ``close()``: release what ``start`` made.
    """

    def where(self) -> str: ...

    def start(self) -> None: ...

    def submit(self, job: RunJob) -> concurrent.futures.Future[dict[str, Any]]: ...

    def cancel(self, future: concurrent.futures.Future[dict[str, Any]], force: bool) -> None: ...

    def close(self) -> None: ...


def side_dir(job: RunJob) -> Path:
    return job.run_dir / SIDE_DIR


def request_stop(job: RunJob) -> None:
    """Ask the run to stop after its current step (the worker sees the file)."""
    path = side_dir(job)
    path.mkdir(parents=True, exist_ok=True)
    (path / STOP_NAME).write_text("stop\n", encoding="utf-8")


def clear_stop(job: RunJob) -> None:
    """Remove an old stop request before the run is submitted again (a resume)."""
    (side_dir(job) / STOP_NAME).unlink(missing_ok=True)


def invisible(job: RunJob) -> str | None:
    """Why this machine cannot train ``job`` in place (None: it can)."""
    cwd = Path(job.cwd)
    if not cwd.is_dir() or not (cwd / job.root).is_dir():
        return (f"worker {socket.gethostname()} cannot see the output directory "
                f"{cwd / job.root}: executors need a filesystem shared with the machine "
                "that runs tp, at the same path (docs/executors.md)")
    return None


def run_job(job: RunJob) -> dict[str, Any]:
    """Train one run on a worker (a Ray task, a Slurm job, ...): the function executors
    submit. Returns ``{"status": finished|stopped|failed, "steps_done", "error"}``; never
    raises for a failed run (the error is in the result and in ``<run>/.executor/job.log``).

    The run stops after its current step, with a checkpoint, when ``request_stop`` was
    called for it or the process gets SIGINT/SIGTERM (``scancel``; submitit's local cancel)."""
    problem = invisible(job)
    if problem is not None:
        return {"status": "failed", "steps_done": 0, "error": problem}
    os.chdir(job.cwd)  # the run's relative paths are the driver's
    from textpolicy.errors import TextPolicyError
    from textpolicy.runner.results import completed_steps
    from textpolicy.training import TrainConfig, run_training

    log_path = side_dir(job) / LOG_NAME
    log_path.parent.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    restore = _stop_on_signals(stop)
    watcher = threading.Thread(target=_watch_stop, args=(side_dir(job) / STOP_NAME, stop),
                               daemon=True, name="stop watcher")
    watcher.start()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"{_now()} start {job.key} on {socket.gethostname()} pid {os.getpid()}\n")
        log.flush()
        try:
            outcome = run_training(TrainConfig(**job.config), stop=stop, progress="off")
            result: dict[str, Any] = {"status": outcome.status,
                                      "steps_done": outcome.steps_done, "error": None}
        except TextPolicyError as exc:
            result = {"status": "failed", "steps_done": None, "error": str(exc)}
        except Exception as exc:  # the run's failure, reported; the worker goes on
            log.write(traceback.format_exc())
            result = {"status": "failed", "steps_done": None,
                      "error": f"{type(exc).__name__}: {exc}"}
        finally:
            stop.set()  # ends the watcher
            restore()
        if result["steps_done"] is None:
            result["steps_done"] = completed_steps(job.run_dir)
        log.write(f"{_now()} {result['status']} after {result['steps_done']} steps"
                  + (f": {result['error']}" if result["error"] else "") + "\n")
    return result


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _watch_stop(path: Path, stop: threading.Event) -> None:
    while not stop.wait(0.2):
        if path.exists():
            stop.set()


def _stop_on_signals(stop: threading.Event) -> Any:
    """SIGINT/SIGTERM set ``stop`` (in the main thread only; Ray's worker threads skip it).
    Returns what restores the previous handlers."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    for sig in previous:
        signal.signal(sig, on_signal)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


# --------------------------------------------------------------------------- validators
def positive_number(_i: object, a: attrs.Attribute[Any], v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        raise TypeError(f"{a.name} must be a number > 0")


def non_negative_number(_i: object, a: attrs.Attribute[Any], v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise TypeError(f"{a.name} must be a number >= 0")


def positive_int(_i: object, a: attrs.Attribute[Any], v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise TypeError(f"{a.name} must be an integer > 0")


def non_negative_int(_i: object, a: attrs.Attribute[Any], v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise TypeError(f"{a.name} must be an integer >= 0")


def optional_str(_i: object, a: attrs.Attribute[Any], v: Any) -> None:
    if v is not None and not isinstance(v, str):
        raise TypeError(f"{a.name} must be a string")


def require(module: str, extra: str) -> None:
    """``ConfigError`` naming the install command when ``module`` cannot be imported."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"executor {extra!r} needs the {module} package: "
                          f"pip install 'textpolicy[{extra}]'")


# --------------------------------------------------------------------------- from a spec
def make_executor(name: str, options: dict[str, Any], root: Path) -> RunExecutor | None:
    """The executor a spec names (None: ``local``, the runner's own slots). The spec loader
    has validated ``options``; a missing package raises ``ConfigError``."""
    from textpolicy.plugins import get_registry, structure_params

    record = get_registry().executors.get(name)
    params = structure_params(record.params, options, where=f"executor {name!r}")
    if record.check is not None:
        record.check(params)
    backend: RunExecutor | None = record.factory(params, root)
    return backend
