"""A pool of persistent math-verify worker processes with a hard wall-clock deadline.

Each worker answers one request at a time over a pipe. The parent waits on all busy pipes
at once (``multiprocessing.connection.wait``); a worker that has not answered within
``deadline_s`` is killed and replaced, and its request is reported as timed out. Workers are
started lazily from a ``forkserver`` context (``spawn`` where forkserver is unavailable) that
preloads math-verify, so a replacement starts in milliseconds and the parent never imports
sympy.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing as mp
import os
import sys
import time
import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

import attrs

from textpolicy.errors import TaskError

_WORKER_MODULE = "textpolicy.grading._worker"
STARTUP_TIMEOUT_S = 120.0


@attrs.frozen
class VerifyOutcome:
    """math-verify's verdict on one (gold, given) pair."""

    equal: bool
    timed_out: bool = False
    crashed: bool = False
    seconds: float = 0.0


@attrs.define
class PoolStats:
    calls: int = 0
    timeouts: int = 0
    kills: int = 0
    crashes: int = 0
    spawns: int = 0


def _context() -> Any:
    try:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([_WORKER_MODULE])
        return ctx
    except ValueError:  # platforms without forkserver
        return mp.get_context("spawn")


class _Slot:
    def __init__(self) -> None:
        self.process: Any = None
        self.conn: Connection | None = None
        self.job: int | None = None
        self.started: float = 0.0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()


