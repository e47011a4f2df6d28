"""Every reference case of algorithms.md §4, parametrised (tolerance 1e-4)."""

from __future__ import annotations

import numpy as np
import pytest
from textpolicy_builtins.advantages import (
    grpo_advantages,
    gtpo_reweight,
    hicra_amplify,
    maxrl_advantages,
    sepa_pool,
)
from textpolicy_builtins.planning import strategic_grams_mask
from textpolicy_builtins.schedulers import (
    AutoParams,
    AutoScheduler,
    LinearParams,
    LinearScheduler,
    linear_lambda,
)

import textpolicy as tp
from textpolicy.errors import RolloutError
from textpolicy.pipeline import StepObservation
from textpolicy.rollouts import Rollouts
from textpolicy.vocab import TokenVocab

TOL = 1e-4


def close(a: object, b: object) -> None:
    np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float),
                               atol=TOL, rtol=TOL)


# ---- GRPO -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("rewards", "expected"), [
    ([1, 0, 0, 0], [0.75, -0.25, -0.25, -0.25]),
    ([0.9, 0.3, 0.7, 0.1], [0.4, -0.2, 0.2, -0.4]),
    ([], []),
])
def test_grpo(rewards: list[float], expected: list[float]) -> None:
    close(grpo_advantages(np.array(rewards, dtype=float), np.zeros(len(rewards))), expected)


def test_grpo_std_scale() -> None:
    r = np.array([1.0, 0, 0, 0])
    std = np.std(r, ddof=1)
    close(grpo_advantages(r, np.zeros(4), scale="std"), (r - r.mean()) / (std + 1e-6))
    close(grpo_advantages(np.array([1.0]), np.zeros(1), scale="std"), [0.0])


# ---- MaxRL ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("rewards", "expected"), [
    ([1, 0, 0, 0], [3, -1, -1, -1]),
    ([1, 1, 1, 0], [1 / 3, 1 / 3, 1 / 3, -1]),
    ([1] + [0] * 15, [15] + [-1] * 15),
    ([0, 0, 0, 0], [0, 0, 0, 0]),
    ([1, 1, 1], [0, 0, 0]),
    ([1], [0]),
    ([0.9, 0.3, 0.7, 0.1], [0.8, -0.4, 0.4, -0.8]),
    ([], []),
])
def test_maxrl(rewards: list[float], expected: list[float]) -> None:
    close(maxrl_advantages(np.array(rewards, dtype=float), np.zeros(len(rewards))), expected)


@pytest.mark.parametrize(("n", "k", "correct_adv"), [
    (4, 2, 1.0), (8, 1, 7.0), (16, 8, 1.0), (16, 15, 1 / 15),
])
def test_maxrl_binary(n: int, k: int, correct_adv: float) -> None:
    r = np.array([1.0] * k + [0.0] * (n - k))
    adv = maxrl_advantages(r, np.zeros(n))
    close(adv[:k], [correct_adv] * k)
    close(adv[k:], [-1.0] * (n - k))


def test_maxrl_two_groups_never_mixed() -> None:
    r = np.array([1.0, 0, 0, 0, 1, 1, 1, 0])
    g = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    close(maxrl_advantages(r, g), [3, -1, -1, -1, 1 / 3, 1 / 3, 1 / 3, -1])
    # interleaved, non-contiguous group ids give the same answer per completion
    perm = np.array([4, 0, 5, 1, 6, 2, 7, 3])
    close(maxrl_advantages(r[perm], g[perm] * 7 + 3),
          np.array([3, -1, -1, -1, 1 / 3, 1 / 3, 1 / 3, -1])[perm])


def test_maxrl_rejects_negative_rewards() -> None:
    with pytest.raises(RolloutError, match="maxrl needs rewards >= 0"):
        maxrl_advantages(np.array([1.0, -0.5]), np.zeros(2))


# ---- GTPO -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("a", "h", "beta", "expected"), [
    (1.0, [1, 1, 3], 0.5, [0.8, 0.8, 1.4]),
    (1.0, [0.1, 10, 10], 5, [0.0, 3.462687, 3.462687]),
    (0.75, [1, 2, 3, 0.5, 4], 0.15, [0.691071, 0.744643, 0.798214, 0.664286, 0.851786]),
    (-1.0, [1, 2, 3], 0.1, [-0.95, -1.0, -1.05]),
    (0.5, [2, 2, 2], 0.3, [0.5, 0.5, 0.5]),
    (0.5, [1, 2, 3], 0.0, [0.5, 0.5, 0.5]),
    (0.5, [0, 0, 0], 0.3, [0.5, 0.5, 0.5]),
    (0.5, [], 0.3, []),
])
def test_gtpo(a: float, h: list[float], beta: float, expected: list[float]) -> None:
    t = len(h)
    out = gtpo_reweight(np.full((1, t), a), np.array([h], dtype=float).reshape(1, t),
                        np.ones((1, t), dtype=bool), beta=beta)
    close(out.reshape(-1), expected)


