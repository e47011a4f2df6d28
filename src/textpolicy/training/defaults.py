"""Defaults of a training run, task-aware where the task changes what is sensible.

The seed document's defaults (``--lr 4e-5 --lora-rank 64 --max-tokens 2048 --temperature
0.7``) are for a 4B instruct model on MATH through Tinker. They make no sense for the built-in
arithmetic task, whose answers are at most three tokens long and whose 134k-parameter model
is fully fine-tuned. ``task_defaults(task)`` gives the defaults of one task; ``make_config``
builds a :class:`TrainConfig` in which every setting the caller leaves out takes the task's
default (``tp train`` uses it, so does the runner).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from textpolicy.errors import ConfigError
from textpolicy.plugins import did_you_mean
from textpolicy.training.config import TrainConfig

#: the seed document's stage flags: option name (``--gtpo-beta`` → ``gtpo_beta``) → (stage,
#: parameter) of the advantage pipeline. ``tp train``, ``tp sweep``/``tp campaign`` and the
#: runner's ``run_commands.sh`` all read this one table.
STAGE_FLAGS: Mapping[str, tuple[str, str]] = {
    "gtpo_beta": ("gtpo", "beta"),
    "hicra_alpha": ("hicra", "alpha"),
    "sepa_steps": ("sepa", "ramp_steps"),
    "sepa_schedule": ("sepa", "schedule"),
    "sepa_delay_steps": ("sepa", "delay_steps"),
    "sepa_correct_rate_gate": ("sepa", "correct_rate_gate"),
}

#: the seed document's defaults (MATH on Tinker); used for every task without its own row.
SEED_DEFAULTS: Mapping[str, Any] = {
    "lr": 4e-5,
    "lora_rank": 64,
    "max_tokens": 2048,
    "temperature": 0.7,
    "eval_every": 0,
}

#: per-task overrides of ``SEED_DEFAULTS``.
TASK_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "arithmetic": {
        "lr": 1e-3,          # the tiny model's 20-step optimum (full fine-tune)
        "lora_rank": None,   # full fine-tune: LoRA on 134k parameters buys nothing
        "max_tokens": 4,     # at most two digits and <eos>; one spare token
        "temperature": 1.0,  # sample at the temperature the importance-sampling loss assumes
        "eval_every": 10,    # eval is cheap here: every 10 steps, at 0 and at the end
    },
}


def task_defaults(task: str) -> dict[str, Any]:
    """The defaults a run of ``task`` gets for the task-dependent settings."""
    return {**SEED_DEFAULTS, **TASK_DEFAULTS.get(task, {})}


def make_config(**settings: Any) -> TrainConfig:
    """A :class:`TrainConfig` from ``settings``; task-dependent settings that are left out
    take ``task_defaults(settings["task"])``. Invalid values raise ``ConfigError``."""
    names = {f.name for f in attrs.fields(TrainConfig)}
    for key in settings:
        if key not in names:
            raise ConfigError(
                f"unknown training setting {key!r}{did_you_mean(key, names)}; "
                f"allowed: {', '.join(sorted(names))}")
    task = str(settings.get("task", "arithmetic"))
    values = {**task_defaults(task), **settings}
    try:
        return TrainConfig(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"training setting: {exc}") from None
