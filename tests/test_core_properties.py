"""Property tests (hypothesis) for the invariants of algorithms.md §4."""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
import numpy as np
from hypothesis import given, settings
from textpolicy_builtins.advantages import gtpo_reweight, hicra_amplify, sepa_pool

import textpolicy as tp
from textpolicy.rollouts import Rollouts
from textpolicy.testing import word_vocab

SETTINGS = settings(max_examples=60, deadline=None)
NO_GATE = {"ramp_steps": 4, "delay_steps": 0, "correct_rate_gate": 0.0}


@st.composite
def batches(draw: Any, *, min_len: int = 0) -> Rollouts:
    sizes = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    n = sum(sizes)
    group_ids = np.repeat(np.arange(len(sizes)), sizes)
    rewards = draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=n, max_size=n))
    lengths = draw(st.lists(st.integers(min_len, 9), min_size=n, max_size=n))
    lp = st.floats(-8.0, 0.0, allow_nan=False)
    logprobs = [draw(st.lists(lp, min_size=L, max_size=L)) for L in lengths]
    plan = [draw(st.lists(st.booleans(), min_size=L, max_size=L)) for L in lengths]
    tokens = [[1 + (t % 5) for t in range(L)] for L in lengths]
    return Rollouts.from_lists(group_ids=group_ids.tolist(), rewards=rewards, tokens=tokens,
                               logprobs=logprobs, planning_mask=plan)


PIPELINES = ["grpo", "maxrl", "full", "grpo+gtpo_sepa_hicra", "maxrl+gtpo_hicra",
             "grpo+gtpo"]


@SETTINGS
@given(batches(), st.sampled_from(PIPELINES), st.integers(0, 10),
       st.floats(0.0, 2.0), st.floats(0.0, 1.0))
def test_sign_follows_correctness(r: Rollouts, name: str, step: int, beta: float,
                                  alpha: float) -> None:
    params: dict[str, Any] = {}
    stages = tp.load_pipeline(name).stage_names
    if "gtpo" in stages:
        params["gtpo"] = {"beta": beta}
    if "hicra" in stages:
        params["hicra"] = {"alpha": alpha}
    if "sepa" in stages:
        params["sepa"] = NO_GATE
    res = tp.load_pipeline(name, **params)(r, step=step)
    adv = res.token_advantages
    assert np.all(adv[r.correct] >= -1e-12)
    assert np.all(adv[~r.correct] <= 1e-12)
    assert np.all(adv[~r.mask] == 0)
    assert np.all(np.isfinite(adv))


@SETTINGS
@given(batches(min_len=1), st.floats(0.0, 3.0))
def test_gtpo_weights_average_one_without_clamp(r: Rollouts, beta: float) -> None:
    h = np.where(r.mask, -r.logprobs, 0.0)
    w = gtpo_reweight(np.ones_like(h), h, r.mask, beta=beta)
    mean_h = h.sum(1) / r.lengths
    raw = 1 + beta * (h / np.where(mean_h > 0, mean_h, 1)[:, None] - 1)
    no_clamp = np.all(np.where(r.mask, raw, 1.0) >= 0, axis=1) & (mean_h >= 1e-7)
    means = w.sum(1) / r.lengths
    np.testing.assert_allclose(means[no_clamp], 1.0, atol=1e-9)
    assert np.all(w >= 0)


@SETTINGS
@given(batches(min_len=1), st.floats(0.0, 1.0))
def test_sepa_preserves_execution_mean(r: Rollouts, lam: float) -> None:
    h = np.where(r.mask, -r.logprobs, 0.0)
    plan = r.planning_mask
    assert plan is not None
    pooled = sepa_pool(h, r.mask, plan, lam=lam)
    ex = r.mask & ~plan
    cnt = ex.sum(1)
    has = cnt > 0
    before = (h * ex).sum(1)[has] / cnt[has]
    after = (pooled * ex).sum(1)[has] / cnt[has]
    np.testing.assert_allclose(after, before, atol=1e-9)
    np.testing.assert_array_equal(pooled[plan & r.mask], h[plan & r.mask])


