"""The MATH answer grader: the measured stack of ``reference/grading.md``.

1. the given answer (already extracted, or a text whose last ``\\boxed{}`` is taken);
2. base-subscript gold answers compared as digits + base strings (never math-verify);
3. fast accept paths: Hendrycks-style normalised equality, then text-normalised equality
   (these only ever accept);
4. guards that reject what math-verify would wrongly accept (factorial arguments differ);
5. math-verify 0.9 (``units=False``, boxed-first extraction, ``float_rounding=10``, trailing
   ``\\text{unit}`` stripped, ``\\frac``/``\\sqrt`` arguments braced, answer lists re-spaced,
   gold first) in persistent worker processes with a hard deadline; timeouts are reported
   separately and graded incorrect.
"""

from __future__ import annotations

import importlib.metadata
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from textpolicy.grading import guards
from textpolicy.grading.extract import extract_boxed
from textpolicy.grading.normalize import (
    fix_fracs_and_sqrt,
    hendrycks_normalize,
    strip_trailing_text_unit,
    text_normalize,
)
from textpolicy.grading.numeric import numbers_equal
from textpolicy.grading.pool import PoolStats, VerifyPool

GRADER_NAME = "textpolicy-math-stack"
GRADER_VERSION = "1"

# Every convention the grader applies, recorded in config.json (``MathGrader.describe``).
POLICY: Mapping[str, Any] = {
    "extraction": "last \\boxed{}/\\fbox{} (brace-matched; '\\boxed 5' too); none -> incorrect, "
                  "format failure",
    "base_subscript": "digits and base compared as strings; a given answer without a base is "
                      "accepted when its digits match",
    "fast_paths": "hendrycks-normalised equality, then text-normalised equality (accept only); "
                  "two plain numbers (int, decimal, a/b, \\frac{a}{b}) compared exactly",
    "math_verify": {"units": False, "boxed_first": True, "float_rounding": 10,
                    "trailing_text_unit": "stripped", "order": "gold first"},
    "decimal_for_fraction": "accepted only when equal to 10 decimal places (0.5 = 1/2, "
                            "0.3333 != 1/3)",
    "unreduced_fraction": "accepted (2/4 = 1/2)",
    "rounded_values": "rejected unless equal to 10 decimal places",
    "answer_lists": "unordered; a comma list gold (problem says 'separated by commas') is "
                    "compared element-wise as a set, never as a thousands-separated number",
    "factorials": "when both sides use n!, the arguments must agree",
    "intervals": "open and closed ends distinguished",
    "timeouts": "graded incorrect, counted separately (timed_out)",
}


@attrs.frozen
class GradeResult:
    """One verdict. ``method`` names the step that decided it."""

    correct: bool
    timed_out: bool = False
    method: str = ""


@attrs.frozen
class GradeRequest:
    given: str
    gold: str
    gold_is_list: bool | None = None


def _math_verify_version() -> str:
    try:
        return importlib.metadata.version("math-verify")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - it is a dependency
        return "unknown"


def _prepare(s: str) -> str:
    s = s.strip().replace("\\!", "")
    s = fix_fracs_and_sqrt(s)
    return strip_trailing_text_unit(s).strip()


def fast_decision(given: str, gold: str, gold_is_list: bool | None = None
                  ) -> GradeResult | tuple[str, str]:
    """Steps 1-4: a final ``GradeResult`` or the ``(gold, given)`` pair for math-verify."""
    given = given.strip()
    if "\\boxed" in given or "\\fbox" in given:
        given = extract_boxed(given) or ""
    gold = gold.strip()
    if not given:
        return GradeResult(False, method="empty")
    if guards.is_base_gold(gold):
        return GradeResult(guards.base_equal(given, gold), method="base")
    if hendrycks_normalize(given) == hendrycks_normalize(gold):
        return GradeResult(True, method="hendrycks")
    if text_normalize(given) == text_normalize(gold):
        return GradeResult(True, method="text")
    is_list = guards.is_list_answer(gold) if gold_is_list is None else gold_is_list
    if not is_list:
        verdict = numbers_equal(given, gold)
        if verdict is not None:
            return GradeResult(verdict, method="numeric")
    if guards.factorial_mismatch(given, gold):
        return GradeResult(False, method="factorial")
    gold_mv, given_mv = _prepare(gold), _prepare(given)
    if not gold_mv or not given_mv:
        return GradeResult(False, method="empty")
    if is_list:
        gold_mv, given_mv = guards.respace_list(gold_mv), guards.respace_list(given_mv)
    else:
        gold_mv, given_mv = guards.drop_thousands(gold_mv), guards.drop_thousands(given_mv)
    return gold_mv, given_mv


