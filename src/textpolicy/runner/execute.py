"""Executing a plan: finished runs skipped, interrupted runs resumed, N at a time.

Runs execute in *slots*; each slot makes one engine and reuses it for run after run (each
run gets its own training client), so imports and engine start-up are paid once per slot:

* ``parallel == 1``: one slot, a thread of this process.
* ``parallel > 1``, ``workers="thread"`` (the default, ``auto``): N threads of this process,
  each with its own engine. Remote engines (``tinker``) mostly wait on the network; the local
  engine's torch kernels release the GIL, and the threads share one import of torch and
  transformers.
* ``parallel > 1``, ``workers="process"``: N long-lived worker processes
  (``python -m textpolicy.runner.worker``), each paying its own imports and engine start-up.
  Measured on the 2-core machine (docs/performance.md, "Runner parallelism") threads were at
  least as fast and used less CPU, so ``auto`` means threads.
* an executor plugin (``[executor] name = "ray" | "slurm" | ...``,
  :mod:`textpolicy.runner.executors`): each run is submitted as its own task or job and
  waited on as a future; ``parallel`` caps the runs submitted at once.

Training always happens off the main thread; the main thread only waits, so Ctrl-C sets the
stop event (forwards SIGINT to worker processes, asks an executor's runs to stop): every
running run ends after its current step with a checkpoint, and re-running the same command
resumes it. A run whose metrics hold every step and whose final checkpoint exists is skipped.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import attrs

from textpolicy.errors import Aborted, TextPolicyError
from textpolicy.runner import executors as ex
from textpolicy.runner.follow import Follower, FollowerThread, describe_error
from textpolicy.runner.plan import Plan, PlannedRun
from textpolicy.runner.progress import Display
from textpolicy.runner.results import completed_steps, is_finished, iter_jsonl
from textpolicy.runner.spec import WandbSpec
from textpolicy.urls import redact_url

WORKER_MODES = ("auto", "thread", "process")


@attrs.define
class RunResult:
    key: str
    status: str  # finished | skipped | stopped | failed | not_started
    steps_done: int = 0
    error: str | None = None
    seconds: float = 0.0
    wandb_error: str | None = None  # why its W&B logging stopped (training went on)


@attrs.frozen
class WandbTarget:
    spec: WandbSpec
    group: str

    def follower(self, run: PlannedRun, poll: float = 1.0) -> Follower:
        return Follower(Path(run.config.log_dir) / "metrics.jsonl", project=self.spec.project,
                        entity=self.spec.entity, group=self.spec.group or self.group,
                        run_name=f"{self.group}-{run.key.replace('/', '-')}",
                        poll_seconds=poll, idle_timeout_seconds=float("inf"),
                        mode=self.spec.mode)


class _Slot:
    """Somewhere a run executes: a thread of this process or a worker process. A slot keeps
    its engine (and its imports) from run to run."""

    def __init__(self, executor: Executor, index: int) -> None:
        self.executor = executor
        self.index = index
        self.current: str | None = None

    def assign(self, run: PlannedRun) -> None:
        raise NotImplementedError

    def interrupt(self) -> None:
        pass

    def close(self) -> None:
        pass


class _ThreadSlot(_Slot):
    def __init__(self, executor: Executor, index: int, engine: Any = None) -> None:
        super().__init__(executor, index)
        self._jobs: queue.Queue[PlannedRun | None] = queue.Queue()
        self._engine = engine
        self._owns_engine = engine is None
        self._thread = threading.Thread(target=self._main, daemon=True, name=f"slot {index}")
        self._thread.start()

    def assign(self, run: PlannedRun) -> None:
        self.current = run.key
        self._jobs.put(run)

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=60)

    def _main(self) -> None:
        from textpolicy.training import run_training
        from textpolicy.training.session import make_engine

        events = self.executor.events
        try:
            while True:
                run = self._jobs.get()
                if run is None:
                    return
                key = run.key

                def on_step(row: dict[str, Any], key: str = key) -> None:
                    events.put(("step", (key, row)))

                try:
                    if self._engine is None:
                        self._engine = make_engine(run.config)
                    outcome = run_training(run.config, on_step=on_step,
                                           stop=self.executor.stop, engine=self._engine,
                                           progress="off")
                    result = RunResult(key, "finished" if outcome.status == "finished"
                                       else "stopped", outcome.steps_done)
                except TextPolicyError as exc:
                    result = RunResult(key, "failed", _steps(run), error=str(exc))
                except Exception as exc:  # a crashed run is reported; the others go on
                    result = RunResult(key, "failed", _steps(run),
                                       error=f"{type(exc).__name__}: {exc}")
                events.put(("done", (self.index, result)))
        finally:
            close = getattr(self._engine, "close", None)
            if self._owns_engine and callable(close):
                close()


class _ProcessSlot(_Slot):
    def __init__(self, executor: Executor, index: int) -> None:
        super().__init__(executor, index)
        log_dir = executor.plan.root / ".runner"
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(log_dir / f"worker{index}.log", "ab")  # noqa: SIM115
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "textpolicy.runner.worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._log, env=env, text=True, bufsize=1)
        self._runs: dict[str, PlannedRun] = {}
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name=f"worker {index} reader")
        self._reader.start()

    def assign(self, run: PlannedRun) -> None:
        self.current = run.key
        self._runs[run.key] = run
        assert self.proc.stdin is not None
        job = {"key": run.key, "config": run.config.to_dict()}
        self.proc.stdin.write(json.dumps(job, default=str) + "\n")
        self.proc.stdin.flush()

    def interrupt(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.send_signal(signal.SIGINT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._reader.join(timeout=10)
        self._log.close()

    def _read(self) -> None:
        events = self.executor.events
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            key = msg.get("key")
            if msg.get("event") == "step":
                events.put(("step", (key, msg)))
            elif msg.get("event") == "done":
                run = self._runs.get(key)
                steps = msg.get("steps_done")
                if steps is None and run is not None:
                    steps = _steps(run)
                events.put(("done", (self.index, RunResult(key, msg["status"], int(steps or 0),
                                                           error=msg.get("error")))))
                self.current = None
        code = self.proc.wait()
        if self.current is not None:  # died mid-run
            run = self._runs[self.current]
            status = "stopped" if self.executor.stop.is_set() else "failed"
            events.put(("done", (self.index, RunResult(
                run.key, status, _steps(run), error=f"worker exited with code {code}"))))
            self.current = None
        events.put(("dead", self.index))


class _RemoteSlot(_Slot):
    """A run submitted to an executor plugin (Ray task, Slurm job, ...): its future is waited
    on by a thread that also reports each new metrics row (the files are shared)."""

    def __init__(self, executor: Executor, index: int, backend: ex.RunExecutor) -> None:
        super().__init__(executor, index)
        self.backend = backend
        self._job: ex.RunJob | None = None
        self._future: Any = None

    def assign(self, run: PlannedRun) -> None:
        self.current = run.key
        job = ex.make_job(run.key, run.config.to_dict(), self.executor.plan.root)
        ex.clear_stop(job)
        self._job = job
        try:
            self._future = self.backend.submit(job)
        except Exception as exc:  # a refused submission is that run's failure
            self._finish(run, {"status": "failed", "steps_done": None,
                               "error": f"submission failed: {type(exc).__name__}: {exc}"})
            return
        threading.Thread(target=self._watch, args=(run, self._future), daemon=True,
                         name=f"remote slot {self.index}").start()

    def _watch(self, run: PlannedRun, future: Any) -> None:
        seen = _steps(run)
        asked = False
        while True:
            try:
                outcome = future.result(timeout=1.0)
            except concurrent.futures.TimeoutError:
                if self.executor.stop.is_set() and not asked:  # stopped without Ctrl-C
                    asked = True
                    self.interrupt()
                done = _steps(run)
                if done > seen:
                    seen = done
                    rows = list(iter_jsonl(Path(run.config.log_dir) / "metrics.jsonl"))
                    row = rows[-1] if rows else {}
                    self.executor.events.put(("step", (run.key, {**row, "step": done - 1})))
                continue
            except concurrent.futures.CancelledError:
                outcome = {"status": "stopped", "steps_done": None, "error": "cancelled"}
            except Exception as exc:  # the task or job died: that run's failure
                stopping = self.executor.stop.is_set()
                outcome = {"status": "stopped" if stopping else "failed", "steps_done": None,
                           "error": f"{type(exc).__name__}: {_first_line(exc)}"}
            self._finish(run, outcome)
            return

    def _finish(self, run: PlannedRun, outcome: dict[str, Any]) -> None:
        steps = outcome.get("steps_done")
        result = RunResult(run.key, str(outcome.get("status") or "failed"),
                           int(steps) if steps is not None else _steps(run),
                           error=outcome.get("error"))
        self.current = None
        self.executor.events.put(("done", (self.index, result)))

    def interrupt(self) -> None:
        if self._job is not None and self.current is not None:
            ex.request_stop(self._job)
            if self._future is not None:
                self.backend.cancel(self._future, force=False)

    def kill(self) -> None:
        if self._future is not None and self.current is not None:
            self.backend.cancel(self._future, force=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _steps(run: PlannedRun) -> int:
    return completed_steps(Path(run.config.log_dir))


class Executor:
    def __init__(self, plan: Plan, *, parallel: int = 1, continue_on_error: bool = False,
                 workers: str = "auto", display: Display | None = None,
                 wandb: WandbTarget | None = None, stop: threading.Event | None = None,
                 backend: ex.RunExecutor | None = None) -> None:
        self.plan = plan
        self.backend = backend  # an executor plugin's (None: this machine's slots)
        self.parallel = max(1, parallel)
        self.continue_on_error = continue_on_error
        if workers == "auto":
            workers = "thread"
        self.workers = workers if self.parallel > 1 else "thread"
        if backend is not None:
            self.workers = "remote"
        self.display = display or Display(plan.kind, mode="off")
        self.wandb = wandb
        self.stop = stop or threading.Event()
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.engine: Any = None  # an engine to reuse in-process (parallel == 1)
        self._wandb_errors: dict[str, str] = {}  # run key → why its follower did not start

    def _make_slot(self, index: int) -> _Slot:
        if self.backend is not None:
            return _RemoteSlot(self, index, self.backend)
        if self.workers == "process":
            return _ProcessSlot(self, index)
        return _ThreadSlot(self, index, engine=self.engine)

    # ------------------------------------------------------------------ public
    def run(self) -> list[RunResult]:
        with _interruptible():
            return self._run()

    def _run(self) -> list[RunResult]:
        runs = list(self.plan.runs)
        results: dict[str, RunResult] = {}
        self.display.start([r.key for r in runs], {r.key: r.config.max_steps for r in runs})
        todo: list[PlannedRun] = []
        for run in runs:
            if is_finished(Path(run.config.log_dir), run.config.max_steps):
                results[run.key] = RunResult(run.key, "skipped", run.config.max_steps)
                self.display.run_state(run.key, "skipped", step=run.config.max_steps,
                                       note="already finished")
            else:
                todo.append(run)
        slots: dict[int, _Slot] = {}
        idle: list[int] = []
        running: dict[str, tuple[PlannedRun, float, FollowerThread | None]] = {}
        failed = False
        next_index = 0
        interrupted = False
        aborted = False
        warming = False  # a new thread slot has not finished a step yet
        warmed_once = False  # some slot has finished a step (imports are warm)
        try:
            while todo or running:
                while (todo and len(running) < self.parallel and not self.stop.is_set()
                       and not (failed and not self.continue_on_error)):
                    if idle:
                        slot = slots[idle.pop()]
                    elif (warming and self.workers == "thread"
                          and (not warmed_once or todo[0].config.engine != "tinker")):
                        # One new thread slot warms up (imports, engine) at a time: first
                        # imports race in threads. Model loading itself is serialised by the
                        # engines (engines.base.LOAD_LOCK), also for reused slots.
                        # Remote (tinker) slots load no model, so once the first has warmed
                        # the imports the rest start together.
                        break
                    else:
                        slot = self._make_slot(next_index)
                        slots[next_index] = slot
                        next_index += 1
                        warming = True
                    run = todo.pop(0)
                    done0 = _steps(run)
                    running[run.key] = (run, time.monotonic(), self._start_follower(run))
                    self.display.run_state(run.key, "running", step=done0,
                                           note="resuming" if done0 else "")
                    slot.assign(run)
                if not running:
                    break
                try:
                    kind, payload = self.events.get(timeout=0.5)
                except queue.Empty:
                    continue
                except KeyboardInterrupt:
                    if interrupted:  # a second Ctrl-C / SIGTERM: stop now
                        for slot in slots.values():
                            if isinstance(slot, (_ProcessSlot, _RemoteSlot)):
                                slot.kill()
                        aborted = True
                        raise Aborted("aborted by a second interrupt; run the same command "
                                      "again to resume every run from its last "
                                      "checkpoint") from None
                    interrupted = True
                    self.stop.set()
                    for slot in slots.values():
                        slot.interrupt()
                    continue
                if kind in ("step", "done"):
                    warming = False
                    warmed_once = True
                if kind == "step":
                    key, row = payload
                    if key in running:
                        self.display.run_step(key, int(row.get("step") or 0) + 1, row)
                elif kind == "dead":
                    slots.pop(payload, None)
                    if payload in idle:
                        idle.remove(payload)
                elif kind == "done":
                    index, result = payload
                    if result.key not in running:
                        continue
                    run, t0, follower = running.pop(result.key)
                    result.seconds = time.monotonic() - t0
                    if result.error:  # it is shown and recorded: no URL credentials
                        result.error = redact_url(result.error)
                    result.wandb_error = (follower.finish() if follower is not None
                                          else self._wandb_errors.pop(result.key, None))
                    results[result.key] = result
                    if index in slots:
                        idle.append(index)
                    self.display.run_state(result.key, result.status, step=result.steps_done,
                                           note=(result.error or "")[:200])
                    if result.status == "failed":
                        failed = True
        finally:
            if not aborted:  # an abort does not wait for runs in threads (daemons)
                for slot in slots.values():
                    slot.close()
            self.display.close()
        for run in runs:
            if run.key not in results:
                results[run.key] = RunResult(run.key, "not_started", _steps(run))
        return [results[r.key] for r in runs]

    # ------------------------------------------------------------------ internals
    def _start_follower(self, run: PlannedRun) -> FollowerThread | None:
        if self.wandb is None:
            return None
        try:
            follower = self.wandb.follower(run)
        except Exception as exc:  # W&B trouble never stops training; it is reported
            self._wandb_errors[run.key] = describe_error(exc)
            return None
        return FollowerThread(follower).start()


@contextlib.contextmanager
def _interruptible() -> Any:
    """SIGINT and SIGTERM raise KeyboardInterrupt while runs execute (the first stops every
    run after its step, a second aborts), even in a process started with SIGINT ignored (a
    background job of a non-interactive shell, `nohup ... &`): Python then installs no
    handler, and `kill -INT` would be ignored instead of stopping cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run_plan(plan: Plan, **kwargs: Any) -> list[RunResult]:
    """Execute ``plan`` (see :class:`Executor` for the keyword arguments)."""
    return Executor(plan, **kwargs).run()
