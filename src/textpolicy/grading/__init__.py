"""MATH answer grading: ``extract_boxed``, ``grade_answer`` and the batch ``MathGrader``.

See ``textpolicy.grading.grader`` for the stack and ``POLICY`` for its conventions.
"""

from __future__ import annotations

from textpolicy.grading.extract import extract_boxed
from textpolicy.grading.grader import (
    GRADER_NAME,
    GRADER_VERSION,
    POLICY,
    GradeRequest,
    GradeResult,
    MathGrader,
    default_grader,
    grade_answer,
    grade_answers,
)
from textpolicy.grading.pool import VerifyOutcome, VerifyPool

__all__ = [
    "GRADER_NAME",
    "GRADER_VERSION",
    "POLICY",
    "GradeRequest",
    "GradeResult",
    "MathGrader",
    "VerifyOutcome",
    "VerifyPool",
    "default_grader",
    "extract_boxed",
    "grade_answer",
    "grade_answers",
]
