"""Built-in ``math`` task (MATH problems) and the ``math_boxed`` reward function."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from textpolicy import records
from textpolicy.plugins import hookimpl


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen
class MathBoxedParams:
    """``format_weight`` w: reward = correct + w·(format_ok − 1)."""

    format_weight: float = attrs.field(default=0.0, validator=_non_negative)


def math_boxed_reward(completion: str, example: Any, params: MathBoxedParams) -> Any:
    """Grade the last ``\\boxed{}`` of ``completion`` against ``example.answer``."""
    from textpolicy.grading import default_grader, extract_boxed
    from textpolicy.tasks.base import Grade

    box = extract_boxed(completion)
    format_ok = bool(box)
    res = default_grader().grade(
        box or "", example.answer,
        gold_is_list=bool(getattr(example, "metadata", {}).get("list_answer")) or None)
    correct = format_ok and res.correct
    return Grade(reward=float(correct) + params.format_weight * (float(format_ok) - 1.0),
                 correct=correct, format_ok=format_ok, timed_out=res.timed_out)


def _make_task(params: Any) -> Any:
    from textpolicy.tasks.math import MathTask

    return MathTask(params)


def _params_cls() -> type:
    from textpolicy.tasks.math import MathParams

    return MathParams


@hookimpl
def textpolicy_register_tasks() -> Iterable[records.TaskPlugin]:
    return [records.TaskPlugin(
        name="math", factory=_make_task, params=_params_cls(),
        doc="MATH problems (hub or local jsonl/parquet), \\boxed{} answers graded by the "
            "textpolicy.grading stack; eval on MATH-500")]


@hookimpl
def textpolicy_register_rewards() -> Iterable[records.RewardFunction]:
    return [records.RewardFunction(
        name="math_boxed", fn=math_boxed_reward, params=MathBoxedParams,
        doc="1 when the last \\boxed{} answer is equivalent to the gold answer (math-verify "
            "stack), minus format_weight when there is no box")]
