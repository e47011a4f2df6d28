"""Calibration by simulation (fixed seeds): the primary test keeps its error rate under
run-level variance where pooled Fisher does not, and the crossed-bootstrap CI covers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit
from textpolicy_builtins import significance as sig

from textpolicy.analysis.power import LogitModel
from textpolicy.analysis.records import AnalysisInput


def _simulate(model: LogitModel, *, sims: int, pairs: int, prompts: int, k: int, seed: int,
              effect: bool) -> np.ndarray:
    """Per-(sim, pair, arm, prompt) held-out accuracies of a hierarchical A/B campaign.
    Fresh eval prompts per simulation (so the estimand is over the prompt population)."""
    rng = np.random.default_rng(seed)
    dl = model.delta_logit if effect else 0.0
    prompt = rng.normal(0, model.sigma_prompt, size=(sims, 1, 1, prompts))
    run = rng.normal(0, model.sigma_seed, size=(sims, pairs, 2, 1))
    inter = rng.normal(0, model.sigma_int, size=(sims, pairs, 2, prompts))
    arm = np.array([0.0, dl]).reshape(1, 1, 2, 1)
    p = expit(model.mu + arm + run + prompt + inter)
    return rng.binomial(k, p) / k


def _input(acc: np.ndarray, k: int, resamples: int) -> AnalysisInput:
    base, cand = acc[:, 0], acc[:, 1]
    n = base.size * k
    return AnalysisInput(
        baseline="b", candidate="c", endpoint="heldout", endpoint_kind="heldout",
        unit_kind="prompt", paired=True, seeds=tuple(range(len(base))),
        base_values=base.mean(axis=1), cand_values=cand.mean(axis=1), base_units=base,
        cand_units=cand,
        gen_counts=(int(np.rint(base.sum() * k)), n, int(np.rint(cand.sum() * k)), n),
        num_resamples=resamples, seed=0)


def test_primary_false_positive_rate_holds_where_pooled_fisher_fails() -> None:
    # A/A: run-level logit SD 0.3 (about 5 pp of accuracy), 6 seed pairs, 200 prompts x 4.
    model = LogitModel(p0=0.45, delta=0.0, sigma_seed=0.3, sigma_prompt=1.5, sigma_int=0.3)
    sims, k = 1000, 4
    acc = _simulate(model, sims=sims, pairs=6, prompts=200, k=k, seed=123, effect=False)
    primary = np.empty(sims)
    fisher_p = np.empty(sims)
    for i in range(sims):  # one full analysis per simulated campaign (not per resample)
        data = _input(acc[i], k, resamples=200)
        primary[i] = sig.paired_seeds(data, sig.PairedSeedsParams()).p_value
        kb, nb, kc, nc = data.gen_counts  # type: ignore[misc]
        fisher_p[i] = stats.fisher_exact([[kc, nc - kc], [kb, nb - kb]]).pvalue
    fpr = float(np.mean(primary < 0.05))
    fpr_fisher = float(np.mean(fisher_p < 0.05))
    print(f"false-positive rate at alpha=0.05: paired_seeds {fpr:.3f}, pooled Fisher "
          f"{fpr_fisher:.3f}")
    assert 0.03 <= fpr <= 0.07, fpr
    assert fpr_fisher > 0.25, fpr_fisher  # pooled generations: far above alpha


@pytest.mark.parametrize("sigma_seed", [0.1, 0.4])  # prompt-dominated / seed-dominated
def test_crossed_bootstrap_ci_covers_the_population_effect(sigma_seed: float) -> None:
    # true effect: +3 pp averaged over seeds and the prompt population (LogitModel solves it)
    model = LogitModel(p0=0.45, delta=0.03, sigma_seed=sigma_seed, sigma_prompt=1.5,
                       sigma_int=0.3)
    sims, k = 300, 4
    acc = _simulate(model, sims=sims, pairs=8, prompts=60, k=k, seed=7, effect=True)
    covered = 0
    for i in range(sims):
        res = sig.crossed_bootstrap(_input(acc[i], k, resamples=1000), sig.NoParams())
        assert res.ci_low is not None and res.ci_high is not None
        covered += res.ci_low <= 3.0 <= res.ci_high
    print(f"crossed-bootstrap 95% CI coverage: {covered / sims:.3f}")
    assert covered / sims >= 0.93, covered / sims
