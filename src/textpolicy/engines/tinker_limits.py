"""Concurrency cap and backoff of the tinker engine (see docs/engines.md, "Concurrency").

- ``max_concurrent`` (engine option): at most that many SDK requests of this process in
  flight at once per base URL. Every engine of the process with the same base URL and the same
  cap shares one bounded semaphore, so the thread-parallel runs of one ``tp run``/``tp sweep``
  share it. A slot is taken before a request is submitted and given back when the SDK's future
  is done (answered or failed), not when someone reads it: a training loop that submits several
  requests before awaiting any cannot deadlock itself. Process-parallel workers each have
  their own semaphore (a cap per process).
- ``Backoff``: exponential backoff with full jitter (a delay drawn uniformly from
  ``[0, min(cap_s, base_s * 2**attempt)]``) from an explicit seeded generator, for the retries
  textpolicy itself makes after the SDK gave up on a request.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from textpolicy.errors import ConfigError

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


_SLOTS: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_SLOTS_LOCK = threading.Lock()
_ENGINE_COUNT = itertools.count()


def next_engine_index() -> int:
    """A process-wide index of engines (so engines' jitter differs for one backoff seed)."""
    return next(_ENGINE_COUNT)


def shared_slots(base_url: str, cap: int) -> threading.BoundedSemaphore:
    """The process-wide semaphore of ``cap`` slots for ``base_url``."""
    with _SLOTS_LOCK:
        return _SLOTS.setdefault((base_url, cap), threading.BoundedSemaphore(cap))


class Limiter:
    """Holds a slot of a shared semaphore while an SDK request is in flight."""

    def __init__(self, slots: threading.BoundedSemaphore | None,
                 check: Callable[[], None], poll_s: float = 1.0) -> None:
        self._slots = slots
        self._check = check
        self._poll_s = poll_s

    def submit(self, send: Callable[[], Any]) -> Any:
        """``send()`` (which returns an SDK future) inside a slot, released when that future
        is done. While waiting for a slot, the unreachable watch is consulted."""
        if self._slots is None:
            return send()
        slots = self._slots
        while not slots.acquire(timeout=self._poll_s):
            self._check()
        try:
            fut = send()
            # the SDK's APIFuture gives its concurrent.futures.Future by .future() (some of
            # its futures also subclass Future, with a deprecated add_done_callback)
            inner = fut.future() if hasattr(fut, "future") else fut
            if not isinstance(inner, concurrent.futures.Future):
                raise TypeError(f"not a future: {type(fut).__name__}")
        except BaseException:
            slots.release()
            raise
        inner.add_done_callback(lambda _f: slots.release())
        return fut
