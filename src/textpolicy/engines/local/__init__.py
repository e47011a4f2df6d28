"""The embedded ``local`` engine: torch + transformers (+ peft for LoRA) in this process.

``TINY_MODEL`` names the built-in tiny arithmetic model (built offline and cached on first
use). Importing this package does not import torch; ``LocalEngine`` is loaded on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textpolicy.engines.local.tiny import TINY_MODEL

if TYPE_CHECKING:
    from textpolicy.engines.local.engine import LocalEngine

__all__ = ["TINY_MODEL", "LocalEngine"]


def __getattr__(name: str) -> Any:
    if name == "LocalEngine":
        from textpolicy.engines.local.engine import LocalEngine

        return LocalEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
