"""Group-sequential campaigns: boundaries, the whole procedure's type-I error, the spec table."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from textpolicy.analysis import group_sequential_boundaries
from textpolicy.analysis.methods import seed_prompt_p
from textpolicy.analysis.sequential import (
    crossing_probability,
    decide,
    simulate_procedure,
    stagewise_p,
    z_boundaries,
)
from textpolicy.analysis.synthetic import SyntheticDesign, simulate_campaigns
from textpolicy.errors import ConfigError

LOOKS = [4, 8, 12, 16]


def test_reference_values_four_equal_looks() -> None:
    # /work/shared/reference/sequential.md: Lan–DeMets, two-sided symmetric, spending at α = .05
    obf = z_boundaries(LOOKS, spending="obrien-fleming")
    assert obf[0] == pytest.approx(2 * 1.959964, abs=1e-4)  # α*(1/4) = 2 − 2Φ(2 z_.975)
    np.testing.assert_allclose(obf, [3.92, 2.77, 2.30, 2.04], atol=0.012)
    poc = z_boundaries(LOOKS, spending="pocock")
    np.testing.assert_allclose(poc, [2.37, 2.37, 2.36, 2.35], atol=0.006)
    p = group_sequential_boundaries(LOOKS)
    np.testing.assert_allclose(p, [8.9e-5, 0.0055, 0.0215, 0.0410], rtol=0.03)
    assert all(b > a for a, b in itertools.pairwise(p))


def test_recursion_reproduces_classic_published_constants() -> None:
    # Pocock (1977): 2.361 constant, O'Brien & Fleming (1979): 2.024·sqrt(K/k), K = 4, α = .05
    assert crossing_probability([1, 2, 3, 4], [2.361] * 4) == pytest.approx(0.05, abs=2e-4)
    obf = 2.024 * np.sqrt(4 / np.arange(1, 5))
    assert crossing_probability([1, 2, 3, 4], obf) == pytest.approx(0.05, abs=2e-4)


@pytest.mark.parametrize("looks", [[4, 8, 12, 16], [3, 5, 10], [2, 9]])
@pytest.mark.parametrize("spending", ["obrien-fleming", "pocock"])
def test_boundaries_spend_alpha_exactly_by_genz_integration(looks: list[int],
                                                            spending: str) -> None:
    # independent check: scipy's multivariate normal CDF (Genz) of the continuation box
    c = z_boundaries(looks, spending=spending)
    t = np.asarray(looks, float) / looks[-1]
    corr = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    mvn = stats.multivariate_normal(np.zeros(len(t)), corr, seed=0)
    assert 1 - mvn.cdf(c, lower_limit=-c) == pytest.approx(0.05, abs=3e-4)


def test_boundaries_by_simulation_of_normal_looks() -> None:
    rng = np.random.default_rng(7)
    n = 400_000
    t = np.asarray(LOOKS, float) / LOOKS[-1]
    incr = rng.normal(size=(n, 4)) * np.sqrt(np.diff(np.concatenate([[0], t])))
    z = np.abs(np.cumsum(incr, axis=1)) / np.sqrt(t)
    for spending in ("obrien-fleming", "pocock"):
        c = z_boundaries(LOOKS, spending=spending)
        assert (z >= c).any(axis=1).mean() == pytest.approx(0.05, abs=0.0015)


def test_single_look_is_the_fixed_test() -> None:
    assert group_sequential_boundaries([10]) == pytest.approx([0.05])
    assert group_sequential_boundaries([10], alpha=0.01, spending="pocock") == pytest.approx(
        [0.01])


@pytest.mark.parametrize("looks,key", [([4, 4, 8], "looks"), ([8, 4], "looks"), ([], "looks"),
                                       ([0, 4], "looks")])
def test_invalid_looks_name_the_key(looks: list[int], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}:"):
        group_sequential_boundaries(looks)


def test_unknown_spending_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^spending: .*'haybittle'.*obrien-fleming, pocock"):
        group_sequential_boundaries(LOOKS, spending="haybittle")


def test_stagewise_p_ordering() -> None:
    # stopping at look 1 exactly on the boundary gives the α spent there; at the last look with
    # no crossing before, the boundary value gives α; beyond it, p falls below α
    c = z_boundaries(LOOKS)
    assert stagewise_p(LOOKS, stop_look=0, z=c[0]) == pytest.approx(2 * stats.norm.sf(c[0]))
    assert stagewise_p(LOOKS, stop_look=3, z=c[3]) == pytest.approx(0.05, abs=1e-6)
    assert stagewise_p(LOOKS, stop_look=3, z=c[3] + 0.5) < 0.05 < stagewise_p(
        LOOKS, stop_look=3, z=1.0)
    # earlier stops are more extreme than any later outcome
    assert stagewise_p(LOOKS, stop_look=1, z=c[1] + 1) < stagewise_p(LOOKS, stop_look=2, z=9.0)


def test_decide_stops_at_first_crossing_and_futility_is_optional() -> None:
    thr = group_sequential_boundaries(LOOKS)
    res = decide(LOOKS, [0.2, thr[1] / 2, 1e-9])
    assert [lk.decision for lk in res] == ["continue", "reject"]
    res = decide(LOOKS, [0.9, 0.9], futility="non-binding")
    assert [lk.decision for lk in res] == ["futility"]
    res = decide(LOOKS, [0.9, 0.9, 0.9, 0.9])
    assert [lk.decision for lk in res] == ["continue"] * 3 + ["accept"]
    assert math.isnan(decide(LOOKS, [math.nan])[0].p_value)


@pytest.mark.parametrize("spending", ["obrien-fleming", "pocock"])
@pytest.mark.parametrize("futility", ["none", "non-binding"])
def test_whole_procedure_type_one_error_with_t_based_p(spending: str, futility: str) -> None:
    # the primary test's t-based p values (few seed pairs, Satterthwaite df) at 4, 8, 12, 16
    # pairs under H0, with seed and arm × prompt variance: ≤ 0.06 at 2,000 replicates
    design = SyntheticDesign(sigma_seed=0.3, sigma_arm_prompt=0.3, eval_prompts=40)
    base, cand = simulate_campaigns(effect=0.0, seeds=16, campaigns=2000, design=design,
                                    rng=np.random.default_rng(11))
    d = cand - base
    p = np.stack([seed_prompt_p(d[:, :n, :]) for n in LOOKS], axis=1)
    res = simulate_procedure(p, LOOKS, spending=spending, futility=futility)
    assert res["reject"].mean() <= 0.06
    naive = (np.nan_to_num(p, nan=1.0) < 0.05).any(axis=1).mean()
    assert naive > 0.08  # peeking at α every wave is what this prevents
    if futility == "non-binding":
        assert res["pairs"].mean() < 12  # stopping for futility saves seeds under H0
