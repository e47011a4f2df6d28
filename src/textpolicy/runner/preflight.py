"""What a plan's runs need, checked before anything runs (a dry run included).

``check_plan`` raises ``ConfigError`` for what every run would refuse — the task's parameters
and data files, the model (for engines that can tell, e.g. the local engine's checkpoint
folder), the engine's option names and values (``EnginePlugin.check``) — and returns the
engine's one-line notes on this machine's environment, which would stop the runs here but may
not where they are meant to run (no API key, a service that does not answer). Nothing is
loaded, built or started. (The dry run adds the task data's and W&B's notes: ``api``.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from textpolicy.errors import ConfigError, TextPolicyError
from textpolicy.runner.follow import describe_error
from textpolicy.runner.plan import Plan
from textpolicy.training.config import TrainConfig


def check_plan(plan: Plan) -> list[str]:
    """Raise ``ConfigError`` for what the runs would refuse; return environment notes."""
    notes: list[str] = []
    seen: set[str] = set()
    for run in plan.runs:
        config = run.config
        key = json.dumps([config.task, dict(config.task_params), config.engine,
                          dict(config.engine_options), config.model], sort_keys=True,
                         default=str)
        if key in seen:
            continue
        seen.add(key)
        model = _check_task(config)
        notes += [n for n in _check_engine(config, model) if n not in notes]
    return notes


def check_config(config: TrainConfig) -> list[str]:
    """``check_plan`` for one run's config (``tp train`` calls it before printing anything)."""
    return _check_engine(config, _check_task(config))


def _check_task(config: TrainConfig) -> str:
    """Make the task (its parameters and files are checked; data is not loaded); return the
    run's model."""
    from textpolicy.training.session import make_task

    try:
        task = make_task(config)
    except TextPolicyError:
        raise
    except Exception as exc:  # a plugin's own error: one line, as the real run would fail
        raise ConfigError(f"task {config.task!r} cannot be made: {describe_error(exc)}"
                          ) from None
    try:
        return config.model or str(task.default_model)
    finally:
        close = getattr(task, "close", None)
        if callable(close):
            close()


def _check_engine(config: TrainConfig, model: str) -> list[str]:
    from textpolicy.training.session import check_engine

    record = check_engine(config)
    check = getattr(record, "check", None)
    if check is None:
        return []
    options: Mapping[str, Any] = dict(config.engine_options)
    try:
        notes = check(model, **options)
    except TextPolicyError:
        raise  # the very line the real run would print
    except Exception as exc:  # a plugin's own error: one line
        raise ConfigError(f"engine {config.engine!r}: its check failed: "
                          f"{describe_error(exc)}") from None
    return [str(n) for n in notes or ()]