# ---- HICRA ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("adv", "mask", "alpha", "expected"), [
    ([1.0], [1], 0.2, [1.2]),
    ([-1.0], [1], 0.2, [-0.8]),
    ([0.5, -0.3, 0.2, -0.1, 0.0], [1, 0, 1, 1, 1], 0.2, [0.6, -0.3, 0.24, -0.08, 0.0]),
    ([0.5, -0.3, 0.2, -0.1, 0.4], [1, 0, 1, 0, 1], 0.25, [0.625, -0.3, 0.25, -0.1, 0.5]),
])
def test_hicra(adv: list[float], mask: list[int], alpha: float, expected: list[float]) -> None:
    close(hicra_amplify(np.array([adv]), np.array([mask], dtype=bool), alpha=alpha)[0],
          expected)


def test_hicra_length_mismatch() -> None:
    with pytest.raises(RolloutError, match="different shapes"):
        hicra_amplify(np.ones((1, 3)), np.ones((1, 2), dtype=bool), alpha=0.2)


# ---- SEPA -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("h", "mask", "lam", "expected"), [
    ([1, 5, 3, 7], [0, 1, 0, 0], 1, [11 / 3, 5, 11 / 3, 11 / 3]),
    ([1, 5, 3], [0, 1, 0], 0.5, [1.5, 5, 2.5]),
    ([1, 5, 3, 7, 2], [0, 1, 0, 0, 1], 0.6, [2.6, 5, 3.4, 5, 2]),
    ([1, 5, 3], [1, 1, 1], 1, [1, 5, 3]),
    ([1, 5, 3], [0, 1, 0], 0, [1, 5, 3]),
])
def test_sepa_pool(h: list[float], mask: list[int], lam: float, expected: list[float]) -> None:
    t = len(h)
    out = sepa_pool(np.array([h], dtype=float), np.ones((1, t), dtype=bool),
                    np.array([mask], dtype=bool), lam=lam)
    close(out[0], expected)


H_WORKED = [.2, .3, 1.8, .1, .9, .2, 2.1, .3, .1, .2]
PLAN_WORKED = [0, 0, 1, 0, 0, 0, 1, 0, 0, 0]  # positions 3 and 7 (1-based)


def test_sepa_gtpo_worked_example() -> None:
    h = np.array([H_WORKED])
    plan = np.array([PLAN_WORKED], dtype=bool)
    ones = np.ones_like(plan)
    pooled = sepa_pool(h, ones, plan, lam=1.0)[0]
    close(pooled[~plan[0]], [0.2875] * 8)
    close(pooled[plan[0]], [1.8, 2.1])
    plain = gtpo_reweight(np.ones((1, 10)), h, ones, beta=0.1)[0]
    close(plain, [.9323, .9484, 1.1903, .9161, 1.0452, .9323, 1.2387, .9484, .9161, .9323])
    with_sepa = gtpo_reweight(np.ones((1, 10)), pooled[None], ones, beta=0.1)[0]
    close(with_sepa[~plan[0]], [0.9464] * 8)
    close(with_sepa[plan[0]], [1.1903, 1.2387])


# ---- Schedulers -------------------------------------------------------------------------------

@pytest.mark.parametrize(("ramp", "delay", "steps", "expected"), [
    (100, 0, [0, 50, 100, 200], [0, 0.5, 1, 1]),
    (100, 50, [0, 50, 100, 150], [0, 0, 0.5, 1]),
    (10, 3, [8], [0.5]),
    (0, 0, [0, 10], [0, 0]),
])
def test_linear_lambda(ramp: int, delay: int, steps: list[int], expected: list[float]) -> None:
    close([linear_lambda(s, ramp, delay) for s in steps], expected)


def _obs(step: int, rate: float, var: float = float("nan")) -> StepObservation:
    return StepObservation(step=step, correct_rate=rate, exec_signal_variance=var)


def test_linear_with_gate_after_opening() -> None:
    s = LinearScheduler(LinearParams(ramp_steps=100, delay_steps=10, correct_rate_gate=0.1))
    s.observe(_obs(0, 0.2))
    close([s.value(15), s.value(20), s.value(110)], [0.05, 0.10, 1.0])


def test_gate_stays_closed_then_open_for_good() -> None:
    s = LinearScheduler(LinearParams(ramp_steps=1, delay_steps=0, correct_rate_gate=0.5))
    for step, rate in enumerate([0.0, 0.2, 0.49]):
        s.observe(_obs(step, rate))
        assert s.value(step + 5) == 0.0
    s.observe(_obs(3, 0.5))
    assert s.value(10) == 1.0
    s.observe(_obs(4, 0.0))
    assert s.gate_open and s.value(10) == 1.0