class MathGrader:
    """The grading stack with its own worker pool (``workers`` processes, started lazily).

    Thread-safe (one batch at a time). ``close()`` stops the workers; a closed grader
    restarts them on the next call.
    """

    name = GRADER_NAME
    version = GRADER_VERSION

    def __init__(self, workers: int = 2, *, deadline_s: float = 12.0, parse_timeout_s: int = 5,
                 verify_timeout_s: int = 5) -> None:
        self.workers = workers
        self.deadline_s = deadline_s
        self.parse_timeout_s = parse_timeout_s
        self.verify_timeout_s = verify_timeout_s
        self._pool: VerifyPool | None = None
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}

    def _get_pool(self) -> VerifyPool:
        if self._pool is None or self._pool._closed:
            self._pool = VerifyPool(self.workers, deadline_s=self.deadline_s,
                                    parse_timeout_s=self.parse_timeout_s,
                                    verify_timeout_s=self.verify_timeout_s)
        return self._pool

    @property
    def pool_stats(self) -> PoolStats:
        return self._get_pool().stats

    def grade(self, given: str, gold: str, *, gold_is_list: bool | None = None) -> GradeResult:
        return self.grade_many([GradeRequest(given, gold, gold_is_list)])[0]

    def grade_many(self, requests: Sequence[GradeRequest | tuple[str, str]]
                   ) -> list[GradeResult]:
        """Grade a batch: fast paths here, math-verify across the worker pool."""
        reqs = [r if isinstance(r, GradeRequest) else GradeRequest(r[0], r[1]) for r in requests]
        results: list[GradeResult | None] = [None] * len(reqs)
        todo: list[int] = []
        pairs: list[tuple[str, str]] = []
        for i, r in enumerate(reqs):
            decision = fast_decision(r.given, r.gold, r.gold_is_list)
            if isinstance(decision, GradeResult):
                results[i] = decision
            else:
                todo.append(i)
                pairs.append(decision)
        if pairs:
            with self._lock:
                outcomes = self._get_pool().verify_many(pairs)
            for i, out in zip(todo, outcomes, strict=True):
                method = ("timeout" if out.timed_out else
                          "crash" if out.crashed else "math_verify")
                results[i] = GradeResult(out.equal and not out.timed_out, out.timed_out, method)
        final = [res for res in results if res is not None]
        for res in final:
            self.counts[res.method] = self.counts.get(res.method, 0) + 1
        return final

    def describe(self) -> dict[str, Any]:
        """Grader name, version and policy (for config.json)."""
        return {
            "name": self.name,
            "version": self.version,
            "math_verify": _math_verify_version(),
            "workers": self.workers,
            "deadline_s": self.deadline_s,
            "parse_timeout_s": self.parse_timeout_s,
            "verify_timeout_s": self.verify_timeout_s,
            "policy": dict(POLICY),
        }

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> MathGrader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_DEFAULT: MathGrader | None = None
_DEFAULT_LOCK = threading.Lock()


def default_grader() -> MathGrader:
    """The process-wide grader behind ``grade_answer`` (2 workers)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = MathGrader()
        return _DEFAULT


def grade_answer(given: str, gold: str, *, gold_is_list: bool | None = None) -> bool:
    """Is ``given`` (an extracted final answer) equivalent to ``gold``?"""
    return default_grader().grade(given, gold, gold_is_list=gold_is_list).correct


def grade_answers(pairs: Sequence[tuple[str, str] | GradeRequest]) -> list[GradeResult]:
    """Batch form of ``grade_answer``: ``(given, gold)`` pairs → results."""
    return default_grader().grade_many(pairs)
