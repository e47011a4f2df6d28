"""Concurrency cap and backoff of the tinker engine (see docs/engines.md, "Concurrency").

- ``max_concurrent`` (engine option): at most that many SDK requests in flight at once per
  base URL, counted over every textpolicy process of this machine that uses the same cap —
  the thread-parallel runs of one ``tp run``, process-pool workers, Ray or submitit workers on
  this node, another campaign. The slots are ``max_concurrent`` lock files in the cache
  (:class:`FileSlots`, ``flock``): a slot is taken before a request is submitted and given back
  when the SDK's future is done (answered or failed), not when someone reads it, so a training
  loop that submits several requests before awaiting any cannot deadlock itself; a process
  that dies gives its slots back with its file descriptors. Processes on other machines count
  only when the cache (``TEXTPOLICY_CACHE_DIR``) is on a file system they share with working
  ``flock``.
- ``Backoff``: exponential backoff with full jitter (a delay drawn uniformly from
  ``[0, min(cap_s, base_s * 2**attempt)]``) from an explicit seeded generator, for the retries
  textpolicy itself makes after the SDK gave up on a request.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import hashlib
import itertools
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from textpolicy.errors import ConfigError, EngineError

#: full-jitter backoff: first ceiling, largest ceiling (seconds), retries of one request
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
BACKOFF_MAX_ATTEMPTS = 4
#: HTTP statuses that mean "the service is busy or a proxy failed; try again later"
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


def parse_max_concurrent(value: Any) -> int | None:
    """The ``max_concurrent`` engine option: None (no cap) or a whole number >= 1."""
    if value is None:
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
        raise ConfigError(f"engine option max_concurrent={value!r}: must be a whole number "
                          ">= 1 (requests in flight at once per base URL)")
    return int(text)


def is_retryable(exc: BaseException) -> bool:
    """429/502/503/504 answers and dropped connections (the SDK raises these after its own
    retries ran out)."""
    if getattr(exc, "status_code", None) in RETRYABLE_STATUSES:
        return True
    try:
        from tinker import APIConnectionError
    except ImportError:  # pragma: no cover - the engine needs the SDK anyway
        return isinstance(exc, ConnectionError)
    return isinstance(exc, (ConnectionError, APIConnectionError))


class Backoff:
    """Full-jitter exponential backoff from its own generator (never the global one)."""

    def __init__(self, seed: int | Sequence[int], *, base_s: float = BACKOFF_BASE_S,
                 cap_s: float = BACKOFF_CAP_S) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()

    def delay(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (0-based)."""
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(attempt, 60))
        with self._lock:
            return float(self._rng.uniform(0.0, ceiling))

    @staticmethod
    def sleep(seconds: float, check: Callable[[], None], poll_s: float = 1.0) -> None:
        """Sleep ``seconds``, calling ``check`` (the unreachable watch) at least every
        ``poll_s`` so a dead service still ends the run on time."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, poll_s))
            check()


_ENGINE_COUNT = itertools.count()

#: how long a waiting request sleeps between tries at the slots (grows to the second value)
SLOT_RETRY_S = (0.001, 0.005)


#: one waiter per process and slot folder at the gate: the others wait on this lock, without
#: polling (the engines of one process each have their own FileSlots of the same folder)
_LOCAL_GATES: dict[str, threading.Lock] = {}
_LOCAL_GATES_LOCK = threading.Lock()


def _local_gate(directory: Path) -> threading.Lock:
    with _LOCAL_GATES_LOCK:
        return _LOCAL_GATES.setdefault(str(directory), threading.Lock())


def _forget_local_gates() -> None:
    """In a forked child: the parent's threads that held these locks do not exist there."""
    global _LOCAL_GATES_LOCK
    _LOCAL_GATES_LOCK = threading.Lock()
    _LOCAL_GATES.clear()


os.register_at_fork(after_in_child=_forget_local_gates)


def next_engine_index() -> int:
    """A process-wide index of engines (so engines' jitter differs for one backoff seed)."""
    return next(_ENGINE_COUNT)


