"""Campaign planning (``tp power``): the trade-off between seeds, eval size and steps.

Inputs are probability-scale variance components (from flags, or estimated from a pilot
campaign): σ_seed (run-to-run SD of accuracy), ρ (correlation of the two arms' runs within a
seed pair), σ_int (run × prompt interaction SD), E[p(1−p)], ρ_eval (correlation of the two
arms' outcomes on the same prompt and sample: they share the eval sampling seed) and the
baseline accuracy. Each row gives the closed-form Var(D_s), the paired-t power (noncentral t)
and, optionally, the power from simulating the hierarchical logistic model with matching
components and running the paired t on every simulated campaign. Planned from a pilot, the
headline "seed pairs needed" (``seeds_planned``) uses the ``power.PLANNING_LEVEL`` upper bound
of the pilot's SD, so that it delivers the power it promises (docs/statistics.md).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
from scipy import optimize, special

from textpolicy.analysis import power
from textpolicy.errors import AnalysisError, ConfigError


@attrs.frozen
class PlanInputs:
    baseline_acc: float = 0.5
    mde_pp: float = 2.0
    sigma_seed_pp: float = 1.0
    rho: float = 0.0
    sigma_int_pp: float = 14.0
    pq: float = 0.15
    rho_eval: float = 0.0
    source: str = "flags"
    pilot: dict[str, Any] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        if not 0 < self.baseline_acc < 1:
            raise ConfigError(f"--baseline-acc must lie in (0, 1), got {self.baseline_acc}")
        if not 0 < self.mde_pp < 100 * (1 - self.baseline_acc):
            raise ConfigError(f"--mde must lie in (0, {100 * (1 - self.baseline_acc):g}) pp, "
                              f"got {self.mde_pp}")
        if self.sigma_seed_pp < 0 or self.sigma_int_pp < 0:
            raise ConfigError("--sigma-seed and --sigma-int must be >= 0")
        if not 0 <= self.rho < 1:
            raise ConfigError(f"--rho must lie in [0, 1), got {self.rho}")
        if not 0 < self.pq <= 0.25:
            raise ConfigError(f"--pq (E[p(1-p)]) must lie in (0, 0.25], got {self.pq}")
        if not 0 <= self.rho_eval < 1:
            raise ConfigError(f"--eval-rho must lie in [0, 1), got {self.rho_eval}")

    def var_d(self, k: int, m: int) -> float:
        """Var(D_s) in probability units²."""
        return power.var_d(self.sigma_seed_pp / 100, self.sigma_int_pp / 100, self.pq, k, m,
                           rho=self.rho, rho_eval=self.rho_eval)

    @property
    def pilot_pairs(self) -> int | None:
        """Seed pairs of the pilot the inputs were estimated from (None: given as flags, taken
        as known)."""
        n = self.pilot.get("n_pairs")
        return int(n) if n is not None else None


def logit_model(inputs: PlanInputs) -> power.LogitModel:
    """A ``LogitModel`` whose delta-method probability-scale components match ``inputs``."""
    p0 = inputs.baseline_acc

    def pq_of(sigma_prompt: float) -> float:
        m = power.LogitModel(p0=p0, delta=0.0, sigma_seed=0.0, sigma_prompt=sigma_prompt,
                             sigma_int=0.0)
        return m.pp_components()[2]

    target = min(inputs.pq, pq_of(0.0) - 1e-9)
    sigma_prompt = 0.0 if pq_of(0.0) <= target else float(
        optimize.brentq(lambda s: pq_of(s) - target, 0.0, 20.0))
    base = power.LogitModel(p0=p0, delta=0.0, sigma_seed=1.0, sigma_prompt=sigma_prompt,
                            sigma_int=1.0)
    slope_seed, slope_int, _ = base.pp_components()
    sigma_seed = inputs.sigma_seed_pp / 100 / slope_seed if slope_seed > 0 else 0.0
    sigma_int = inputs.sigma_int_pp / 100 / slope_int if slope_int > 0 else 0.0
    return power.LogitModel(p0=p0, delta=inputs.mde_pp / 100, sigma_seed=sigma_seed,
                            rho=inputs.rho, sigma_prompt=sigma_prompt, sigma_int=sigma_int,
                            rho_eval=inputs.rho_eval)


def plan_table(inputs: PlanInputs, *, seeds: Sequence[int], eval_prompts: Sequence[int],
               eval_samples: Sequence[int], steps: Sequence[int], batch_size: int,
               group_size: int, alpha: float = 0.05, target_power: float = 0.8,
               num_sims: int = 0, sim_seed: int = 0) -> dict[str, Any]:
    """Rows of (seeds, M, K) with power; costs per steps value; seeds needed per (M, K)."""
    for name, values in (("seeds", seeds), ("eval prompts", eval_prompts),
                         ("eval samples", eval_samples), ("steps", steps)):
        if not values or any(v < 1 for v in values):
            raise ConfigError(f"{name} must be a list of positive integers, got {list(values)}")
    if any(s < 2 for s in seeds):
        raise ConfigError("seeds must be >= 2 (a paired t needs two pairs)")
    delta = inputs.mde_pp / 100
    model = logit_model(inputs) if num_sims > 0 else None
    rows = []
    needed = []
    for m in eval_prompts:
        for k in eval_samples:
            vd = inputs.var_d(k, m)
            sd = math.sqrt(vd)
            seeds_t = power.t_seeds(sd, delta, alpha=alpha, power=target_power)
            pilot = inputs.pilot_pairs
            needed.append({"eval_prompts": m, "eval_samples": k, "sd_pair_diff_pp": 100 * sd,
                           "seeds_closed_form": power.closed_form_seeds(vd, delta, alpha=alpha,
                                                                        power=target_power),
                           "seeds_t": seeds_t,
                           # the headline: from a pilot, plan with the upper bound of its SD
                           "seeds_planned": seeds_t if pilot is None else power.planned_seeds(
                               sd, pilot, delta, alpha=alpha, power=target_power),
                           "planned_with": "the given SD (flags: taken as known)"
                           if pilot is None else
                           f"the {100 * power.PLANNING_LEVEL:g}% upper confidence bound of "
                           f"the SD estimated from {pilot} pilot pairs"})
            for s in seeds:
                row: dict[str, Any] = {
                    "seeds": s, "eval_prompts": m, "eval_samples": k,
                    "sd_pair_diff_pp": 100 * sd,
                    "power_t": power.t_power(sd, delta, s, alpha=alpha),
                    "eval_generations": 2 * s * m * k,
                    "train_generations": {str(t): 2 * s * t * batch_size * group_size
                                          for t in steps},
                }
                if model is not None:
                    sim = power.simulate_paired(model, n_pairs=s, m=m, k=k, num_sims=num_sims,
                                                alpha=alpha, seed=sim_seed)
                    row["power_sim"] = sim["rejection_rate"]
                rows.append(row)
    out: dict[str, Any] = {
        "inputs": attrs.asdict(inputs), "alpha": alpha, "target_power": target_power,
        "mde_pp": inputs.mde_pp, "rows": rows, "seeds_needed": needed,
        "steps": list(steps), "batch_size": batch_size, "group_size": group_size,
        "num_sims": num_sims, "sim_seed": sim_seed,
        "note": ("held-out power does not depend on the number of training steps except "
                 "through the effect reached by then; steps set the training cost. With a "
                 "pilot, 'pilot_by_step' shows the effect and SD observed at each eval step."),
    }
    if model is not None:
        out["simulation_model"] = {
            "logit_mu": model.mu, "logit_delta": model.delta_logit,
            "sigma_seed_logit": model.sigma_seed, "sigma_prompt_logit": model.sigma_prompt,
            "sigma_int_logit": model.sigma_int, "rho": model.rho, "rho_eval": model.rho_eval}
    return out


def pilot_inputs(campaign_dir: str | os.PathLike[str], *, mde_pp: float,
                 alpha: float = 0.05) -> PlanInputs:
    """Estimate the planning inputs from a finished pilot campaign (first candidate arm)."""
    from textpolicy.analysis import design
    from textpolicy.analysis.campaign import discover_arms
    from textpolicy.analysis.rundata import load_runs

    arms, baseline, _ = discover_arms(campaign_dir)
    runs = {name: load_runs(dirs, what=f"arm {name!r}") for name, dirs in arms.items()}
    candidate = next(n for n in arms if n != baseline)
    ep = design.choose_endpoint([r for rs in runs.values() for r in rs])
    pairing = design.pair_runs(runs[baseline], runs[candidate], baseline=baseline,
                               candidate=candidate)
    if pairing.paired is False or len(pairing.base) < 2:
        raise AnalysisError(f"{campaign_dir}: a pilot needs >= 2 seed pairs to estimate "
                            "seed-level variance")
    values = {r: design.run_values(r, ep) for r in (*pairing.base, *pairing.cand)}
    base = np.stack([values[r].units for r in pairing.base])
    cand = np.stack([values[r].units for r in pairing.cand])
    p0 = float(base.mean())
    by_step = []
    if ep.kind != "heldout":
        d = cand.mean(axis=1) - base.mean(axis=1)
        # training endpoint: no prompt decomposition; put all variance in the seed part
        return PlanInputs(baseline_acc=p0, mde_pp=mde_pp,
                          sigma_seed_pp=100 * math.sqrt(float(d.var(ddof=1)) / 2),
                          rho=0.0, sigma_int_pp=0.0, pq=max(1e-6, p0 * (1 - p0)),
                          source=f"pilot {campaign_dir} (training correctness, descriptive)",
                          pilot={"n_pairs": len(d), "observed_delta_pp": 100 * float(d.mean()),
                                 "sd_pair_diff_pp": 100 * float(d.std(ddof=1))})
    k = ep.samples_min
    assert ep.step is not None
    matched = power.paired_sampling_variance(
        np.stack([_sample_matrix(r, ep.step, ep.prompt_ids, k) for r in pairing.base]),
        np.stack([_sample_matrix(r, ep.step, ep.prompt_ids, k) for r in pairing.cand]))
    vc = power.variance_components(base, cand, k, sampling=matched)
    for i, step in enumerate(ep.common_steps):
        cb = np.array([values[r].curve[i] for r in pairing.base])
        cc = np.array([values[r].curve[i] for r in pairing.cand])
        d = cc - cb
        sd = float(d.std(ddof=1))
        delta = float(d.mean())
        # None = not estimable: identical pairs (SD 0, e.g. the shared initial model at step
        # 0) or an observed difference ≈ 0 (see power.NEGLIGIBLE_FRACTION)
        estimable = sd > power.NEGLIGIBLE_SD * max(1e-2, abs(delta))
        mde_now = power.t_mde(sd, len(d), alpha=alpha) if estimable else None
        observed_ok = (estimable and delta != 0 and mde_now is not None
                       and abs(delta) >= power.NEGLIGIBLE_FRACTION * mde_now)
        # planned like the headline: the PLANNING_LEVEL upper bound of this step's SD
        by_step.append({"step": step, "delta_pp": 100 * delta, "sd_pp": 100 * sd,
                        "seeds_needed_observed": power.planned_seeds(sd, len(d), delta,
                                                                     alpha=alpha)
                        if observed_ok else None,
                        "seeds_needed_mde": power.planned_seeds(sd, len(d), mde_pp / 100,
                                                                alpha=alpha)
                        if estimable else None})
    d = cand.mean(axis=1) - base.mean(axis=1)
    return PlanInputs(
        baseline_acc=min(max(p0, 1e-3), 1 - 1e-3), mde_pp=mde_pp,
        sigma_seed_pp=100 * math.sqrt(vc.seed_part / 2), rho=0.0,
        sigma_int_pp=100 * vc.sigma_int, pq=max(1e-6, min(0.25, vc.pq)),
        rho_eval=min(max(vc.rho_eval, 0.0), 0.99),
        source=f"pilot {campaign_dir} ({baseline} vs {candidate}, {len(d)} pairs)",
        pilot={"n_pairs": len(d), "observed_delta_pp": 100 * float(d.mean()),
               "sd_pair_diff_pp": 100 * float(d.std(ddof=1)), "eval_prompts": vc.m,
               "eval_samples": vc.k, "variance_components": vc.to_dict(),
               "pilot_by_step": by_step,
               "note": "σ_seed from the seed part of Var(D) with ρ = 0 (it is 2σ²(1−ρ)); "
                       "ρ_eval from the matched samples (sample j of both arms shares the eval "
                       "sampling seed)"})


def _sample_matrix(run: Any, step: int, prompt_ids: Sequence[str], k: int) -> np.ndarray:
    """Correctness of sample j of each endpoint prompt at ``step``, [M, k] (NaN: missing)."""
    from textpolicy.analysis.jsonl import column, read_jsonl

    path = run.path / "eval.jsonl"
    rows = read_jsonl(path)
    steps = column(rows, "step", path, dtype=np.int64)
    sample = column(rows, "sample", path, dtype=np.int64, default=-1)
    correct = column(rows, "correct", path)
    index = {pid: i for i, pid in enumerate(prompt_ids)}
    where = np.array([index.get(str(r.get("prompt_id")), -1) for r in rows], dtype=np.int64)
    keep = (steps == step) & (where >= 0) & (sample >= 0) & (sample < k)
    out = np.full((len(prompt_ids), k), np.nan)
    out[where[keep], sample[keep]] = correct[keep]
    return out


def expit(x: float) -> float:
    return float(special.expit(x))
