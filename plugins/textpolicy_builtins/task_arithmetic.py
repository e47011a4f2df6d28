"""Built-in task ``arithmetic`` (single-digit addition) and reward ``exact_match``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from textpolicy import records
from textpolicy.plugins import hookimpl
from textpolicy.tasks.arithmetic import ArithmeticParams, ArithmeticTask, exact_match
from textpolicy.tasks.base import Example, Grade


@attrs.frozen
class ExactMatchParams:
    """``eos_text``: the end-of-sequence text a completion may still contain."""

    eos_text: str = "<eos>"


def exact_match_reward(completion: str, example: Example, params: Any) -> Grade:
    return exact_match(completion, example.answer, getattr(params, "eos_text", "<eos>"))


def make_arithmetic(params: ArithmeticParams) -> ArithmeticTask:
    return ArithmeticTask(params)


@hookimpl
def textpolicy_register_tasks() -> Iterable[records.TaskPlugin]:
    return [records.TaskPlugin(
        name="arithmetic", factory=make_arithmetic, params=ArithmeticParams,
        doc="single-digit addition (100 prompts, 30 held out) for the built-in tiny model")]


@hookimpl
def textpolicy_register_rewards() -> Iterable[records.RewardFunction]:
    return [records.RewardFunction(
        name="exact_match", fn=exact_match_reward, params=ExactMatchParams,
        doc="1.0 when the completion equals the example's answer exactly, else 0.0")]