class FileSlots:
    """``cap`` slots shared by every process of this machine: lock files ``slot-<i>.lock`` in
    ``directory``, each held with ``flock`` by at most one open file at a time. Every
    acquisition opens its own descriptor, so threads of one process contend like processes
    do; the kernel drops a dead process's locks with its descriptors, so a slot never leaks.
    Only the holder of a gate (``gate.lock``) tries the slots, so a freed slot goes to the
    request that waits at the gate, not to one arriving right after (a run that gives a slot
    back and asks again at once would otherwise keep it from a waiter asleep between tries);
    the other waiters of a process wait on a lock instead of polling.
    (Hand-written: the standard library has no cross-process semaphore with that property.)"""

    def __init__(self, directory: Path, cap: int) -> None:
        self.directory = directory
        self.cap = cap
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EngineError(
                f"max_concurrent: cannot create the slot folder {directory}: "
                f"{exc.strerror or exc} (set TEXTPOLICY_CACHE_DIR to a writable folder)"
            ) from None
        self._paths = [directory / f"slot-{i}.lock" for i in range(cap)]
        self._gate = directory / "gate.lock"
        self._next = itertools.count()

    def acquire(self, timeout: float) -> int | None:
        """A held slot (a file descriptor to hand to :meth:`release`), or None when none came
        free within ``timeout`` seconds."""
        end = time.monotonic() + timeout
        local = _local_gate(self.directory)
        if not local.acquire(timeout=max(timeout, 0.0)):
            return None
        try:
            gate = self._poll(lambda: self._try(self._gate), end)
            if gate is None:
                return None
            try:
                first = next(self._next) % self.cap  # spread the tries over the slots
                return self._poll(lambda: next(
                    (fd for k in range(self.cap)
                     if (fd := self._try(self._paths[(first + k) % self.cap])) is not None),
                    None), end)
            finally:
                self.release(gate)
        finally:
            local.release()

    @staticmethod
    def _poll(attempt: Callable[[], int | None], end: float) -> int | None:
        wait, longest = SLOT_RETRY_S
        while (got := attempt()) is None:
            left = end - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(wait, left))
            wait = min(wait * 2, longest)
        return got

    @staticmethod
    def _try(path: Path) -> int | None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise EngineError(f"max_concurrent: cannot open the slot file {path}: "
                              f"{exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as exc:
            os.close(fd)
            raise EngineError(f"max_concurrent: cannot lock the slot file {path}: "
                              f"{exc.strerror or exc} (a file system without flock?)") from None
        return fd

    @staticmethod
    def release(fd: int) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def machine_slots(base_url: str, cap: int) -> FileSlots:
    """The machine-wide slots of ``cap`` for ``base_url`` (one folder per base URL and cap, in
    the cache; the URL is hashed, so no credentials or host names land in file names)."""
    from textpolicy.engines.local.cache import cache_root

    digest = hashlib.sha256(base_url.encode("utf-8")).hexdigest()[:16]
    return FileSlots(cache_root() / "tinker-slots" / f"{digest}-cap{cap}", cap)


class Limiter:
    """Holds a slot of the shared :class:`FileSlots` while an SDK request is in flight."""

    def __init__(self, slots: FileSlots | None, check: Callable[[], None],
                 poll_s: float = 1.0) -> None:
        self._slots = slots
        self._check = check
        self._poll_s = poll_s

    def submit(self, send: Callable[[], Any]) -> Any:
        """``send()`` (which returns an SDK future) inside a slot, released when that future
        is done. While waiting for a slot, the unreachable watch is consulted."""
        if self._slots is None:
            return send()
        slots = self._slots
        while (held := slots.acquire(timeout=self._poll_s)) is None:
            self._check()
        try:
            fut = send()
            # the SDK's APIFuture gives its concurrent.futures.Future by .future() (some of
            # its futures also subclass Future, with a deprecated add_done_callback)
            inner = fut.future() if hasattr(fut, "future") else fut
            if not isinstance(inner, concurrent.futures.Future):
                raise TypeError(f"not a future: {type(fut).__name__}")
        except BaseException:
            slots.release(held)
            raise
        inner.add_done_callback(lambda _f: slots.release(held))
        return fut