@SETTINGS
@given(st.lists(st.floats(-10, 10), min_size=1, max_size=20), st.floats(0.0, 1.0),
       st.data())
def test_hicra_never_flips_sign(adv: list[float], alpha: float, data: Any) -> None:
    a = np.array([adv])
    mask = np.array([data.draw(st.lists(st.booleans(), min_size=len(adv),
                                        max_size=len(adv)))])
    out = hicra_amplify(a, mask, alpha=alpha)
    assert np.all(out * a >= 0)  # never the opposite sign (α = 1 zeroes negatives)
    assert np.all(np.sign(out[alpha < 1]) == np.sign(a[alpha < 1]))
    assert np.all(out >= a - 1e-12)  # planning tokens only ever gain credit
    np.testing.assert_array_equal(out[~mask], a[~mask])


@SETTINGS
@given(batches(), st.sampled_from(PIPELINES), st.randoms(use_true_random=False))
def test_no_stage_mixes_groups(r: Rollouts, name: str, rnd: Any) -> None:
    """Each group's token advantages are the same alone as inside the batch, and permuting
    the completions permutes the result."""
    params = {"sepa": NO_GATE} if "sepa" in tp.load_pipeline(name).stage_names else {}
    full = tp.load_pipeline(name, **params)(r, step=3).token_advantages
    plan = r.planning_mask
    assert plan is not None
    for g in np.unique(r.group_ids):
        idx = np.flatnonzero(r.group_ids == g)
        sub = Rollouts(group_ids=r.group_ids[idx], rewards=r.rewards[idx],
                       correct=r.correct[idx], tokens=r.tokens[idx], logprobs=r.logprobs[idx],
                       lengths=r.lengths[idx], planning_mask=plan[idx])
        alone = tp.load_pipeline(name, **params)(sub, step=3).token_advantages
        np.testing.assert_allclose(alone, full[idx], atol=1e-12)
    perm = np.array(rnd.sample(range(r.num_completions), r.num_completions))
    shuffled = Rollouts(group_ids=r.group_ids[perm], rewards=r.rewards[perm],
                        correct=r.correct[perm], tokens=r.tokens[perm],
                        logprobs=r.logprobs[perm], lengths=r.lengths[perm],
                        planning_mask=plan[perm])
    out = tp.load_pipeline(name, **params)(shuffled, step=3).token_advantages
    np.testing.assert_allclose(out, full[perm], atol=1e-12)


@SETTINGS
@given(st.lists(st.sampled_from(["let", "me", "think", "wait", "so", "the", "key", "is", ",",
                                 "check", "double", "notice", "that"]),
                min_size=0, max_size=30))
def test_planning_mask_matches_reference_scan(words: list[str]) -> None:
    """The vectorised detector agrees with a plain word-level scan on word-per-token text."""
    from textpolicy_builtins.planning import DEFAULT_GRAMS, strategic_grams_mask

    vocab = word_vocab(["let", "me", "think", "wait", "so", "the", "key", "is", ",", "check",
                        "double", "notice", "that"])
    ids = [vocab.pieces.index(" " + w) for w in words]
    got = strategic_grams_mask(np.array([ids], dtype=np.int64).reshape(1, len(ids)),
                               np.array([len(ids)]), vocab)[0]
    expected = np.zeros(len(words), dtype=bool)
    tokens = [w for w in words]
    content = [i for i, w in enumerate(tokens) if w != ","]  # punctuation separates words
    seq = [tokens[i] for i in content]
    for gram in DEFAULT_GRAMS:
        gw = gram.split()
        for s in range(len(seq) - len(gw) + 1):
            if seq[s: s + len(gw)] == gw:
                expected[content[s]: content[s + len(gw) - 1] + 1] = True
    np.testing.assert_array_equal(got, expected)
