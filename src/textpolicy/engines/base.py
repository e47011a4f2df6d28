"""The engine interface: Tinker's primitives, implemented by every engine.

An engine makes training clients; a training client makes sampling clients from its current
weights, runs ``forward_backward`` with Tinker's loss semantics (every loss is a SUM over tokens
and datums) and ``optim_step`` with Adam, and saves/restores its state including the optimizer.
Every call returns a future at once (``.result()`` waits), so a caller can submit all sampling
requests of a step before awaiting any, and forward_backward + optim_step back to back.

Datums follow Tinker's next-token convention exactly: for prompt p and completion c,
``model_input = (p + c)[:-1]``, ``target_tokens = (p + c)[1:]`` and the per-token arrays are
aligned with the targets (``[0] * (len(p) - 1) + values(c)``). ``build_rl_datum`` is the one
place that builds them, so the same datums go to either engine.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import attrs
import numpy as np
from numpy.typing import NDArray

from textpolicy.errors import EngineError

T_co = TypeVar("T_co", covariant=True)

#: held while any engine builds, loads or wraps a model or tokenizer through transformers/peft:
#: their loading is not thread-safe (lazy imports and the meta-device context of
#: ``from_pretrained`` are process-global; two threads loading at once failed 33 of 40 tries
#: with ``ImportError`` or "Cannot copy out of meta tensor"), and thread-parallel runs of one
#: process (``tp campaign --workers thread``, ``tp serve``'s sessions) load at the same moment
LOAD_LOCK = threading.RLock()

LossName = Literal["importance_sampling", "ppo", "cross_entropy"]
LOSSES: tuple[str, ...] = ("importance_sampling", "ppo", "cross_entropy")


class Future(Protocol[T_co]):
    def result(self, timeout: float | None = None) -> T_co: ...


@attrs.frozen
class DoneFuture:
    """A future whose value is already known (engines that compute eagerly return these)."""

    value: Any

    def result(self, timeout: float | None = None) -> Any:
        return self.value


@attrs.frozen
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = attrs.field(default=(), converter=tuple)


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample ``index`` of a request for several samples seeded ``seed``.

    Every engine draws sample j of such a request as if it were a request for one sample
    seeded ``sample_seed(seed, j)`` (``seed`` itself for j = 0), so a seeded request for N
    samples and the N one-sample requests the Tinker engine sends for it (it does not rely on
    one seed for a group's diversity) give the same sequences.
    """
    if index == 0:
        return int(seed)
    from textpolicy.training.seeds import derive_seed

    return derive_seed(seed, "sample", index)


@attrs.frozen
class SampledSequence:
    """One sampled completion: token ids, the sampler's logprob of each, why it stopped.

    ``topk_logprobs[t]`` is a tuple of (token id, logprob) pairs when top-k was requested.
    The stop token (eos) is included in ``tokens`` when ``stop_reason == "stop"``.
    """

    tokens: tuple[int, ...] = attrs.field(converter=tuple)
    logprobs: tuple[float, ...] = attrs.field(converter=tuple)
    stop_reason: Literal["stop", "length"]
    topk_logprobs: tuple[tuple[tuple[int, float], ...], ...] | None = None


@attrs.frozen
class AdamParams:
    learning_rate: float
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-12
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0


def _int_tuple(values: Iterable[int]) -> tuple[int, ...]:
    return tuple(values)


@attrs.frozen(eq=False)
class Datum:
    """One training example in Tinker's format (already next-token shifted).

    ``loss_fn_inputs`` maps names (``target_tokens``, ``logprobs``, ``advantages``,
    ``weights``) to 1-D arrays of the same length as ``model_input``.
    """

    model_input: tuple[int, ...] = attrs.field(converter=_int_tuple)
    loss_fn_inputs: Mapping[str, NDArray[Any]] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        n = len(self.model_input)
        for key, arr in self.loss_fn_inputs.items():
            if np.asarray(arr).shape != (n,):
                raise EngineError(
                    f"datum: loss_fn_inputs[{key!r}] has shape {np.asarray(arr).shape}, "
                    f"expected ({n},) to match model_input")


