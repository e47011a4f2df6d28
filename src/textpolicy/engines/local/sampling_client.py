"""The local sampling client: a frozen snapshot of the trainer's weights + deferred batching.

``sample`` returns a future at once and only queues the request; the first ``.result()`` on any
of this client's futures runs every queued request as ONE batched KV-cache decode
(``sampler.decode``; split into chunks of ``max_decode_batch`` sequences when that engine option
is set). So a training step that submits all B prompts before awaiting any samples B×G
sequences in one loop, which on a CPU costs little more than sampling one group.

The client samples from the weights the training client had when it was made, even after later
optimizer steps (the trainable tensors are copied at creation and swapped in while it runs).
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from textpolicy.engines.base import DoneFuture, SampledSequence, SamplingParams, sample_seed
from textpolicy.engines.local.sampler import (
    DecodeJob,
    decode,
    prompt_logprobs,
    request_uniforms,
    validate_params,
)
from textpolicy.errors import EngineError

if TYPE_CHECKING:
    from textpolicy.engines.local.training_client import LocalTrainingClient


class SampleFuture:
    """A future whose work runs (batched with its siblings) on the first ``result()``."""

    def __init__(self, client: LocalSamplingClient) -> None:
        self._client = client
        self._done = False
        self._value: list[SampledSequence] = []
        self._error: BaseException | None = None

    def done(self) -> bool:
        return self._done

    def _set(self, value: list[SampledSequence] | None, error: BaseException | None) -> None:
        self._value = value or []
        self._error = error
        self._done = True

    def result(self, timeout: float | None = None) -> list[SampledSequence]:
        if not self._done:
            self._client.flush()
        if self._error is not None:
            raise self._error
        return self._value


class LocalSamplingClient:
    """Samples from a snapshot of a ``LocalTrainingClient``'s weights."""

    def __init__(self, trainer: LocalTrainingClient, name: str, snapshot: dict[str, Any],
                 version: int) -> None:
        self.name = name
        self._trainer = trainer
        self._snapshot = snapshot
        self._version = version
        self._seed_word = zlib.crc32(name.encode("utf-8"))
        self._requests = 0
        self._pending: list[tuple[SampleFuture, list[DecodeJob]]] = []
        self._lock = threading.Lock()

    def sample(self, prompt_ids: Sequence[int], num_samples: int, params: SamplingParams,
               *, topk_logprobs: int = 0) -> SampleFuture:
        prompt = tuple(int(t) for t in prompt_ids)
        if not prompt:
            raise EngineError("sample: the prompt is empty")
        if num_samples < 1:
            raise EngineError(f"sample: num_samples must be >= 1, got {num_samples}")
        if topk_logprobs < 0:
            raise EngineError(f"sample: topk_logprobs must be >= 0, got {topk_logprobs}")
        validate_params(params)
        vocab = self._trainer.vocab_size
        if max(prompt) >= vocab or min(prompt) < 0:
            raise EngineError(f"sample: prompt token ids must be in [0, {vocab})")
        stop_ids = tuple(dict.fromkeys((*self._trainer.eos_ids, *params.stop_token_ids)))
        with self._lock:
            request = self._requests
            self._requests += 1
            if params.seed is None:
                base = [self._trainer.seed, self._seed_word, request]
                uniforms = request_uniforms(base, num_samples, params.max_tokens)
            else:  # sample j as a one-sample request seeded sample_seed(seed, j)
                uniforms = np.concatenate([
                    request_uniforms([sample_seed(params.seed, j)], 1, params.max_tokens)
                    for j in range(num_samples)])
            jobs = [DecodeJob(prompt=prompt, params=params, uniforms=uniforms[j],
                              stop_ids=stop_ids, topk=topk_logprobs)
                    for j in range(num_samples)]
            future = SampleFuture(self)
            self._pending.append((future, jobs))
        return future

    def flush(self) -> None:
        """Run every queued request in one batched decode (chunked by max_decode_batch)."""
        with self._lock:
            pending, self._pending = self._pending, []
            if not pending:
                return
            jobs = [job for _, js in pending for job in js]
            try:
                results = self._trainer.run_with_weights(
                    self._snapshot, self._version, lambda model: self._decode(model, jobs))
            except BaseException as exc:
                for future, _ in pending:
                    future._set(None, exc)
                raise
            start = 0
            for future, js in pending:
                future._set(results[start:start + len(js)], None)
                start += len(js)

    def _decode(self, model: Any, jobs: list[DecodeJob]) -> list[SampledSequence]:
        chunk = self._trainer.max_decode_batch or len(jobs)
        out: list[SampledSequence] = []
        for start in range(0, len(jobs), chunk):
            out.extend(decode(model, jobs[start:start + chunk], pad_id=self._trainer.pad_id,
                              device=self._trainer.device))
        return out

    def compute_logprobs(self, sequences: Sequence[Sequence[int]]) -> DoneFuture:
        """log p(token_i | tokens_<i) under this client's weights (first entry 0.0)."""
        seqs = [list(s) for s in sequences]
        if any(not s for s in seqs):
            raise EngineError("compute_logprobs: every sequence needs at least one token")
        value = self._trainer.run_with_weights(
            self._snapshot, self._version,
            lambda model: prompt_logprobs(model, seqs, pad_id=self._trainer.pad_id,
                                          device=self._trainer.device))
        return DoneFuture(value)
