"""Calibration of the primary test for the seeds-and-prompts claim (docs/statistics.md).

Simulates many A/B campaigns of the hierarchical model in ``textpolicy.analysis.synthetic``
(``simulate_campaigns``: fresh eval prompts per campaign, seed pairs sharing u_seed, run and
run × prompt noise, K samples per prompt) and runs, on each campaign's seed-pair × prompt
difference matrix, the primary test (``seeds_prompts``: two-way random-effects method-of-moments
t) and the paired t over seed pairs ("on this eval set"). Reports for S seed pairs:

* false-positive rate (FPR) for the seeds-and-prompts claim under a true null, without and with
  an arm × prompt interaction whose population mean is 0 (``sigma_arm_prompt``);
* 95 % CI coverage of the population difference (0);
* power at 2 pp and 5 pp effects with no interaction, both tests on the same campaigns.

    python benchmarks/primary_calibration.py [--campaigns 4000] [--prompts 100] [--tau 0.5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats


def _paired_p(diff: np.ndarray) -> np.ndarray:
    x = diff.mean(axis=2)
    s = x.shape[1]
    sd = x.std(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = x.mean(axis=1) / (sd / np.sqrt(s))
    return np.where(sd > 0, 2 * stats.t.sf(np.abs(t), s - 1), 1.0)


def _primary_p(diff: np.ndarray) -> np.ndarray:
    from textpolicy.analysis.methods import seed_prompt_p

    p = seed_prompt_p(diff)  # the library's computation, vectorised over campaigns
    return np.where(np.isnan(p), 1.0, p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--campaigns", type=int, default=4000)
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--tau", type=float, default=0.5, help="arm x prompt SD (logit scale)")
    ap.add_argument("--effects-pp", default="2,5")
    ap.add_argument("--seeds", default="2,3,4,8,16,32")
    ap.add_argument("--rng", type=int, default=2026)
    args = ap.parse_args()

    from textpolicy.analysis.synthetic import (
        SyntheticDesign,
        logit_effect_for,
        simulate_campaigns,
    )

    base = SyntheticDesign(eval_prompts=args.prompts, eval_samples=args.samples)
    p0 = float(1 / (1 + np.exp(-(base.base_logit + base.slope * base.steps))))
    effects = [float(x) for x in args.effects_pp.split(",")]
    rng = np.random.default_rng(args.rng)
    n = args.campaigns
    se = np.sqrt(0.05 * 0.95 / n)
    print(f"{n} campaigns per cell, M={args.prompts} prompts x K={args.samples}, "
          f"sigma_seed={base.sigma_seed}, sigma_run={base.sigma_run}, "
          f"sigma_prompt={base.sigma_prompt}, sigma_int={base.sigma_int}; arm x prompt "
          f"tau={args.tau}; power at {effects} pp; "
          f"Monte Carlo SE of an FPR near 0.05: {se:.4f}")
    print("| S | FPR primary, no interaction | FPR paired t, no interaction | "
          "FPR primary, interaction | FPR paired t, interaction | CI coverage primary / "
          "paired (interaction) | " + " | ".join(
              f"power primary / paired t at {e:g} pp" for e in effects) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(effects))
    t0 = time.perf_counter()
    for s in (int(x) for x in args.seeds.split(",")):
        row = []
        cover = []
        for tau in (0.0, args.tau):
            design = SyntheticDesign(eval_prompts=args.prompts, eval_samples=args.samples,
                                     sigma_arm_prompt=tau)
            b, c = simulate_campaigns(effect=0.0, seeds=s, campaigns=n, design=design, rng=rng)
            diff = (c - b) * 100
            pp, pt = _primary_p(diff), _paired_p(diff)
            row += [float(np.mean(pp < 0.05)), float(np.mean(pt < 0.05))]
            cover = [1 - row[-2], 1 - row[-1]]
        power = []
        for pp in effects:
            b, c = simulate_campaigns(effect=logit_effect_for(pp, p0), seeds=s, campaigns=n,
                                      design=base, rng=rng)
            diff = (c - b) * 100
            power.append(f"{np.mean(_primary_p(diff) < 0.05):.3f} / "
                         f"{np.mean(_paired_p(diff) < 0.05):.3f}")
        print(f"| {s} | {row[0]:.3f} | {row[1]:.3f} | {row[2]:.3f} | {row[3]:.3f} | "
              f"{cover[0]:.3f} / {cover[1]:.3f} | " + " | ".join(power) + " |", flush=True)
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