@attrs.frozen
class ForwardBackwardResult:
    """``loss`` is the summed loss (Tinker's ``metrics["loss:sum"]``).

    ``logprobs``: per datum, the learner's logprob of each target token from the forward pass
    (before the update; Tinker's ``loss_fn_outputs[i]["logprobs"]``), aligned with
    ``target_tokens``; None when the engine did not return them.
    """

    loss: float
    metrics: Mapping[str, float] = attrs.field(factory=dict)
    logprobs: tuple[NDArray[np.float32], ...] | None = None


def build_rl_datum(
    prompt_ids: Sequence[int],
    completion_ids: Sequence[int],
    sampler_logprobs: Sequence[float] | NDArray[Any],
    token_advantages: Sequence[float] | NDArray[Any],
) -> Datum:
    """Build an importance-sampling/PPO datum with Tinker's next-token shift.

    ``model_input = (p + c)[:-1]``, ``target_tokens = (p + c)[1:]``; logprobs and advantages
    are zero on the ``len(p) - 1`` prompt targets and then the completion's values, so that
    position i (predicting token i + 1) carries the value of that target token.
    """
    p, c = list(prompt_ids), list(completion_ids)
    if not p:
        raise EngineError("datum: the prompt must have at least one token")
    if not c:
        raise EngineError("datum: the completion is empty")
    lp = np.asarray(sampler_logprobs, dtype=np.float32)
    adv = np.asarray(token_advantages, dtype=np.float32)
    if lp.shape != (len(c),) or adv.shape != (len(c),):
        raise EngineError(
            f"datum: completion has {len(c)} tokens but {lp.shape[0]} logprobs and "
            f"{adv.shape[0]} advantages")
    full = p + c
    pad = np.zeros(len(p) - 1, dtype=np.float32)
    return Datum(
        model_input=full[:-1],
        loss_fn_inputs={
            "target_tokens": np.asarray(full[1:], dtype=np.int64),
            "logprobs": np.concatenate([pad, lp]),
            "advantages": np.concatenate([pad, adv]),
        },
    )


def build_sft_datum(prompt_ids: Sequence[int], completion_ids: Sequence[int]) -> Datum:
    """A cross-entropy datum: weight 1 on completion targets, 0 on prompt targets."""
    p, c = list(prompt_ids), list(completion_ids)
    if not p or not c:
        raise EngineError("datum: prompt and completion must both be non-empty")
    full = p + c
    weights = np.concatenate([np.zeros(len(p) - 1), np.ones(len(c))]).astype(np.float32)
    return Datum(
        model_input=full[:-1],
        loss_fn_inputs={"target_tokens": np.asarray(full[1:], dtype=np.int64),
                        "weights": weights},
    )


class Tokenizer(Protocol):
    """The subset of a Hugging Face tokenizer that textpolicy uses."""

    eos_token_id: int | None

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


class SamplingClient(Protocol):
    def sample(
        self,
        prompt_ids: Sequence[int],
        num_samples: int,
        params: SamplingParams,
        *,
        topk_logprobs: int = 0,
    ) -> Future[list[SampledSequence]]: ...

    def compute_logprobs(self, sequences: Sequence[Sequence[int]]) -> Future[list[list[float]]]:
        """Logprob of every token given its prefix (first entry 0), for alignment checks."""
        ...


class TrainingClient(Protocol):
    def get_tokenizer(self) -> Tokenizer: ...

    def sampling_client(self, name: str) -> SamplingClient:
        """A sampling client from the current weights (Tinker:
        ``save_weights_and_get_sampling_client``)."""
        ...

    def forward_backward(
        self,
        datums: Sequence[Datum],
        loss_fn: str,
        loss_fn_config: Mapping[str, float] | None = None,
    ) -> Future[ForwardBackwardResult]: ...

    def optim_step(self, params: AdamParams) -> Future[None]: ...

    def save_state(self, name: str) -> Future[str]:
        """Save weights + optimizer state; the future yields a path for ``resume``."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Engine(Protocol):
    name: str

    def create_training_client(
        self, base_model: str, *, lora_rank: int | None, seed: int
    ) -> TrainingClient: ...

    def resume_training_client(self, state_path: str) -> TrainingClient:
        """A training client with the weights AND optimizer state saved at ``state_path``."""
        ...

    def close(self) -> None: ...
