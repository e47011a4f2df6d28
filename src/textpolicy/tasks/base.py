"""The task interface: examples with stable ids, prompt rendering, grading.

Stable example ids pair arms: seed s gives every arm the same training order and the same eval
prompts, and analysis pairs eval outcomes by ``Example.id``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs

from textpolicy.engines.base import Tokenizer


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

    def eval_examples(self, limit: int | None = None) -> Sequence[Example]:
        """Held-out examples, the same for every arm and seed (first ``limit`` when given)."""
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