class VerifyPool:
    """``workers`` persistent math-verify processes.

    ``parse_timeout_s``/``verify_timeout_s`` are math-verify's own (SIGALRM, whole seconds)
    timeouts inside a worker; ``deadline_s`` is the parent's hard limit per request, after
    which the worker is killed. Use as a context manager or call ``close()``.
    """

    def __init__(self, workers: int = 2, *, deadline_s: float = 12.0, parse_timeout_s: int = 5,
                 verify_timeout_s: int = 5) -> None:
        if workers < 1:
            raise TaskError(f"grader: workers must be >= 1, got {workers}")
        if deadline_s <= 0:
            raise TaskError(f"grader: deadline_s must be > 0, got {deadline_s}")
        self.workers = workers
        self.deadline_s = float(deadline_s)
        self.parse_timeout_s = int(parse_timeout_s)
        self.verify_timeout_s = int(verify_timeout_s)
        self.stats = PoolStats()
        self._ctx = _context()
        self._slots = [_Slot() for _ in range(workers)]
        self._next_id = 0
        self._closed = False
        _LIVE_POOLS.add(self)

    # -- lifecycle -------------------------------------------------------------------------
    def _start(self, slots: Sequence[_Slot]) -> None:
        """Start workers for ``slots`` and wait until each has warmed up math-verify, so a
        request's deadline never includes process start-up."""
        from textpolicy.grading import _worker  # noqa: F401 - importable before forking

        for slot in slots:
            parent, child = self._ctx.Pipe(duplex=True)
            proc = self._ctx.Process(
                target=_worker_entry, args=(child, self.parse_timeout_s, self.verify_timeout_s),
                daemon=True, name="textpolicy-grader")
            with _main_without_missing_file():
                proc.start()
            child.close()
            slot.process, slot.conn, slot.job = proc, parent, None
            self.stats.spawns += 1
        for slot in slots:
            assert slot.conn is not None
            try:
                ready = slot.conn.poll(STARTUP_TIMEOUT_S) and slot.conn.recv() == "ready"
            except (EOFError, OSError):
                ready = False
            if not ready:
                self._kill(slot)
                raise TaskError("grader: a math-verify worker process failed to start "
                                f"within {STARTUP_TIMEOUT_S:.0f} s")

    def _kill(self, slot: _Slot) -> None:
        if slot.process is not None:
            slot.process.kill()
            slot.process.join(timeout=5)
        if slot.conn is not None:
            slot.conn.close()
        slot.process, slot.conn, slot.job = None, None, None

    def warm_up(self) -> None:
        """Start every worker now (otherwise they start on first use)."""
        self._start([slot for slot in self._slots if not slot.alive])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for slot in self._slots:
            if slot.conn is not None and slot.alive:
                with contextlib.suppress(OSError):
                    slot.conn.send(None)
        for slot in self._slots:
            if slot.process is not None:
                slot.process.join(timeout=1)
                if slot.process.is_alive():
                    slot.process.kill()
                    slot.process.join(timeout=5)
            if slot.conn is not None:
                slot.conn.close()
            slot.process, slot.conn = None, None

    def __enter__(self) -> VerifyPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- work ------------------------------------------------------------------------------
    def verify_many(self, pairs: Sequence[tuple[str, str]]) -> list[VerifyOutcome]:
        """math-verify ``(gold, given)`` for every pair, ``workers`` at a time."""
        return self._run([("verify", gold, given) for gold, given in pairs])

    def _run(self, jobs: Sequence[tuple[str, str, str]]) -> list[VerifyOutcome]:
        if self._closed:
            raise TaskError("grader: the worker pool is closed")
        results: list[VerifyOutcome | None] = [None] * len(jobs)
        pending = deque(range(len(jobs)))
        busy: dict[int, _Slot] = {}  # fileno-independent: keyed by id(conn)
        while pending or busy:
            dead = [s for s in self._slots if s.job is None and not s.alive]
            if dead and pending:
                for slot in dead:
                    self._kill(slot)
                self._start(dead[: len(pending)])
            for slot in self._slots:
                if not pending:
                    break
                if slot.job is not None or not slot.alive:
                    continue
                index = pending.popleft()
                kind, gold, given = jobs[index]
                assert slot.conn is not None
                try:
                    slot.conn.send((index, kind, gold, given))
                except OSError:
                    self._kill(slot)
                    pending.appendleft(index)
                    continue
                slot.job = index
                slot.started = time.monotonic()
                busy[id(slot.conn)] = slot
            if not busy:
                continue
            now = time.monotonic()
            wait_s = max(0.0, min(s.started + self.deadline_s - now for s in busy.values()))
            ready = wait([s.conn for s in busy.values() if s.conn is not None], timeout=wait_s)
            for conn in ready:
                slot = busy.pop(id(conn))
                job = slot.job
                assert job is not None
                elapsed = time.monotonic() - slot.started
                try:
                    _rid, equal, timed_out = slot.conn.recv()  # type: ignore[union-attr]
                except (EOFError, OSError):
                    self.stats.crashes += 1
                    results[job] = VerifyOutcome(False, crashed=True, seconds=elapsed)
                    self._kill(slot)
                    continue
                slot.job = None
                results[job] = VerifyOutcome(bool(equal), bool(timed_out), seconds=elapsed)
                self.stats.timeouts += bool(timed_out)
            now = time.monotonic()
            for key, slot in list(busy.items()):
                if now - slot.started >= self.deadline_s:
                    job = slot.job
                    assert job is not None
                    del busy[key]
                    self._kill(slot)
                    self.stats.kills += 1
                    self.stats.timeouts += 1
                    results[job] = VerifyOutcome(False, timed_out=True, seconds=now - slot.started)
        self.stats.calls += len(jobs)
        return [r if r is not None else VerifyOutcome(False, crashed=True) for r in results]


@contextlib.contextmanager
def _main_without_missing_file() -> Iterator[None]:
    """spawn/forkserver children re-run the parent's ``__main__`` file; a parent read from
    stdin (``python - <<EOF``) has a ``__file__`` that does not exist, so hide it meanwhile."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None or os.path.exists(path):
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


def _worker_entry(conn: Connection, parse_timeout_s: int, verify_timeout_s: int) -> None:
    from textpolicy.grading._worker import worker_main

    worker_main(conn, parse_timeout_s, verify_timeout_s)


_LIVE_POOLS: weakref.WeakSet[VerifyPool] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for pool in list(_LIVE_POOLS):
        pool.close()
