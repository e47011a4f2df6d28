"""``tp serve``: the local engine behind Tinker's wire protocol.

The unmodified ``tinker`` SDK (``ServiceClient(base_url=...)`` with ``TINKER_API_KEY=tml-local``)
drives it: sessions, LoRA training clients, forward_backward / optim_step, sampling clients,
save_state and resume with optimizer state, with faults injectable for tests. It exists for
correctness tests, CI and offline work; it says nothing about Tinker's own numerics, queueing
or speed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from textpolicy.errors import ConfigError
from textpolicy.serve.faults import FaultPlan, FaultRule
from textpolicy.serve.server import TinkerServer
from textpolicy.serve.service import TinkerService

__all__ = ["FaultPlan", "FaultRule", "TinkerServer", "TinkerService", "served_models"]


def served_models(extra: Sequence[str] = ()) -> dict[str, str]:
    """Served name → what the engine is asked for: the built-in tiny model under its stable
    name, plus each ``PATH`` (served as ``PATH``) or ``NAME=PATH`` given on the command line."""
    from textpolicy.engines.local import TINY_MODEL
    from textpolicy.engines.local.gguf import SMOLLM2_MODEL

    models = {TINY_MODEL: TINY_MODEL}
    for item in extra:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = item, item
        if path == SMOLLM2_MODEL:  # a named model source of the local engine
            models[name] = path
            continue
        if not name or not Path(path).exists():
            raise ConfigError(f"--model {item!r}: expected {SMOLLM2_MODEL!r}, PATH or NAME=PATH "
                              "of an existing local checkpoint directory or .gguf file")
        models[name] = str(Path(path).resolve())
    return models
