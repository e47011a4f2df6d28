"""Fault injection for ``tp serve`` (tests of client recovery).

A fault rule is ``N`` (the N-th counted request, 1-based) or ``ENDPOINT:N`` (the N-th request
to that endpoint, e.g. ``forward_backward:2``). Counted requests are every request except the
background ones whose number depends on timing (heartbeat, telemetry, dynamic config).

- ``fail``: the request is answered HTTP 500 without being processed (a transient error the
  SDK retries).
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


@attrs.frozen
class FaultRule:
    n: int
    endpoint: str | None = None

    @classmethod
    def parse(cls, text: str, *, flag: str) -> FaultRule:
        endpoint, _, number = text.rpartition(":")
        try:
            n = int(number)
        except ValueError:
            n = 0
        if n < 1:
            raise ConfigError(
                f"{flag} {text!r}: expected N or ENDPOINT:N with N >= 1 "
                "(e.g. 5 or forward_backward:2)")
        return cls(n=n, endpoint=endpoint or None)


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

    def count(self, endpoint: str) -> tuple[bool, bool]:
        """Count one request; return ``(fail_it, poison_it)``."""
        if endpoint in UNCOUNTED:
            return False, False
        with self._lock:
            self._total += 1
            self._by_endpoint[endpoint] += 1
            total, nth = self._total, self._by_endpoint[endpoint]

        def hit(rules: tuple[FaultRule, ...]) -> bool:
            return any(
                (r.endpoint is None and r.n == total) or (r.endpoint == endpoint and r.n == nth)
                for r in rules)

        return hit(self.fail), hit(self.poison)
