"""The MATH grader: extraction, normalisation, every trap of grading.md, the worker pool."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from textpolicy.errors import ConfigError
from textpolicy.grading import (
    POLICY,
    GradeRequest,
    MathGrader,
    VerifyPool,
    extract_boxed,
    grade_answer,
)
from textpolicy.grading.normalize import fix_fracs_and_sqrt, hendrycks_normalize, text_normalize
from textpolicy.tasks.evaluation import pass_at_k

CASES_PATH = Path(__file__).parent / "data" / "grading_cases.jsonl"
CASES: list[dict[str, Any]] = [json.loads(line) for line in CASES_PATH.read_text().splitlines()
                               if line.strip()]
# math-verify issue #65: converting this parse to a string hangs
PATHOLOGICAL = ("\\boxed{\\dfrac{5^{\\left(5^{\\left(5^{\\left(5^5\\right)}\\right)} - 4\\right)} "
                "- 5}{16}}")


@pytest.fixture(scope="module")
def grader() -> Iterator[MathGrader]:
    g = MathGrader(workers=2)
    yield g
    g.close()


def _case_id(case: dict[str, Any]) -> str:
    return f"{case['category']}:{case['gold']}|{case['answer']}"


@pytest.fixture(scope="module")
def case_results(grader: MathGrader) -> list[Any]:
    """All committed cases graded in one batch (the pool's batch path)."""
    return grader.grade_many([GradeRequest(c["answer"], c["gold"], c.get("gold_is_list"))
                              for c in CASES])


@pytest.mark.parametrize("index", range(len(CASES)), ids=[_case_id(c) for c in CASES])
def test_committed_case(index: int, case_results: list[Any]) -> None:
    case = CASES[index]
    result = case_results[index]
    assert result.correct is case["expected"], (case, result)
    assert not result.timed_out


def test_cases_cover_every_trap_and_category() -> None:
    categories = {c["category"] for c in CASES}
    for trap in ("trap_units", "trap_base", "trap_list", "trap_percent", "trap_factorial",
                 "trap_frac_space", "trap_time", "trap_asymmetry"):
        assert trap in categories
    for cat in ("integer", "fraction", "radical", "pi", "expression", "thousands", "interval",
                "tuple", "set", "multiple_choice", "text", "matrix", "units", "degrees"):
        assert cat in categories
    by_cat: dict[str, set[bool]] = {}
    for c in CASES:
        by_cat.setdefault(c["category"], set()).add(c["expected"])
    assert sum(1 for v in by_cat.values() if v == {True, False}) >= 15


def test_grade_answer_single_calls() -> None:
    assert grade_answer("\\frac{2}{4}", "\\frac12") is True
    assert grade_answer("6+9c", "15") is False
    assert grade_answer("So the answer is \\boxed{\\dfrac{3}{8}}.", "\\frac{3}{8}") is True


@pytest.mark.parametrize(("text", "expected"), [
    ("so $\\boxed{5}$", "5"),
    ("\\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("nested \\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
    ("\\boxed{\\text{(C)}}.", "\\text{(C)}"),
    ("the answer is \\boxed 5.", "5"),
    ("\\fbox{42}", "42"),
    ("\\boxed {17}.", "17"),
    ("no box here", None),
    ("truncated \\boxed{\\frac{1}{", None),
    ("\\boxed{x^{2}+\\left(1\\right)}", "x^{2}+\\left(1\\right)"),
])
def test_extract_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected


def test_normalisations() -> None:
    assert fix_fracs_and_sqrt("\\frac \\pi4 + 2 - \\sqrt2") == "\\frac{\\pi}{4} + 2 - \\sqrt{2}"
    assert fix_fracs_and_sqrt("\\dfrac12") == "\\frac{1}{2}"
    assert fix_fracs_and_sqrt("\\sqrt[3]{8}") == "\\sqrt[3]{8}"
    assert hendrycks_normalize("\\dfrac{1}{2}") == hendrycks_normalize("0.5")
    assert hendrycks_normalize("x = \\left(3\\right)") == "(3)"
    assert hendrycks_normalize("3/4") == "\\frac{3}{4}"
    assert hendrycks_normalize("10\\text{ cm}") == "10"
    assert text_normalize("\\text{4:30 p.m.}") == text_normalize("4:30 \\text{ p.m.}")
    assert text_normalize("\\textbf{(B)}") == "b"


def test_math_verify_is_called_gold_first() -> None:
    with VerifyPool(1) as pool:
        forward, backward = pool.verify_many([("1 \\le x \\le 2", "[1,2]"),
                                              ("[1,2]", "1 \\le x \\le 2")])
    assert forward.equal and not forward.timed_out
    assert not backward.equal  # the asymmetry the grader must respect


def test_pathological_input_returns_within_deadline_as_timeout() -> None:
    deadline = 3.0
    with MathGrader(workers=1, deadline_s=deadline, parse_timeout_s=1,
                    verify_timeout_s=1) as g:
        start = time.monotonic()
        result = g.grade(PATHOLOGICAL, "1")
        elapsed = time.monotonic() - start
        assert elapsed < deadline + 2.0
        assert result.timed_out and not result.correct
        assert g.pool_stats.timeouts == 1


def test_stuck_worker_is_killed_and_replaced() -> None:
    with VerifyPool(1, deadline_s=1.0) as pool:
        start = time.monotonic()
        [stuck] = pool._run([("sleep", "60", "")])  # a call no signal interrupts
        assert time.monotonic() - start < 1.0 + 2.0
        assert stuck.timed_out and not stuck.equal
        assert pool.stats.kills == 1
        [ok] = pool.verify_many([("x^2+1", "1+x^2")])  # a fresh worker answers
        assert ok.equal and pool.stats.spawns == 2


def test_grading_from_a_thread(grader: MathGrader) -> None:
    """math-verify's SIGALRM timeouts fail in threads; the worker processes make it work."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(grader.grade("(x+1)^2", "x^2+2x+1")))
    t.start()
    t.join(timeout=30)
    assert out and out[0].correct


def test_describe_records_policy(grader: MathGrader) -> None:
    d = grader.describe()
    assert d["name"] == "textpolicy-math-stack" and d["version"]
    assert d["math_verify"].startswith("0.9")
    assert d["policy"] == dict(POLICY)
    assert d["policy"]["math_verify"]["units"] is False
    json.dumps(d)


def test_pool_rejects_bad_settings() -> None:
    from textpolicy.errors import TaskError

    with pytest.raises(TaskError):
        VerifyPool(0)


@pytest.mark.parametrize(("n", "c", "k"), [(10, 3, 1), (10, 3, 5), (8, 0, 4), (16, 15, 4),
                                           (200, 17, 10)])
def test_pass_at_k_matches_binomial_form(n: int, c: int, k: int) -> None:
    exact = 1.0 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12, abs=1e-15)


def test_pass_at_k_edges() -> None:
    assert pass_at_k(4, 2, 1) == pytest.approx(0.5)
    assert pass_at_k(5, 3, 3) == 1.0  # n - c < k
    assert pass_at_k(4, 0, 4) == 0.0
    assert 0.0 < pass_at_k(100_000, 1, 50_000) <= 1.0
    with pytest.raises(ConfigError):
        pass_at_k(3, 1, 4)
    with pytest.raises(ConfigError):
        pass_at_k(3, 4, 1)
