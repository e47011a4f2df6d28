"""Training: one run = engine + task + pipeline + schedulers, writing the run files.

``run_training(config)`` trains one run (resuming from its last checkpoint when ``log_dir``
holds one); ``make_config(**settings)`` builds a :class:`TrainConfig` with task-aware
defaults. See docs/training.md.
"""

from __future__ import annotations

from textpolicy.training.config import TrainConfig
from textpolicy.training.defaults import make_config, task_defaults
from textpolicy.training.loop import METRIC_KEYS, RunOutcome
from textpolicy.training.session import run_training

__all__ = [
    "METRIC_KEYS",
    "RunOutcome",
    "TrainConfig",
    "make_config",
    "run_training",
    "task_defaults",
]
