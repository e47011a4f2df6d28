"""Fault injection for ``tp serve`` (tests of client recovery).

A fault rule is ``N`` (the N-th counted request, 1-based) or ``ENDPOINT:N`` (the N-th request
to that endpoint, e.g. ``forward_backward:2``), optionally followed by ``:STATUS``, the HTTP
status of a ``fail`` rule (one of ``FAIL_STATUSES``, default 500: ``forward_backward:2:503``,
``3:429``). Counted requests are every request except the
background ones whose number depends on timing (heartbeat, telemetry, dynamic config).

- ``fail``: the request is answered with the rule's status (HTTP 500 unless told) without being
  processed: a transient error (rate limit, bad gateway, overload, gateway timeout) the SDK
  retries.
- ``poison``: the request is accepted, but its future fails; on a training model every later
  request of that model fails too (a poisoned training client).
- ``duplicate_samples`` (a sampler that collapses groups): ``seeded`` answers a seeded request
  for N samples with N copies of its first sequence (Tinker's reported behaviour,
  tinker-feedback #79); ``all`` answers every request with copies of one sequence sampled
  with seed 0, so every sample of a prompt on the same weights is identical; ``off``.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable

import attrs

from textpolicy.errors import ConfigError

UNCOUNTED = frozenset({"session_heartbeat", "telemetry", "client/dynamic_config"})
DUPLICATE_MODES = ("off", "seeded", "all")
#: the statuses a ``fail`` rule may answer with
FAIL_STATUSES = (429, 500, 502, 503, 504)


@attrs.frozen
class FaultRule:
    n: int
    endpoint: str | None = None
    status: int = 500

    @classmethod
    def parse(cls, text: str, *, flag: str) -> FaultRule:
        parts = text.split(":")
        status = "500"
        # an endpoint is never a number: N:STATUS and ENDPOINT:N:STATUS carry a status
        if len(parts) == 3 or (len(parts) == 2 and parts[0].isdigit()):
            status = parts.pop()
        endpoint, number = (parts[0], parts[1]) if len(parts) == 2 else ("", parts[0])
        n = int(number) if number.isdigit() and len(parts) <= 2 else 0
        if n < 1 or ":" in endpoint:
            raise ConfigError(
                f"{flag} {text!r}: expected N or ENDPOINT:N with N >= 1, optionally :STATUS "
                "(e.g. 5, forward_backward:2 or forward_backward:2:503)")
        if not status.isdigit() or int(status) not in FAIL_STATUSES:
            raise ConfigError(f"{flag} {text!r}: status {status!r}: allowed: "
                              f"{', '.join(map(str, FAIL_STATUSES))}")
        return cls(n=n, endpoint=endpoint or None, status=int(status))


class FaultPlan:
    """Counts requests and says which ones to fail or poison (thread-safe)."""

    def __init__(
        self,
        fail: Iterable[FaultRule] = (),
        poison: Iterable[FaultRule] = (),
        delay_s: float = 0.0,
        duplicate_samples: str = "off",
    ) -> None:
        if duplicate_samples not in DUPLICATE_MODES:
            raise ConfigError(f"--duplicate-samples {duplicate_samples!r}: allowed: "
                              f"{', '.join(DUPLICATE_MODES)}")
        self.fail = tuple(fail)
        self.poison = tuple(poison)
        self.delay_s = float(delay_s)
        self.duplicate_samples = duplicate_samples
        self._lock = threading.Lock()
        self._total = 0
        self._by_endpoint: Counter[str] = Counter()

    def count(self, endpoint: str) -> tuple[int, bool]:
        """Count one request; return ``(status, poison_it)``: the HTTP status to fail it with
        (0: do not fail it) and whether to poison it."""
        if endpoint in UNCOUNTED:
            return 0, False
        with self._lock:
            self._total += 1
            self._by_endpoint[endpoint] += 1
            total, nth = self._total, self._by_endpoint[endpoint]

        def hits(rules: tuple[FaultRule, ...]) -> list[FaultRule]:
            return [r for r in rules
                    if (r.endpoint is None and r.n == total)
                    or (r.endpoint == endpoint and r.n == nth)]

        failed = hits(self.fail)
        return (failed[0].status if failed else 0), bool(hits(self.poison))
