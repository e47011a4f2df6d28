"""The arithmetic task and the exact_match reward."""

from __future__ import annotations

import pytest

from textpolicy.engines.local import TINY_MODEL
from textpolicy.engines.local.tiny import build_char_tokenizer
from textpolicy.errors import ConfigError
from textpolicy.plugins import get_registry
from textpolicy.tasks.arithmetic import ArithmeticParams, ArithmeticTask, exact_match
from textpolicy.tasks.base import Example


def test_registered_with_reward_and_default_model() -> None:
    reg = get_registry()
    record = reg.tasks.get("arithmetic")
    task = record.factory(record.params())
    assert task.name == "arithmetic" and task.default_model == TINY_MODEL
    reward = reg.rewards.get("exact_match")
    ex = task.eval_examples()[0]
    assert reward.fn(ex.answer, ex, reward.params()).reward == 1.0
    assert reward.fn(ex.answer + "0", ex, reward.params()).reward == 0.0


def test_split_is_fixed_disjoint_and_complete() -> None:
    task = ArithmeticTask()
    train = task.train_examples(seed=0)
    held = task.eval_examples()
    validation = task.eval_examples(split="validation")
    assert len(train) == 50 and len(validation) == 20 and len(held) == 30
    train_ids, val_ids = {e.id for e in train}, {e.id for e in validation}
    ids = train_ids | val_ids | {e.id for e in held}
    assert len(ids) == 100 and not (train_ids | val_ids) & {e.id for e in held}
    assert not train_ids & val_ids
    assert [e.id for e in ArithmeticTask().eval_examples()] == [e.id for e in held]
    assert [e.id for e in task.eval_examples(limit=5)] == [e.id for e in held[:5]]
    for ex in held:
        a, b = ex.id.removeprefix("arith/").split("+")
        assert ex.prompt == f"{a}+{b}=" and ex.answer == str(int(a) + int(b))
    # a pinned member keeps the split stable across releases (fingerprint covers the rest)
    assert "arith/3+4" in {e.id for e in held}


def test_training_order_is_seeded() -> None:
    task = ArithmeticTask()
    first = [e.id for e in task.train_examples(seed=0)]
    assert first == [e.id for e in ArithmeticTask().train_examples(seed=0)]
    assert first != [e.id for e in task.train_examples(seed=1)]
    assert sorted(first) == sorted(e.id for e in task.train_examples(seed=1))


def test_fingerprint_and_describe_are_stable() -> None:
    a, b = ArithmeticTask(), ArithmeticTask()
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint()["num_eval"] == 30
    desc = a.describe()
    assert desc["grader"]["name"] == "exact_match" and desc["params"]["max_tokens"] == 4


def test_render_prompt_char_tokenizer_and_chat_template() -> None:
    tok = build_char_tokenizer()
    task = ArithmeticTask()
    ex = Example(id="arith/3+4", prompt="3+4=", answer="7")
    assert task.render_prompt(ex, tok) == [1, 6, 13, 7, 15]
    tok.chat_template = ("{% for m in messages %}<bos>{{ m['content'] }}{% endfor %}"
                         "{% if add_generation_prompt %} a:{% endif %}")
    ids = task.render_prompt(ex, tok)
    assert tok.decode(ids) == "<bos>3+4= a:"


@pytest.mark.parametrize(("completion", "correct"), [
    ("7", True), (" 7 ", False), ("7   ", False), ("7<eos>", True), ("07", False),
    ("7<eos>7", False), ("77", False), ("", False), ("<eos>", False), ("7<eos><eos>", False)])
def test_exact_match(completion: str, correct: bool) -> None:
    grade = exact_match(completion, "7")
    assert grade.correct is correct and grade.reward == (1.0 if correct else 0.0)


def test_grade_many_and_bad_params() -> None:
    task = ArithmeticTask()
    ex = task.eval_examples()[0]
    grades = task.grade_many([(ex, ex.answer), (ex, "x")])
    assert [g.correct for g in grades] == [True, False]
    with pytest.raises(ConfigError, match="max_tokens"):
        ArithmeticTask(ArithmeticParams(max_tokens=0))
