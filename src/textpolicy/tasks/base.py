"""The task interface: examples with stable ids, prompt rendering, grading.

Stable example ids pair arms: seed s gives every arm the same training order and the same eval
prompts, and analysis pairs eval outcomes by ``Example.id``.

Every task has three disjoint splits: ``train`` (what RL trains on), ``validation`` (LR
selection and any early decision: the sweep evaluates its probes here) and ``test`` (the
campaign's endpoint). ``eval_examples(limit, split=...)`` returns one of the two held-out splits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs

from textpolicy.engines.base import Tokenizer
from textpolicy.errors import ConfigError

#: the held-out splits: ``validation`` chooses (LRs, early decisions), ``test`` decides
EVAL_SPLITS = ("validation", "test")


@attrs.frozen
class Example:
    """One prompt. ``id`` is stable across runs and machines (e.g. ``test/algebra/12.json``)."""

    id: str
    prompt: str
    answer: str
    metadata: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Grade:
    """A grader's verdict: reward used for training, correctness logged separately."""

    reward: float
    correct: bool
    format_ok: bool = True
    timed_out: bool = False


class Task(Protocol):
    name: str
    default_model: str

    def train_examples(self, seed: int) -> Sequence[Example]:
        """Training examples in the order seed ``seed`` visits them (same for every arm)."""
        ...

    def eval_examples(self, limit: int | None = None, split: str = "test"
                      ) -> Sequence[Example]:
        """Held-out examples of ``split`` (``"validation"`` or ``"test"``), the same for every
        arm and seed (the first ``limit`` when given); disjoint from the training examples and
        from each other."""
        ...

    def render_prompt(self, example: Example, tokenizer: Tokenizer) -> list[int]:
        """Prompt token ids (the tokenizer's chat template when it has one)."""
        ...

    def grade(self, example: Example, completion: str) -> Grade: ...

    def grade_many(self, pairs: Sequence[tuple[Example, str]]) -> list[Grade]:
        """Grade a batch (tasks with slow graders parallelise here)."""
        ...

    def fingerprint(self) -> Mapping[str, Any]:
        """What identifies the data (file hashes, hub revision, generator version)."""
        ...

    def describe(self) -> Mapping[str, Any]:
        """Task parameters, grader name/version/policy: recorded in config.json."""
        ...


def check_split(task: str, split: str) -> str:
    """``split`` when it is a held-out split, else a ``ConfigError`` naming the allowed ones."""
    if split not in EVAL_SPLITS:
        raise ConfigError(f"task {task!r}: eval split {split!r} is not a held-out split; "
                          f"allowed: {', '.join(EVAL_SPLITS)}")
    return split


def held_out_examples(task: Task, split: str, limit: int | None = None) -> list[Example]:
    """``task.eval_examples(limit, split=split)``; a plugin task whose ``eval_examples`` takes
    no ``split`` has only a test split (asking it for validation is a ``ConfigError``)."""
    import inspect

    check_split(task.name, split)
    try:
        takes_split = "split" in inspect.signature(task.eval_examples).parameters
    except (TypeError, ValueError):
        takes_split = True
    if takes_split:
        return list(task.eval_examples(limit, split=split))
    if split != "test":
        raise ConfigError(
            f"task {task.name!r} has no validation split (its eval_examples takes no split=); "
            "give it one, or pick LRs on its test prompts knowingly with [sweep] split = "
            "'test' (the campaign report then says the LRs were chosen on its endpoint)")
    return list(task.eval_examples(limit))
