"""The built-in ``arithmetic`` task: single-digit addition for the built-in tiny model.

* Examples: the 100 prompts ``a+b=`` (a, b in 0..9) with id ``arith/a+b`` and answer the
  digits of a + b. A completion is the answer followed by the end-of-sequence token.
* Splits (fixed, the same for every seed and arm), by the rank of SHA-256 of the id: the 30
  smallest are the **test** split (the campaign endpoint; 16 have two-digit answers), the next
  20 the **validation** split (where the LR sweep selects; 10 have two-digit answers), the other
  50 are training prompts. The tiny model's warm start (the "base model") was trained with
  diffuse labels on all 100 prompts, so held-out eval measures how much RL sharpens the policy
  on prompts RL never trained on — not whether it can learn unseen facts.
* Training order: a permutation of the 50 training examples drawn from the run's seed (every arm
  with seed s sees the same order); the training loop cycles through it.
* Reward ``exact_match``: 1.0 when the completion is exactly the answer (leading/trailing
  whitespace ignored); when the completion text still contains the tokenizer's end-of-sequence
  text (decoded without skipping special tokens) it must be exactly answer + eos. Truncated or
  extra output scores 0 — stray special tokens (``8<pad><eos>``, ``<bos>8<eos>``) included:
  the task sets ``grade_special_tokens`` so training and eval grade the text decoded with
  special tokens. Correctness = reward == 1.
* ``max_tokens`` (default 4): enough for two digits and eos; runs should sample no more.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from textpolicy.engines.base import Tokenizer
from textpolicy.errors import ConfigError
from textpolicy.tasks.base import Example, Grade, check_split

TINY_MODEL = "textpolicy/tiny-arithmetic"  # == textpolicy.engines.local.TINY_MODEL
GENERATOR = "arithmetic-v1"
NUM_EVAL = 30  # test split
NUM_VALIDATION = 20


@attrs.frozen
class ArithmeticParams:
    """Parameters of the arithmetic task."""

    max_tokens: int = 4
    eos_text: str = "<eos>"


def all_examples() -> list[Example]:
    """The 100 single-digit additions in a-major order."""
    return [Example(id=f"arith/{a}+{b}", prompt=f"{a}+{b}=", answer=str(a + b),
                    metadata={"a": a, "b": b, "answer_digits": len(str(a + b))})
            for a in range(10) for b in range(10)]


def _ranked() -> list[Example]:
    return sorted(all_examples(), key=lambda e: hashlib.sha256(e.id.encode()).hexdigest())


def eval_ids() -> frozenset[str]:
    """The fixed test ids: the NUM_EVAL smallest SHA-256 digests of the ids."""
    return frozenset(e.id for e in _ranked()[:NUM_EVAL])


def validation_ids() -> frozenset[str]:
    """The fixed validation ids: the next NUM_VALIDATION digests after the test ids."""
    return frozenset(e.id for e in _ranked()[NUM_EVAL:NUM_EVAL + NUM_VALIDATION])


def exact_match(completion: str, answer: str, eos_text: str = "<eos>") -> Grade:
    """Exact-match grade of one completion (see the module docstring for the eos rule)."""
    # No stripping: the tiny model's vocabulary has a space symbol, so "7   " is a truncated
    # completion (no eos within max_tokens), not the answer, and must score 0.
    text = completion
    ok = text == answer + eos_text if eos_text and eos_text in text else text == answer
    return Grade(reward=1.0 if ok else 0.0, correct=ok, format_ok=ok or text.isdigit())


def _digest(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


class ArithmeticTask:
    """Single-digit addition with a fixed 50/20/30 train/validation/test split."""

    name = "arithmetic"
    default_model = TINY_MODEL
    #: the training loop and eval decode completions WITH special tokens for this task, so
    #: ``8<pad><eos>`` or ``<bos>8<eos>`` is not graded as the exact answer ``8<eos>``
    grade_special_tokens = True

    def __init__(self, params: ArithmeticParams | None = None) -> None:
        self.params = params or ArithmeticParams()
        if self.params.max_tokens < 1:
            raise ConfigError(f"task arithmetic: max_tokens={self.params.max_tokens}: must be >= 1")
        test, validation = eval_ids(), validation_ids()
        examples = all_examples()
        self._train = [e for e in examples if e.id not in test | validation]
        self._eval = [e for e in examples if e.id in test]
        self._validation = [e for e in examples if e.id in validation]

    @property
    def max_tokens(self) -> int:
        return self.params.max_tokens

    def train_examples(self, seed: int) -> Sequence[Example]:
        order = np.random.default_rng([int(seed), 0x41524954]).permutation(len(self._train))
        return [self._train[i] for i in order]

    def eval_examples(self, limit: int | None = None, split: str = "test"
                      ) -> Sequence[Example]:
        pool = self._eval if check_split(self.name, split) == "test" else self._validation
        return list(pool if limit is None else pool[:limit])

    def render_prompt(self, example: Example, tokenizer: Tokenizer) -> list[int]:
        if getattr(tokenizer, "chat_template", None):
            rendered: Any = tokenizer.apply_chat_template(  # type: ignore[attr-defined]
                [{"role": "user", "content": example.prompt}], add_generation_prompt=True,
                tokenize=True)
            if isinstance(rendered, Mapping) or hasattr(rendered, "input_ids"):
                rendered = rendered["input_ids"]
            return [int(t) for t in rendered]
        ids = tokenizer.encode(example.prompt, add_special_tokens=False)
        bos = getattr(tokenizer, "bos_token_id", None)
        return ([int(bos)] if bos is not None else []) + [int(t) for t in ids]

    def grade(self, example: Example, completion: str) -> Grade:
        return exact_match(completion, example.answer, self.params.eos_text)

    def grade_many(self, pairs: Sequence[tuple[Example, str]]) -> list[Grade]:
        return [self.grade(example, completion) for example, completion in pairs]

    def fingerprint(self) -> Mapping[str, Any]:
        return {"generator": GENERATOR, "num_train": len(self._train),
                "num_eval": len(self._eval), "num_validation": len(self._validation),
                "train_ids_sha256": _digest([e.id for e in self._train]),
                "eval_ids_sha256": _digest([e.id for e in self._eval]),
                "validation_ids_sha256": _digest([e.id for e in self._validation])}

    def describe(self) -> Mapping[str, Any]:
        return {"name": self.name, "default_model": self.default_model,
                "params": attrs.asdict(self.params),
                "split": f"fixed by the rank of sha256(id): test = the {len(self._eval)} "
                         f"smallest, validation = the next {len(self._validation)}, train = "
                         f"the other {len(self._train)}",
                "grader": {"name": "exact_match", "version": 1,
                           "policy": "answer (+ eos when present in the text), whitespace "
                                     "stripped; anything else scores 0"}}
