"""textpolicy's built-in plugins, registered explicitly (never through entry points).

Each module in ``BUILTIN_PLUGINS`` implements hooks of ``textpolicy.hookspecs`` with the same
``@hookimpl`` API a third-party plugin uses.
"""

from __future__ import annotations

from types import ModuleType

from textpolicy_builtins import (
    advantages,
    engine_local,
    engine_tinker,
    executors,
    pipelines,
    planning,
    schedulers,
    significance,
    task_arithmetic,
    task_math,
)

BUILTIN_PLUGINS: tuple[ModuleType, ...] = (
    advantages,
    planning,
    schedulers,
    pipelines,
    significance,
    engine_local,
    engine_tinker,
    task_arithmetic,
    task_math,
    executors,
)
