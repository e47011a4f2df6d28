"""Grader accuracy on the real MATH data in ../shared/data/math (skipped when absent).

Equivalence variants are regenerated from the MATH test golds with a fixed seed (a fixed
sample of problems keeps this under ~2 minutes on 2 cores); the 800 real Qwen2.5-Math
responses must give exactly the 737 adjudicated-correct ones: the 728 its own grader scored
correct, plus 8 "4:30 p.m." answers its grader missed (its ``gt`` field was mangled to
``4:30p..``) and 1 "10000" against "10{,}000".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from textpolicy.grading import GradeRequest, MathGrader, extract_boxed
from textpolicy.grading.variants import generate_variants

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "math"
pytestmark = pytest.mark.skipif(not (DATA / "math_test.jsonl").is_file(),
                                reason="../shared/data/math is not present")
SAMPLE_PROBLEMS = 1500
LIST_HINT = re.compile(r"\bcommas\b|comma-separated", re.I)


@pytest.fixture(scope="module")
def grader() -> Iterator[MathGrader]:
    g = MathGrader(workers=2)
    yield g
    g.close()


def _jsonl(name: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line]


def test_equivalence_variants(grader: MathGrader) -> None:
    rows = _jsonl("math_test.jsonl")
    pick = np.sort(np.random.default_rng(2024).choice(len(rows), SAMPLE_PROBLEMS, replace=False))
    golds, flags = [], []
    for i in pick:
        gold = extract_boxed(str(rows[i]["solution"]))
        if gold:
            golds.append(gold)
            flags.append(bool(LIST_HINT.search(str(rows[i]["problem"]))))
    variants = generate_variants(golds, seed=0, list_flags=flags)
    results = grader.grade_many([GradeRequest(v.given, v.gold, v.gold_is_list)
                                 for v in variants])
    eq = [(v, r) for v, r in zip(variants, results, strict=True) if v.equivalent]
    ne = [(v, r) for v, r in zip(variants, results, strict=True) if not v.equivalent]
    assert len(eq) > 2500 and len(ne) > 5000
    assert len({v.kind for v, _ in eq}) >= 12 and len({v.kind for v, _ in ne}) >= 9
    wrong_rejects = [(v.gold, v.given, v.kind) for v, r in eq if not r.correct]
    wrong_accepts = [(v.gold, v.given, v.kind) for v, r in ne if r.correct]
    accepted = 1 - len(wrong_rejects) / len(eq)
    rejected = 1 - len(wrong_accepts) / len(ne)
    assert accepted >= 0.9995, wrong_rejects
    assert rejected >= 0.9998, wrong_accepts


def test_real_responses_737_of_800(grader: MathGrader) -> None:
    rows = _jsonl("qwen25math_cot_100.jsonl")
    requests, qwen_scores = [], []
    for row in rows:
        is_list = bool(LIST_HINT.search(str(row["question"])))
        for response, score in zip(row["code"], row["score"], strict=True):  # type: ignore[call-overload]
            requests.append(GradeRequest(extract_boxed(response) or "", str(row["answer"]),
                                         is_list))
            qwen_scores.append(bool(score))
    assert len(requests) == 800
    results = grader.grade_many(requests)
    correct = [r.correct for r in results]
    assert not any(r.timed_out for r in results)
    assert sum(correct) == 737
    # every disagreement with Qwen's own grader is one of the adjudicated cases
    flipped = [(requests[i].given, requests[i].gold) for i in range(800)
               if correct[i] != qwen_scores[i]]
    assert len(flipped) == 9
    assert all(c or not q for c, q in zip(correct, qwen_scores, strict=True))
    assert sum("4:30" in given for given, _ in flipped) == 8


def test_policy_cases_follow_the_stated_policy(grader: MathGrader) -> None:
    from textpolicy.grading.variants import policy_variants

    golds = [g for g in (extract_boxed(str(r["solution"])) for r in _jsonl("math_test.jsonl"))
             if g]
    cases = [(kind, given, gold, verdict) for gold in golds
             for kind, given, verdict in policy_variants(gold)]
    assert len(cases) > 5000
    results = grader.grade_many([GradeRequest(given, gold) for _k, given, gold, _v in cases])
    off = [(kind, gold, given) for (kind, given, gold, verdict), r
           in zip(cases, results, strict=True) if r.correct != verdict]
    assert off == []
