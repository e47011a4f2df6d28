"""Tinker's losses as SUMS over every token of every datum (no mean anywhere).

For each datum position i (predicting ``target_tokens[i]``) with learner logprob ``logp``:

* ``cross_entropy``: ``-Σ weights·logp`` (weights default to 1 when absent);
* ``importance_sampling``: ``-Σ exp(logp − logq)·A`` with the sampler's ``logprobs`` q and
  ``advantages`` A;
* ``ppo``: ``-Σ min(r·A, clip(r, low, high)·A)`` with r = exp(logp − logq) and
  ``loss_fn_config`` thresholds ``clip_low_threshold`` (0.8) and ``clip_high_threshold`` (1.2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from textpolicy.engines.base import LOSSES, Datum
from textpolicy.errors import EngineError

REQUIRED: dict[str, tuple[str, ...]] = {
    "cross_entropy": ("target_tokens",),
    "importance_sampling": ("target_tokens", "logprobs", "advantages"),
    "ppo": ("target_tokens", "logprobs", "advantages"),
}
PPO_DEFAULTS = {"clip_low_threshold": 0.8, "clip_high_threshold": 1.2}


def check_request(datums: Sequence[Datum], loss_fn: str,
                  loss_fn_config: Mapping[str, float] | None) -> dict[str, float]:
    """Validate a forward_backward request; return the loss config with defaults."""
    if loss_fn not in LOSSES:
        raise EngineError(f"forward_backward: unknown loss {loss_fn!r}; known: "
                          f"{', '.join(LOSSES)}")
    for k, datum in enumerate(datums):
        if not datum.model_input:
            raise EngineError(f"forward_backward: datum {k} has an empty model_input")
        missing = [key for key in REQUIRED[loss_fn] if key not in datum.loss_fn_inputs]
        if missing:
            raise EngineError(f"forward_backward: datum {k} lacks {', '.join(missing)} "
                              f"needed by {loss_fn}")
    config = dict(PPO_DEFAULTS) if loss_fn == "ppo" else {}
    for key, value in (loss_fn_config or {}).items():
        if loss_fn != "ppo" or key not in PPO_DEFAULTS:
            raise EngineError(f"forward_backward: loss_fn_config key {key!r} is not used by "
                              f"{loss_fn}")
        config[key] = float(value)
    return config


def stack_inputs(datums: Sequence[Datum], key: str, width: int, default: float) -> np.ndarray:
    """``loss_fn_inputs[key]`` of every datum, right-padded to ``width`` (float64)."""
    out = np.zeros((len(datums), width), dtype=np.float64)
    for i, datum in enumerate(datums):
        arr = datum.loss_fn_inputs.get(key)
        n = len(datum.model_input)
        out[i, :n] = default if arr is None else np.asarray(arr, dtype=np.float64)
    return out


def token_losses(loss_fn: str, logp: Any, inputs: Mapping[str, Any],
                 config: Mapping[str, float]) -> Any:
    """Per-token loss terms (their sum is the loss) for padded tensors of one micro-batch."""
    import torch

    if loss_fn == "cross_entropy":
        return -inputs["weights"] * logp
    adv = inputs["advantages"]
    ratio = torch.exp(logp - inputs["logprobs"])
    if loss_fn == "importance_sampling":
        return -ratio * adv
    clipped = ratio.clamp(config["clip_low_threshold"], config["clip_high_threshold"])
    return -torch.minimum(ratio * adv, clipped * adv)
