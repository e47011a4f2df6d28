"""Validation of the statistical procedures against scipy/statsmodels and R reference values
(reference/statistics.md "Trusted reference values")."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from textpolicy_builtins import significance as sig

from textpolicy.analysis import methods
from textpolicy.analysis.design import pass_at_k
from textpolicy.analysis.records import AnalysisInput


def _input(base: list[float], cand: list[float], *, counts: tuple[int, int, int, int] | None
           = None, units: int = 5, alpha: float = 0.05, resamples: int = 2000,
           paired: bool = True) -> AnalysisInput:
    b = np.asarray(base, dtype=np.float64)
    c = np.asarray(cand, dtype=np.float64)
    return AnalysisInput(
        baseline="b", candidate="c", endpoint="heldout_pass@1@step10", endpoint_kind="heldout",
        unit_kind="prompt", paired=paired, seeds=tuple(range(len(b))) if paired else (),
        base_values=b, cand_values=c, base_units=np.repeat(b[:, None], units, axis=1),
        cand_units=np.repeat(c[:, None], units, axis=1), gen_counts=counts, alpha=alpha,
        num_resamples=resamples, seed=0)


def test_fisher_matches_r_teatasting_and_convictions() -> None:
    # R: fisher.test(TeaTasting): p = 0.4857, conditional odds ratio 6.408309, 95% CI from
    # 0.2117329 (the help page's one-sided run: p = 0.2429)
    tea = sig.fisher(_input([0.5], [0.5], counts=(1, 4, 3, 4)), sig.NoParams())
    assert tea.p_value == pytest.approx(0.4857, abs=1e-4)
    assert tea.extra["odds_ratio_conditional"] == pytest.approx(6.408309, rel=1e-5)
    assert tea.extra["odds_ratio_ci"][0] == pytest.approx(0.2117329, rel=1e-3)
    assert tea.level == "generation" and "pseudo-replicated" in tea.notes
    # R: fisher.test(Convictions) p = 0.0005367 (table [[2, 10], [15, 3]])
    conv = sig.fisher(_input([0.5], [0.5], counts=(15, 18, 2, 12)), sig.NoParams())
    assert conv.p_value == pytest.approx(0.0005367, rel=1e-3)
    assert conv.delta == pytest.approx(100 * (2 / 12 - 15 / 18))


def test_fisher_and_odds_ratio_match_scipys_r_generated_cases() -> None:
    r_cases = pytest.importorskip("scipy.stats.tests.data.fisher_exact_results_from_r")
    checked = 0
    for params, res in r_cases.data:
        if params.alternative != "two.sided" or params.confidence_level != 0.95:
            continue
        (a, b), (c, d) = params.table
        # our table is [[cand correct, cand wrong], [base correct, base wrong]]
        out = sig.fisher(_input([0.5], [0.5], counts=(c, c + d, a, a + b)), sig.NoParams())
        assert out.p_value == pytest.approx(res.pvalue, rel=1e-6, abs=1e-12)
        est, lo, hi, how = methods.odds_ratio_ci(np.array(params.table), alpha=0.05)
        ref_lo, ref_hi = res.conditional_odds_ratio_ci
        if 0.01 < res.conditional_odds_ratio < 100 and ref_lo > 0 and ref_hi < np.inf:
            tol = 1e-2 if how.startswith("conditional") else 2e-2  # Woolf on large cells
            assert est == pytest.approx(res.conditional_odds_ratio, rel=tol)
            assert lo == pytest.approx(ref_lo, rel=tol)
            assert hi == pytest.approx(ref_hi, rel=tol)
        checked += 1
    assert checked >= 10


def test_hypergeometric_permutation_is_fisher_on_teatasting() -> None:
    rng = np.random.default_rng(1)
    p, diffs = methods.hypergeometric_permutation(1, 4, 3, 4, num_resamples=200_000, rng=rng)
    assert p == pytest.approx(0.4857, abs=0.005)  # two-sided: equals Fisher's p here
    assert np.mean(diffs >= 0.5 - 1e-12) == pytest.approx(0.2429, abs=0.004)  # one-sided


def test_permutation_plugin_binary_uses_counts_and_says_so() -> None:
    res = sig.permutation(_input([0.5], [0.5], counts=(15, 18, 2, 12), resamples=20000),
                          sig.NoParams())
    assert res.p_value == pytest.approx(0.0005367, abs=0.0015)
    assert "adds nothing" in res.notes


def test_permutation_non_binary_levels_and_fallbacks() -> None:
    rng = np.random.default_rng(3)
    a = rng.choice([0.0, 0.1, 1.0], size=300)
    b = rng.choice([0.0, 0.1, 1.0], size=300, p=[0.3, 0.2, 0.5])
    p_levels, how = methods.permutation_mean_diff(a, b, num_resamples=20000,
                                                  rng=np.random.default_rng(0))
    assert "hypergeometric" in how
    ref = stats.permutation_test((b, a), lambda x, y: x.mean() - y.mean(), n_resamples=20000,
                                 vectorized=False, random_state=0).pvalue
    assert p_levels == pytest.approx(ref, abs=0.01)
    x, y = rng.normal(size=200), rng.normal(0.3, 1, size=200)
    p_perm, how = methods.permutation_mean_diff(x, y, num_resamples=5000,
                                                rng=np.random.default_rng(0))
    assert how == "random permutations"
    ref = stats.permutation_test((y, x), lambda u, v: u.mean() - v.mean(), n_resamples=5000,
                                 random_state=0).pvalue
    assert p_perm == pytest.approx(ref, abs=0.03)
    p_norm, how = methods.permutation_mean_diff(x, y, num_resamples=10**6,
                                                rng=np.random.default_rng(0))
    assert "normal approximation" in how and p_norm == pytest.approx(ref, abs=0.01)


def test_cohens_h_reference_value() -> None:
    assert methods.cohens_h(0.5, 0.4) == pytest.approx(0.201358, abs=1e-6)


@pytest.mark.parametrize("s", [4, 5, 6, 8])
def test_minimum_sign_flip_p_is_two_over_two_to_the_s(s: int) -> None:
    d = np.linspace(1.0, 2.0, s)  # all positive: only the all-+ and all-- vectors reach it
    p, exact = methods.sign_flip_p(d)
    assert exact and p == pytest.approx(2 / 2 ** s)


def test_sign_flip_matches_scipy_exact_permutation_test() -> None:
    rng = np.random.default_rng(7)
    for _ in range(5):
        d = rng.normal(0.5, 1.0, size=7)
        ours, exact = methods.sign_flip_p(d)
        ref = stats.permutation_test((d,), np.mean, permutation_type="samples",
                                     n_resamples=np.inf).pvalue
        assert exact and ours == pytest.approx(ref, rel=1e-9)


def test_sign_flip_monte_carlo_beyond_exact_limit() -> None:
    d = np.random.default_rng(2).normal(0.3, 1.0, size=20)
    p_mc, exact = methods.sign_flip_p(d, num_resamples=50000, rng=np.random.default_rng(0))
    ref = stats.permutation_test((d,), np.mean, permutation_type="samples",
                                 n_resamples=50000, random_state=1).pvalue
    assert not exact and p_mc == pytest.approx(ref, abs=0.01)


def test_paired_seeds_is_scipy_ttest_rel_with_sign_flip_beside() -> None:
    base = [0.40, 0.42, 0.38, 0.45, 0.41]
    cand = [0.43, 0.44, 0.41, 0.46, 0.45]
    res = sig.paired_seeds(_input(base, cand), sig.PairedSeedsParams())
    ref = stats.ttest_rel(cand, base)
    ci = ref.confidence_interval(0.95)
    assert res.p_value == pytest.approx(ref.pvalue)
    assert res.ci_low == pytest.approx(100 * ci.low) and res.ci_high == pytest.approx(
        100 * ci.high)
    assert res.delta == pytest.approx(100 * np.mean(np.subtract(cand, base)))
    assert res.extra["sign_flip_p"] == pytest.approx(2 / 32)
    assert res.unit == "pp" and res.level == "seed"


def test_paired_seeds_not_applicable_with_one_pair_or_unpaired() -> None:
    assert sig.paired_seeds(_input([0.4], [0.5]), sig.PairedSeedsParams()).p_value is None
    res = sig.paired_seeds(_input([0.4, 0.5], [0.5, 0.6], paired=False),
                           sig.PairedSeedsParams())
    assert res.p_value is None and "not applicable" in res.notes


def test_welch_matches_scipy() -> None:
    base, cand = [0.40, 0.42, 0.38, 0.45], [0.43, 0.47, 0.41, 0.50, 0.44]
    res = sig.welch_runs(_input(base, cand, paired=False), sig.NoParams())
    ref = stats.ttest_ind(cand, base, equal_var=False)
    assert res.p_value == pytest.approx(ref.pvalue)
    assert res.ci_low == pytest.approx(100 * ref.confidence_interval(0.95).low)


def test_holm_hand_derived() -> None:
    # sorted 0.01, 0.03, 0.04 -> 0.03, 0.06, max(0.06, 0.04) = 0.06
    assert methods.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = methods.holm([0.2, float("nan")])
    assert out[0] == pytest.approx(0.2) and math.isnan(out[1])


def test_pass_at_k_hand_values_and_brute_force() -> None:
    assert pass_at_k(np.array([2]), np.array([5]), 2)[0] == pytest.approx(0.7)
    assert pass_at_k(np.array([0, 4, 4]), np.array([4, 4, 5]), 2).tolist() == pytest.approx(
        [0.0, 1.0, 1.0])
    rng = np.random.default_rng(0)
    n = rng.integers(4, 30, size=50)
    c = rng.integers(0, n + 1)
    for k in (1, 2, 4):
        ours = pass_at_k(c, n, k)
        ref = [1 - math.comb(int(ni - ci), k) / math.comb(int(ni), k)
               for ni, ci in zip(n, c, strict=True)]
        assert ours == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert pass_at_k(c, n, 1) == pytest.approx(c / n)


def test_crossed_bootstrap_weights_and_degenerate_cases() -> None:
    rng = np.random.default_rng(0)
    counts = methods.multinomial_counts(rng, 7, 1000)
    assert counts.shape == (1000, 7) and (counts.sum(axis=1) == 7).all()
    const = np.full((4, 30), 2.5)
    reps = methods.crossed_bootstrap(const, num_resamples=500, rng=rng)
    assert np.allclose(reps, 2.5)
    # replicate = w' D v / (S M) for the same weights drawn by hand
    d = rng.normal(size=(3, 5))
    r1 = methods.crossed_bootstrap(d, num_resamples=4, rng=np.random.default_rng(5))
    g = np.random.default_rng(5)
    v = methods.multinomial_counts(g, 5, 4)
    w = methods.multinomial_counts(g, 3, 4)
    manual = [w[i] @ d @ v[i] / 15 for i in range(4)]
    assert r1 == pytest.approx(manual)


def test_probability_of_improvement() -> None:
    assert methods.probability_of_improvement(np.array([1, 2, 3.0]), np.array([2, 2, 1.0]),
                                              paired=True) == pytest.approx(0.5)
    assert methods.probability_of_improvement(np.array([1.0, 3.0]), np.array([2.0]),
                                              paired=False) == pytest.approx(0.5)


def test_binomial_bootstrap_ci_close_to_wald() -> None:
    reps = methods.binomial_bootstrap(400, 1000, 450, 1000, num_resamples=20000,
                                      rng=np.random.default_rng(0))
    se = math.sqrt(0.4 * 0.6 / 1000 + 0.45 * 0.55 / 1000)
    assert reps.std() == pytest.approx(se, rel=0.03)
    assert reps.mean() == pytest.approx(0.05, abs=0.002)


def test_holm_equals_statsmodels_multipletests() -> None:
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(4)
    for m in (1, 2, 3, 7):
        p = rng.uniform(0, 0.2, size=m)
        assert methods.holm(list(p)) == pytest.approx(multipletests(p, method="holm")[1])
