"""Do plans deliver the power they promise? "Seed pairs needed" planned from a small pilot.

For each pilot size (4, 6, 8 pairs) and each true requirement n* (the pairs the paired t needs
for 80 % power at δ = 2 pp when SD(D) is known), draw many pilots, plan the campaign from each
pilot's SD with three rules — the point estimate, the headline rule (``power.planned_seeds``:
the ``PLANNING_LEVEL`` upper confidence bound of the SD) and the 80 % upper bound — and compute
the power each planned campaign really has (noncentral t at the true SD). Reported: the mean
realised power, the share of plans with power >= 0.7, and the median planned pairs / n*.

Part 1 draws the pilot SD from its normal-theory distribution (σ·√(χ²_{n−1}/(n−1))). Part 2
draws whole pilots from the hierarchical logistic model (seed, prompt, interaction effects,
binomial eval samples with shared sampling seeds) and reads their SD(D) the way the analysis
does, so non-normal per-pair differences are covered too.

    python benchmarks/planning_power.py [--pilots 20000] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import special

from textpolicy.analysis import power as pw

DELTA_PP = 2.0
RULES = ("point estimate", "headline (planned_seeds)", "80% upper bound")


def _levels() -> dict[str, float | None]:
    return {RULES[0]: None, RULES[1]: pw.PLANNING_LEVEL, RULES[2]: 0.8}


def realised(sigma: float, planned: np.ndarray) -> np.ndarray:
    """True power of campaigns with ``planned`` pairs when SD(D) = sigma."""
    out = np.empty(len(planned))
    for n in np.unique(planned):
        out[planned == n] = pw.paired_t_power(DELTA_PP / sigma, int(n))
    return out


def plans(sds: np.ndarray, n_pilot: int, level: float | None) -> np.ndarray:
    if level is None:
        return pw.t_seeds_many(sds, DELTA_PP)
    factor = pw.sd_upper(1.0, n_pilot, level=level)
    return pw.t_seeds_many(sds * factor, DELTA_PP)


def summarise(sigma: float, n_star: int, sds: np.ndarray, n_pilot: int) -> list[str]:
    cells = []
    for rule, level in _levels().items():
        n = plans(sds, n_pilot, level)
        power = realised(sigma, n)
        cells.append(f"{rule}: mean {power.mean():.3f}, >=0.7 {100 * (power >= 0.7).mean():.0f}%"
                     f", pairs x{np.median(n) / n_star:.2f}")
    return cells


def sigma_for(n_star: int) -> float:
    """SD(D) (pp) at which the paired t needs exactly n_star pairs at DELTA_PP."""
    es = pw.t_mde(1.0, n_star)
    assert es is not None
    return DELTA_PP / es


def part1(num: int, seed: int) -> None:
    print("Part 1: pilot SD from its normal-theory distribution, δ = 2 pp, target 80 % power")
    rng = np.random.default_rng(seed)
    for n_pilot in (4, 6, 8):
        chi = rng.chisquare(n_pilot - 1, num) / (n_pilot - 1)
        for n_star in (6, 8, 12, 16, 24, 32):
            sigma = sigma_for(n_star)
            sds = sigma * np.sqrt(chi)
            # the vectorised planner is the library's planned_seeds, element by element
            check = [pw.planned_seeds(float(x), n_pilot, DELTA_PP) for x in sds[:5]]
            assert check == list(plans(sds[:5], n_pilot, pw.PLANNING_LEVEL))
            print(f"  pilot {n_pilot} pairs, n* = {n_star:2d}: "
                  + " | ".join(summarise(sigma, n_star, sds, n_pilot)))


def part2(num: int, seed: int) -> None:
    print("Part 2: whole 4-pair pilots from the hierarchical model (one fixed eval set of "
          "M = 100 prompts, K = 4, ρ_eval 0.6)")
    rng = np.random.default_rng(seed + 1)
    m, k, n_pilot, block = 100, 4, 4, 2000
    prompt = rng.normal(0, 1.5, (1, 1, 1, m))  # the eval set: the same for pilot and campaign
    for sigma_seed in (0.15, 0.3):
        model = pw.LogitModel(p0=0.5, delta=DELTA_PP / 100, sigma_seed=sigma_seed,
                              sigma_prompt=1.5, sigma_int=0.5, rho_eval=0.6)
        mu, dl = model.mu, model.delta_logit
        total = num + 20000  # pilots, then 80,000 pairs that give the true SD(D)
        d_all = np.empty((total, n_pilot))
        for start in range(0, total, block):
            b = min(block, total - start)
            run = rng.normal(0, sigma_seed, (b, n_pilot, 2, 1))
            inter = rng.normal(0, model.sigma_int, (b, n_pilot, 2, m))
            p = special.expit(mu + np.array([0.0, dl]).reshape(1, 1, 2, 1) + run + prompt
                              + inter)
            own = rng.random((b, n_pilot, 2, m, k))
            shared = rng.random((b, n_pilot, 1, m, k))
            u = np.where(rng.random((b, n_pilot, 1, m, k)) < model.rho_eval, shared, own)
            acc = (u < p[..., None]).mean(axis=(3, 4))
            d_all[start:start + b] = 100 * (acc[:, :, 1] - acc[:, :, 0])
        sigma = float(d_all[num:].std(ddof=1))
        sds = d_all[:num].std(axis=1, ddof=1)
        n_star = int(pw.t_seeds(sigma, DELTA_PP) or 2)
        print(f"  σ_seed {sigma_seed} (logit): true SD(D) {sigma:.2f} pp, n* = {n_star}: "
              + " | ".join(summarise(sigma, n_star, sds, n_pilot)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pilots", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"PLANNING_LEVEL = {pw.PLANNING_LEVEL}; {args.pilots} pilots per cell")
    part1(args.pilots, args.seed)
    part2(args.pilots, args.seed)


if __name__ == "__main__":
    main()
