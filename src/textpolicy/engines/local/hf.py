"""Loading Hugging Face checkpoints and the forward-pass helpers shared by sampler and learner.

* ``resolve_device``: ``"auto"`` → CUDA when available, else CPU; bf16 weights on CUDA, fp32
  on CPU (``torch.set_num_threads(1)`` on CPU: on a loaded 2-core machine two OpenMP threads
  spin-wait and one forward takes 50x longer).
* ``cache_kwarg``: transformers 5.24 renamed the forward kwarg ``past_key_values`` to ``cache``
  (the old name still works there with a warning); 5.17 only knows ``past_key_values``. The name
  is read from the model class's ``forward`` signature, never assumed from a version number.
* ``token_logprobs``: log p(target | prefix) from hidden states, computing the vocabulary
  projection and log-softmax in fp32 chunk by chunk (a real vocabulary has 151,936 entries) with
  activation checkpointing, so only hidden states are kept for backward.
* ``load_tokenizer`` / ``load_causal_lm`` are not thread-safe (transformers' loading is
  process-global state): callers hold :data:`textpolicy.engines.base.LOAD_LOCK`, as
  ``LocalEngine`` does around everything it builds, loads and wraps.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from textpolicy.errors import ConfigError, EngineError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> tuple[Any, Any]:
    """(torch.device, dtype) for ``"auto" | "cpu" | "cuda"`` (``"cuda:1"`` also accepted)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not (device in DEVICES or device.startswith("cuda:")):
        raise ConfigError(f"engine option device={device!r}: allowed: auto, cpu, cuda")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"engine option device={device!r}: CUDA is not available here")
        return torch.device(device), torch.bfloat16
    torch.set_num_threads(1)
    return torch.device("cpu"), torch.float32


def quiet_transformers() -> None:
    """No per-file progress bars while loading/saving checkpoints (training has its own)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # transformers raises many types here
        raise EngineError(f"local engine: cannot load a tokenizer from {path}: {exc}") from None


def load_causal_lm(path: Path, device: Any, dtype: Any) -> Any:
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    except Exception as exc:
        raise EngineError(f"local engine: cannot load a causal LM from {path}: {exc}") from None
    return model.to(device)


def hf_model(model: Any) -> Any:
    """The transformers model under a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def cache_kwarg(model: Any) -> str:
    """``"cache"`` (transformers ≥ 5.24) or ``"past_key_values"`` (older), by signature."""
    params = inspect.signature(type(hf_model(model)).forward).parameters
    if "cache" in params:
        return "cache"
    if "past_key_values" in params:
        return "past_key_values"
    raise EngineError(
        f"local engine: {type(hf_model(model)).__name__}.forward takes neither 'cache' nor "
        "'past_key_values'; cannot decode with a KV cache")


def decoder_and_head(model: Any) -> tuple[Any, Any]:
    """(the transformer body returning hidden states, the output projection)."""
    base = hf_model(model)
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else base.model
    head = base.get_output_embeddings()
    if decoder is None or head is None:
        raise EngineError(f"local engine: {type(base).__name__} has no decoder/lm_head")
    return decoder, head


def _chunk_logprobs(head: Any, hidden: Any, targets: Any) -> Any:
    import torch

    logits = head(hidden).float()
    return torch.gather(logits, -1, targets[:, None])[:, 0] - torch.logsumexp(logits, -1)


def token_logprobs(head: Any, hidden: Any, targets: Any, *, chunk_tokens: int = 4096) -> Any:
    """log p(targets) for flat ``hidden [M, H]`` and ``targets [M]`` in fp32 chunks."""
    import torch
    from torch.utils.checkpoint import checkpoint

    vocab = int(head.weight.shape[0])
    rows = max(1, min(chunk_tokens, (1 << 26) // max(vocab, 1)))  # ≤ 256 MB fp32 per chunk
    if hidden.shape[0] <= rows:
        return _chunk_logprobs(head, hidden, targets)
    out = []
    for start in range(0, hidden.shape[0], rows):
        h, t = hidden[start:start + rows], targets[start:start + rows]
        if torch.is_grad_enabled() and h.requires_grad:
            out.append(checkpoint(_chunk_logprobs, head, h, t, use_reentrant=False))
        else:
            out.append(_chunk_logprobs(head, h, t))
    return torch.cat(out)
