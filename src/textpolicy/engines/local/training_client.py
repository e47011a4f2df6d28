"""The local training client: forward_backward with Tinker's sum semantics, Adam, snapshots.

Requests run eagerly in call order (the returned futures are already done), so submitting
``forward_backward`` and ``optim_step`` back to back behaves as on Tinker. Gradients accumulate
across ``forward_backward`` calls until ``optim_step``, which applies Adam (decoupled weight
decay, i.e. torch's AdamW; identical to Adam when ``weight_decay == 0``) with this step's
``AdamParams`` and clears them.

Datums are processed in right-padded micro-batches of at most ``train_tokens_per_batch`` padded
tokens; because every loss is a sum, micro-batching does not change the result.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from textpolicy.engines.base import AdamParams, Datum, DoneFuture, ForwardBackwardResult
from textpolicy.engines.local.hf import decoder_and_head, token_logprobs
from textpolicy.engines.local.losses import check_request, stack_inputs, token_losses
from textpolicy.engines.local.sampling_client import LocalSamplingClient
from textpolicy.errors import EngineError

R = TypeVar("R")


class LocalTrainingClient:
    """A model (full fine-tune or peft LoRA) with its Adam optimizer on one device."""

    def __init__(self, *, model: Any, tokenizer: Any, base_model: str, lora_rank: int | None,
                 lora_alpha: int, seed: int, device: Any, state_root: Path,
                 max_decode_batch: int | None, train_tokens_per_batch: int) -> None:
        import torch

        self.model = model
        self.tokenizer = tokenizer
        self.base_model = base_model
        self.lora_rank = lora_rank
        self.lora_alpha = lora_alpha
        self.seed = seed
        self.device = device
        self.state_root = state_root
        self.max_decode_batch = max_decode_batch
        self.train_tokens_per_batch = train_tokens_per_batch
        self.optim_steps = 0
        self._version = 0
        self._lock = threading.RLock()
        self._closed = False
        self._named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not self._named:
            raise EngineError("local engine: the model has no trainable parameters")
        self.optimizer = torch.optim.AdamW(
            [p for _, p in self._named], lr=0.0, betas=(0.9, 0.95), eps=1e-12,
            weight_decay=0.0)
        config = model.config
        self.vocab_size = int(model.get_input_embeddings().weight.shape[0])
        eos = tokenizer.eos_token_id if tokenizer is not None else None
        if eos is None:
            eos = getattr(config, "eos_token_id", None)
        eos_list = eos if isinstance(eos, list) else [eos] if eos is not None else []
        self.eos_ids: tuple[int, ...] = tuple(int(e) for e in eos_list)
        pad = tokenizer.pad_token_id if tokenizer is not None else None
        if pad is None:
            pad = getattr(config, "pad_token_id", None)
        self.pad_id = int(pad if pad is not None else (self.eos_ids or (0,))[0])
        model.eval()  # no dropout anywhere: sampler and learner see the same function

    # -- Tinker primitives ------------------------------------------------------------------
    def get_tokenizer(self) -> Any:
        return self.tokenizer

    def sampling_client(self, name: str) -> LocalSamplingClient:
        with self._lock:
            self._check_open()
            snapshot = {n: p.detach().clone() for n, p in self._named}
            return LocalSamplingClient(self, name, snapshot, self._version)

    def forward_backward(self, datums: Sequence[Datum], loss_fn: str,
                         loss_fn_config: Mapping[str, float] | None = None,
                         ) -> DoneFuture:
        config = check_request(datums, loss_fn, loss_fn_config)
        with self._lock:
            self._check_open()
            total, tokens = 0.0, 0
            logprobs: list[np.ndarray] = []
            for batch in self._micro_batches(datums):
                loss, count = self._forward_backward_batch(batch, loss_fn, config, logprobs)
                total += loss
                tokens += count
        return DoneFuture(ForwardBackwardResult(
            loss=total, metrics={"loss:sum": total, "num_tokens": float(tokens),
                                 "num_datums": float(len(datums))},
            logprobs=tuple(logprobs)))

    def optim_step(self, params: AdamParams) -> DoneFuture:
        import torch

        if params.learning_rate < 0 or params.eps < 0 or params.weight_decay < 0:
            raise EngineError(f"optim_step: invalid AdamParams {params}")
        with self._lock:
            self._check_open()
            for group in self.optimizer.param_groups:
                group["lr"] = params.learning_rate
                group["betas"] = (params.beta1, params.beta2)
                group["eps"] = params.eps
                group["weight_decay"] = params.weight_decay
            if params.grad_clip_norm > 0:
                torch.nn.utils.clip_grad_norm_([p for _, p in self._named],
                                               params.grad_clip_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.optim_steps += 1
            self._version += 1
        return DoneFuture(None)

    def save_state(self, name: str) -> DoneFuture:
        from textpolicy.engines.local.state import save_state

        with self._lock:
            self._check_open()
            path = Path(name) if Path(name).is_absolute() else self.state_root / name
            return DoneFuture(str(save_state(self, path)))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self.optimizer.zero_grad(set_to_none=True)

    # -- helpers ----------------------------------------------------------------------------
    @property
    def trainable(self) -> list[tuple[str, Any]]:
        return list(self._named)

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("local engine: this training client is closed")

    def run_with_weights(self, snapshot: Mapping[str, Any], version: int,
                         fn: Callable[[Any], R]) -> R:
        """Run ``fn(model)`` with ``snapshot`` loaded into the trainable tensors."""
        with self._lock, self._swapped(snapshot, version):
            return fn(self.model)

    @contextlib.contextmanager
    def _swapped(self, snapshot: Mapping[str, Any], version: int) -> Iterator[None]:
        import torch

        if version == self._version:
            yield
            return
        with torch.no_grad():
            current = {n: p.detach().clone() for n, p in self._named}
            for n, p in self._named:
                p.copy_(snapshot[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self._named:
                    p.copy_(current[n])

    def _micro_batches(self, datums: Sequence[Datum]) -> Iterator[list[Datum]]:
        batch: list[Datum] = []
        width = 0
        for datum in datums:
            new_width = max(width, len(datum.model_input))
            if batch and new_width * (len(batch) + 1) > self.train_tokens_per_batch:
                yield batch
                batch, new_width = [], len(datum.model_input)
            batch.append(datum)
            width = new_width
        if batch:
            yield batch

    def _forward_backward_batch(self, batch: Sequence[Datum], loss_fn: str,
                                config: Mapping[str, float],
                                logprobs_out: list[np.ndarray]) -> tuple[float, int]:
        """Forward + backward of one micro-batch; appends each datum's learner logprobs (from
        this same forward pass: one device-to-host copy) to ``logprobs_out``."""
        import torch

        width = max(len(d.model_input) for d in batch)
        lengths = np.array([len(d.model_input) for d in batch])
        ids_np = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        targets_np = np.zeros((len(batch), width), dtype=np.int64)
        for i, datum in enumerate(batch):
            ids_np[i, : lengths[i]] = datum.model_input
            targets_np[i, : lengths[i]] = np.asarray(datum.loss_fn_inputs["target_tokens"])
        if targets_np.min() < 0 or targets_np.max() >= self.vocab_size or (
                ids_np.min() < 0 or ids_np.max() >= self.vocab_size):
            raise EngineError(f"forward_backward: token ids must be in [0, {self.vocab_size})")
        valid_np = np.arange(width)[None, :] < lengths[:, None]
        dev = self.device
        ids = torch.tensor(ids_np, device=dev)
        mask = torch.tensor(valid_np.astype(np.int64), device=dev)
        valid = torch.tensor(valid_np, device=dev)
        targets = torch.tensor(targets_np, device=dev)[valid]
        inputs: dict[str, Any] = {}
        keys = (("weights", 1.0),) if loss_fn == "cross_entropy" else (
            ("logprobs", 0.0), ("advantages", 0.0))
        for key, default in keys:
            arr = stack_inputs(batch, key, width, default)
            inputs[key] = torch.tensor(arr, dtype=torch.float32, device=dev)[valid]
        decoder, head = decoder_and_head(self.model)
        hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        logp = token_logprobs(head, hidden[valid], targets)
        loss = token_losses(loss_fn, logp, inputs, config).sum()
        loss.backward()
        flat = logp.detach().float().cpu().numpy()
        logprobs_out.extend(np.split(flat, np.cumsum(lengths)[:-1]))
        return float(loss.detach()), int(valid_np.sum())