@pytest.mark.parametrize(("variances", "expected"), [
    ([4.0, 0.0], [0.0, 1.0]),
    ([1.0, 0.25], [0.0, 0.5]),
])
def test_auto_scheduler(variances: list[float], expected: list[float]) -> None:
    s = AutoScheduler(AutoParams(ramp_steps=0, delay_steps=0, correct_rate_gate=0.0,
                                 auto_decay=0.0, auto_warmup=1, auto_threshold=0.5))
    got = []
    for step, var in enumerate(variances):
        s.observe(_obs(step, 1.0, var))
        got.append(s.value(step))
    close(got, expected)


# ---- Planning mask ----------------------------------------------------------------------------

def _mask(pieces: list[str], grams: list[str], *, words: bool) -> list[int]:
    vocab = TokenVocab.from_words(pieces) if words else TokenVocab.from_pieces(pieces)
    ids = np.arange(len(pieces))[None, :]
    return strategic_grams_mask(ids, np.array([len(pieces)]), vocab, grams)[0].astype(
        int).tolist()


@pytest.mark.parametrize(("pieces", "grams", "words", "expected"), [
    (["let", "me", "think", "about", "this"], ["let me think"], True, [1, 1, 1, 0, 0]),
    (["Let", "Me", "Think"], ["let me think"], True, [1, 1, 1]),
    (["monkey", "insight", "here"], ["key insight"], True, [0, 0, 0]),
    (["so", "then", "let", "me", "think", "about", "it"], ["let me think"], True,
     [0, 0, 1, 1, 1, 0, 0]),
    (["Ġan", "other", "Ġway", "Ġto"], ["another way to"], False, [1, 1, 1, 1]),
    (["Ġthat", "'s", "Ġnot", "Ġright"], ["that's not right"], False, [1, 1, 1, 1]),
    (["Wait", ",", "Ġlet", "Ġme"], ["wait let me"], False, [1, 1, 1, 1]),
])
def test_planning_mask_reference(pieces: list[str], grams: list[str], words: bool,
                                 expected: list[int]) -> None:
    assert _mask(pieces, grams, words=words) == expected


# ---- Full pipeline, word-per-token vocabulary -------------------------------------------------

WORDS = {1: "let", 2: "me", 3: "think", 4: "a", 5: "b", 6: "c"}
LOGPROBS = [-.1, -2, -.5, -.2, -1.5, -.4]
ROLL = Rollouts.from_lists(group_ids=[0] * 4, rewards=[1, 0, 0, 0],
                           tokens=[[1, 2, 3, 4, 5, 6]] * 4, logprobs=[LOGPROBS] * 4)
VOCAB = TokenVocab.from_words(["<pad>", *WORDS.values()])
SEPA_LAMBDA_1 = {"ramp_steps": 1, "delay_steps": 0, "correct_rate_gate": 0.0}
INCORRECT_GTPO = [-.563828, -1.776589, -.819146, -.627657, -1.457441, -.755316]


@pytest.mark.parametrize(("name", "extra", "correct", "incorrect"), [
    ("maxrl+gtpo", {}, [1.691483, 5.329766, 2.457437, 1.882971, 4.372323, 2.265948],
     INCORRECT_GTPO),
    ("maxrl+gtpo_sepa", {"sepa": SEPA_LAMBDA_1},
     [1.691483, 5.329766, 2.457437, 2.840414, 2.840414, 2.840414], None),
    ("maxrl+gtpo_hicra", {}, [2.029779, 6.395719, 2.948924, 1.882971, 4.372323, 2.265948],
     None),
    ("maxrl>gtpo", {}, [1.691483, 5.329766, 2.457437, 1.882971, 4.372323, 2.265948],
     INCORRECT_GTPO),
])
def test_full_pipeline_reference(name: str, extra: dict[str, dict[str, float]],
                                 correct: list[float], incorrect: list[float] | None) -> None:
    p = tp.load_pipeline(name, gtpo={"beta": 0.5}, planning={"grams": ["let me think"]},
                         **extra)
    res = p(ROLL, step=1, vocab=VOCAB)
    close(res.token_advantages[0], correct)
    if incorrect is not None:
        for i in (1, 2, 3):
            close(res.token_advantages[i], incorrect)
    close(res.episode_advantages, [3, -1, -1, -1])
    assert res.planning_mask is not None
    assert res.planning_mask[0].tolist() == [True, True, True, False, False, False]


def test_full_four_stage_pipeline_with_lambda_one() -> None:
    """sepa (λ=1) > gtpo > hicra: pooled execution weights, then planning tokens × (1 ± α)."""
    p = tp.load_pipeline("full", gtpo={"beta": 0.5}, hicra={"alpha": 0.2},
                         sepa=SEPA_LAMBDA_1, planning={"grams": ["let me think"]})
    res = p(ROLL, step=1, vocab=VOCAB)
    close(res.token_advantages[0],
          [1.691483 * 1.2, 5.329766 * 1.2, 2.457437 * 1.2, 2.840414, 2.840414, 2.840414])
    assert res.diagnostics["sepa_lambda"] == 1.0
    assert res.diagnostics["sepa_gate_open"] == 1.0
    close(res.diagnostics["planning_token_share"], 0.5)
