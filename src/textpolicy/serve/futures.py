"""Server-side futures: what ``retrieve_future`` polls.

Every long operation answers ``{"request_id": ...}`` at once; its result lands in a
``ServerFuture`` later. A result is JSON (a dict) or protobuf bytes; a failure carries a message
and Tinker's error category (``User`` | ``Server`` | ``Unknown``).
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

Category = Literal["User", "Server", "Unknown"]

_KEEP_RETRIEVED = 1024  # finished futures kept after retrieval (a lost response may be re-polled)


class ServerFuture:
    def __init__(self, request_id: str, on_done: Callable[[], None] | None = None) -> None:
        self.request_id = request_id
        self._event = threading.Event()
        self._on_done = on_done
        self.json: dict[str, Any] | None = None
        self.proto: bytes | None = None
        self.error: tuple[str, Category] | None = None

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None) -> bool:
        return self._event.wait(timeout)

    def _finish(self) -> None:
        if not self._event.is_set() and self._on_done is not None:
            self._on_done()  # before the result is visible to a poll
        self._event.set()

    def set_json(self, value: dict[str, Any]) -> None:
        self.json = value
        self._finish()

    def set_proto(self, value: bytes) -> None:
        self.proto = value
        self._finish()

    def set_error(self, message: str, category: Category = "Server") -> None:
        self.error = (message, category)
        self._finish()


class FutureTable:
    """All futures of the server, by request id (ids are unique across sessions).

    ``in_flight`` counts the futures accepted and not yet finished, ``high_water`` the most
    there ever were at once (what a client-side cap such as the tinker engine's
    ``max_concurrent`` bounds; read by tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, ServerFuture] = {}
        self._counter = itertools.count(1)
        self._retrieved: deque[str] = deque()
        self.in_flight = 0
        self.high_water = 0

    def _done(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def new(self) -> ServerFuture:
        with self._lock:
            fut = ServerFuture(f"req-{next(self._counter)}", on_done=self._done)
            self._items[fut.request_id] = fut
            self.in_flight += 1
            self.high_water = max(self.high_water, self.in_flight)
            return fut

    def get(self, request_id: str) -> ServerFuture | None:
        with self._lock:
            return self._items.get(request_id)

    def mark_retrieved(self, request_id: str) -> None:
        """Forget old retrieved futures, keeping the most recent few for re-polls."""
        with self._lock:
            self._retrieved.append(request_id)
            while len(self._retrieved) > _KEEP_RETRIEVED:
                self._items.pop(self._retrieved.popleft(), None)
