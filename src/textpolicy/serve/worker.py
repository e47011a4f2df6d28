"""One session's engine thread: runs its jobs in order and batches its sampling.

Engines are not thread-safe, so all engine work of a session runs on one thread. Sampling
requests are gathered: each is submitted to the engine when it arrives (engines defer the work
until a result is awaited) and all of them are awaited together once no new sampling request
has arrived for ``gather_s`` seconds, or before the next training job, so the B prompts of a
step become one batched decode. Within a batch they are submitted in (sampler, seq_id) order,
the order the client submitted them, so the engine sees the same sequence of calls as a direct
in-process run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

import attrs

T = TypeVar("T")

log = logging.getLogger(__name__)


@attrs.define(eq=False)
class SampleJob:
    """``submit()`` hands the request to the engine and returns a finisher that awaits it."""

    order: tuple[str, int]
    submit: Callable[[], Callable[[], None]]


class SessionWorker:
    def __init__(self, name: str, gather_s: float = 0.02) -> None:
        self.gather_s = gather_s
        self._cond = threading.Condition()
        self._jobs: deque[Callable[[], None]] = deque()
        self._samples: list[SampleJob] = []
        self._last_sample_at = 0.0
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name=f"tp-serve-{name}", daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        with self._cond:
            self._jobs.append(job)
            self._cond.notify()

    def submit_sample(self, job: SampleJob) -> None:
        with self._cond:
            self._samples.append(job)
            self._last_sample_at = time.monotonic()
            self._cond.notify()

    def call(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        """Run ``fn`` on the worker thread (after the jobs queued before it) and return its
        value."""
        fut: Future[T] = Future()

        def job() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

        self.submit(job)
        return fut.result(timeout)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _next(self) -> tuple[list[SampleJob], Callable[[], None] | None] | None:
        with self._cond:
            while True:
                if self._jobs:
                    batch, self._samples = self._samples, []
                    return batch, self._jobs.popleft()
                if self._samples:
                    remaining = self._last_sample_at + self.gather_s - time.monotonic()
                    if remaining <= 0:
                        batch, self._samples = self._samples, []
                        return batch, None
                    self._cond.wait(remaining)
                    continue
                if self._stopped:
                    return None
                self._cond.wait()

    def _loop(self) -> None:
        try:
            import torch

            torch.set_num_threads(1)
        except ImportError:  # pragma: no cover - torch is a dependency
            pass
        while True:
            item = self._next()
            if item is None:
                return
            batch, job = item
            if batch:
                self._run_samples(batch)
            if job is not None:
                try:
                    job()
                except Exception:  # jobs report their own errors; never kill the thread
                    log.exception("tp serve: job failed")

    @staticmethod
    def _run_samples(batch: list[SampleJob]) -> None:
        finishers: list[Callable[[], None]] = []
        for sample in sorted(batch, key=lambda s: s.order):
            try:
                finishers.append(sample.submit())
            except Exception:
                log.exception("tp serve: sample submission failed")
        for finish in finishers:
            try:
                finish()
            except Exception:
                log.exception("tp serve: sample failed")
