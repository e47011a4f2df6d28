"""textpolicy: fair, reproducible, statistically valid A/B experiments between RL advantage
pipelines for LLM training (GRPO against MaxRL + GTPO + HICRA + SEPA).

Library use::

    import textpolicy as tp
    pipeline = tp.load_pipeline("full")
    result = pipeline(rollouts, step=0)
"""

from __future__ import annotations

from typing import Any

from textpolicy.errors import (
    AnalysisError,
    ConfigError,
    EngineError,
    PluginError,
    RolloutError,
    TaskError,
    TextPolicyError,
    UnknownComponentError,
)
from textpolicy.plugins import hookimpl
from textpolicy.rollouts import Rollouts

__version__ = "0.1.0"

__all__ = [
    "AnalysisError",
    "ConfigError",
    "EngineError",
    "PluginError",
    "RolloutError",
    "Rollouts",
    "TaskError",
    "TextPolicyError",
    "UnknownComponentError",
    "__version__",
    "hookimpl",
    "load_pipeline",
]


def load_pipeline(name: str, /, **params: Any) -> Any:
    """Return the named (or composed) pipeline; see ``textpolicy.pipeline.load_pipeline``."""
    from textpolicy.pipeline import load_pipeline as _load

    return _load(name, **params)
