"""The ``math`` task on small local files (no ../shared data, no network)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

from textpolicy.errors import ConfigError, TaskError
from textpolicy.grading import MathGrader
from textpolicy.plugins import get_registry, structure_params
from textpolicy.tasks.base import Example
from textpolicy.tasks.math import SEED_SUBJECTS, MathParams, MathTask

SUBJECTS = ("algebra", "geometry", "number_theory", "precalculus", "intermediate_algebra",
            "counting_and_probability", "prealgebra")


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def grader() -> Iterator[MathGrader]:
    g = MathGrader(workers=1)
    yield g
    g.close()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    train = []
    for i in range(42):
        subject = SUBJECTS[i % len(SUBJECTS)]
        train.append({"problem": f"Problem {i}: compute {i} + 1.", "level": "Level 1",
                      "type": subject.replace("_", " ").title(),
                      "solution": f"It is $\\boxed{{{i + 1}}}$.",
                      "subject": subject, "unique_id": f"train/{subject}/{i}.json"})
    # two rows without an extractable gold answer
    train.append({"problem": "Broken A", "solution": "no box", "subject": "geometry",
                  "unique_id": "train/geometry/900.json"})
    train.append({"problem": "Broken B", "solution": "$\\boxed{}$", "subject": "geometry",
                  "unique_id": "train/geometry/901.json"})
    # a MATH-500 problem by id, and one by problem text (different id, extra spaces)
    train.append({"problem": "Held out one.", "solution": "$\\boxed{1}$", "subject": "geometry",
                  "unique_id": "test/geometry/1.json"})
    train.append({"problem": "Held  out\ntwo.", "solution": "$\\boxed{2}$",
                  "subject": "geometry", "unique_id": "test/geometry/77.json"})
    evals = [
        {"problem": "Held out one.", "solution": "...", "answer": "1", "subject": "Geometry",
         "level": 2, "unique_id": "test/geometry/1.json"},
        {"problem": "Held out two.", "solution": "...", "answer": "2", "subject": "Geometry",
         "level": 2, "unique_id": "test/geometry/2.json"},
        {"problem": "Find all x. Enter all the solutions, separated by commas.",
         "solution": "$\\boxed{70,110}$", "subject": "Precalculus", "level": 3,
         "unique_id": "test/precalculus/3.json"},
    ]
    return {"train": _write_jsonl(tmp_path / "train.jsonl", train),
            "eval": _write_jsonl(tmp_path / "eval.jsonl", evals)}


def _task(files: dict[str, Path], grader: MathGrader, **kw: Any) -> MathTask:
    # these tests count the training pool: no validation split carved out of it unless asked
    # (tests/test_splits_and_planning.py covers the carving)
    kw.setdefault("validation_size", 0)
    params = MathParams(train_files=(str(files["train"]),), eval_files=(str(files["eval"]),),
                        **kw)
    return MathTask(params, grader=grader)


def test_seeded_order_is_the_same_in_every_arm(files: dict[str, Path],
                                               grader: MathGrader) -> None:
    arm_a, arm_b = _task(files, grader), _task(files, grader)
    a0 = [e.id for e in arm_a.train_examples(0)]
    assert a0 == [e.id for e in arm_b.train_examples(0)]
    a1 = [e.id for e in arm_a.train_examples(1)]
    assert a1 != a0 and sorted(a1) == sorted(a0)
    assert arm_a.eval_examples() == arm_b.eval_examples()
    assert [e.id for e in arm_a.eval_examples(2)] == ["test/geometry/1.json",
                                                      "test/geometry/2.json"]


def test_default_subjects_exclusion_and_rejected_golds(files: dict[str, Path],
                                                       grader: MathGrader) -> None:
    task = _task(files, grader)
    train = task.train_examples(0)
    assert {e.metadata["subject"] for e in train} == set(SEED_SUBJECTS)
    ids = {e.id for e in train}
    assert "test/geometry/1.json" not in ids and "test/geometry/77.json" not in ids
    assert task.excluded_eval_overlap == 2
    assert task.rejected_gold == {"train": 2, "eval": 0}
    assert len(train) == sum(1 for i in range(42) if SUBJECTS[i % 7] in SEED_SUBJECTS)
    kept = _task(files, grader, exclude_eval_from_train=False)
    assert len(kept.train_examples(0)) == len(train) + 2


def test_subject_selection(files: dict[str, Path], grader: MathGrader) -> None:
    everything = _task(files, grader, subjects="all").train_examples(0)
    assert len(everything) == 42
    algebra = _task(files, grader, subjects="algebra,prealgebra").train_examples(0)
    assert {e.metadata["subject"] for e in algebra} == {"algebra", "prealgebra"}
    with pytest.raises(ConfigError, match="subjects"):
        structure_params(MathParams, {"subjects": "algebra,calculus"}, where="task 'math'")
    with pytest.raises(ConfigError, match="trian_files"):
        structure_params(MathParams, {"trian_files": "x.jsonl"}, where="task 'math'")


def test_max_examples_is_a_seed_independent_subset(files: dict[str, Path],
                                                   grader: MathGrader) -> None:
    task = _task(files, grader, subjects="all", max_examples=10)
    a, b = task.train_examples(0), task.train_examples(5)
    assert len(a) == 10 and {e.id for e in a} == {e.id for e in b}


def test_fingerprint_hashes_the_files(files: dict[str, Path], grader: MathGrader) -> None:
    fp = _task(files, grader).fingerprint()
    expected = hashlib.sha256(files["train"].read_bytes()).hexdigest()
    assert fp["train_files"]["train.jsonl"]["sha256"] == expected
    assert "eval.jsonl" in fp["eval_files"]
    before = fp["content_sha256"]
    with files["train"].open("a") as fh:
        fh.write(json.dumps({"problem": "new", "solution": "$\\boxed{3}$",
                             "subject": "geometry", "unique_id": "train/geometry/999.json"})
                 + "\n")
    after = _task(files, grader).fingerprint()
    assert after["content_sha256"] != before
    assert after["train_files"]["train.jsonl"]["sha256"] != expected


def test_bad_paths_and_files_give_clear_errors(tmp_path: Path, files: dict[str, Path],
                                               grader: MathGrader) -> None:
    with pytest.raises(ConfigError, match=r"train_files: no such file .*missing\.jsonl"):
        MathTask(MathParams(train_files="missing.jsonl"), grader=grader)
    csv = tmp_path / "data.csv"
    csv.write_text("a,b\n")
    with pytest.raises(ConfigError, match="eval_files"):
        MathTask(MathParams(eval_files=str(csv)), grader=grader)
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    task = MathTask(MathParams(train_files=str(broken), eval_files=str(files["eval"])),
                    grader=grader)
    with pytest.raises(TaskError, match=r"broken\.jsonl"):
        task.train_examples(0)


def test_hub_id_fails_fast_offline(files: dict[str, Path], grader: MathGrader,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    task = MathTask(MathParams(eval_files=str(files["eval"]),
                               train_dataset="textpolicy-test/no-such-math-dataset"),
                    grader=grader)
    start = time.monotonic()
    with pytest.raises(TaskError, match=r"no-such-math-dataset.*offline"):
        task.train_examples(0)
    assert time.monotonic() - start < 10


def test_grading_reward_and_format(files: dict[str, Path], grader: MathGrader) -> None:
    task = _task(files, grader, format_weight=0.5)
    ex = task.eval_examples()[2]
    assert ex.metadata["list_answer"] is True
    grades = task.grade_many([
        (ex, "so \\boxed{110, 70}"),     # reordered list: correct
        (ex, "so \\boxed{70110}"),       # the list read as one number: wrong
        (ex, "the answer is 70, 110"),   # no box: format failure
    ])
    assert [g.correct for g in grades] == [True, False, False]
    assert [g.format_ok for g in grades] == [True, True, False]
    assert [g.reward for g in grades] == [1.0, 0.0, -0.5]
    assert not any(g.timed_out for g in grades)
    plain = _task(files, grader)
    assert plain.grade(ex, "no box").reward == 0.0


@attrs.define
class _CharTokenizer:
    """A stand-in for a Hugging Face tokenizer (an external interface): one id per char."""

    chat_template: str | None = None
    eos_token_id: int | None = 0

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(i) for i in ids)

    def apply_chat_template(self, messages: list[dict[str, str]], *,
                            add_generation_prompt: bool, tokenize: bool) -> str:
        assert add_generation_prompt and not tokenize
        return f"<user>{messages[0]['content']}</user><assistant>"


def test_render_prompt_uses_the_chat_template(files: dict[str, Path],
                                              grader: MathGrader) -> None:
    task = _task(files, grader)
    ex = task.eval_examples()[0]
    templated = _CharTokenizer(chat_template="{{ messages }}")
    text = templated.decode(task.render_prompt(ex, templated))
    assert text.startswith("<user>Held out one.") and text.endswith("<assistant>")
    assert "\\boxed{}" in text
    plain = _CharTokenizer()
    text = plain.decode(task.render_prompt(ex, plain))
    assert text.startswith("Held out one.") and "\\boxed{}" in text and "<user>" not in text


def test_registered_task_and_reward(files: dict[str, Path]) -> None:
    registry = get_registry()
    record = registry.tasks.get("math")
    params = structure_params(record.params, {"train_files": [str(files["train"])],
                                              "eval_files": str(files["eval"]),
                                              "grader_workers": 1}, where="task 'math'")
    task = record.factory(params)
    try:
        assert task.default_model == "Qwen/Qwen3-4B-Instruct-2507"
        d = task.describe()
        json.dumps(d)
        assert d["grader"]["name"] == "textpolicy-math-stack"
        assert d["grader"]["policy"]["math_verify"]["units"] is False
        assert d["params"]["subjects"] == list(SEED_SUBJECTS)
    finally:
        task.close()
    reward = registry.rewards.get("math_boxed")
    ex = Example(id="x", prompt="p", answer="\\frac{1}{2}")
    grade = reward.fn("thus \\boxed{0.5}", ex, reward.params(format_weight=1.0))
    assert grade.correct and grade.reward == 1.0
    assert reward.fn("0.5", ex, reward.params(format_weight=1.0)).reward == -1.0
