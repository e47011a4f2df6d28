"""Power in seeds: closed form, noncentral-t refinement, variance components, simulation.

Paired design (statistics.md "Power is about seeds"): the per-pair difference D_s has
``Var(D_s) = 2σ²_seed(1 − ρ_pair) + 2(σ²_int + (1 − ρ_eval)·E[p(1−p)]/K)/M`` (probability
scale; ρ_eval is the correlation of the two arms' outcomes on the same prompt and sample, which
share an eval sampling seed), and the seeds needed for power 1−β at effect δ are
``⌈(z_{1−α/2} + z_{1−β})² Var(D_s)/δ²⌉``, refined with the noncentral t (``TTestPower``'s
formula, in scipy). Planned from a pilot, the headline figure uses the ``PLANNING_LEVEL`` upper
confidence bound of the pilot's SD (``planned_seeds``). The simulator draws the hierarchical
model ``logit p = μ + δ·arm + u_seed + e_run + b_prompt + c_run×prompt``, K samples per prompt
(shared uniforms across arms with probability ρ_eval) and runs the paired t on every simulated
campaign.
"""

from __future__ import annotations

import math

import attrs
import numpy as np
from scipy import optimize, special, stats

from textpolicy.errors import ConfigError

_GH_X, _GH_W = np.polynomial.hermite.hermgauss(60)

# An observed difference under this fraction of the smallest effect the data at hand detect
# (80 % power) is "≈ 0" for planning: the sample size "needed at the observed effect" would be
# over 1/fraction² = 100 times the current one, a number that only reflects noise.
NEGLIGIBLE_FRACTION = 0.1
# SD of per-pair differences at or below this (relative, pp) counts as 0 (identical pairs).
NEGLIGIBLE_SD = 1e-9
# One-sided level of the upper confidence bound of a pilot's SD that the headline "seed pairs
# needed" plans with. benchmarks/planning_power.py (δ = 2 pp, 80 % target): planned from a
# 4-pair pilot it delivers a mean realised power of 0.83-0.87 with 77-82 % of plans at >= 0.7
# (1.5-1.66x the pairs the true SD needs); the point estimate delivers 0.65-0.73 (50-59 %),
# the 80 % bound 0.88-0.91 at 2.0-2.3x the pairs.
PLANNING_LEVEL = 0.7


def paired_t_power(effect_size: float, n: float, *, alpha: float = 0.05) -> float:
    """Power of the two-sided one-sample/paired t with ``n`` pairs at standardised effect
    ``effect_size`` = |δ|/SD(D): P(|T| > t_{1−α/2, n−1}) with T ~ noncentral t(n − 1,
    effect_size·√n). The formula of ``statsmodels.stats.power.TTestPower`` (the tests check
    the numbers), computed with scipy so that ``tp analyze`` does not import statsmodels.
    """
    df = n - 1
    crit = float(stats.t.isf(alpha / 2, df))
    nc = abs(effect_size) * math.sqrt(n)
    upper = float(stats.nct.sf(crit, df, nc))
    lower = float(stats.nct.cdf(-crit, df, nc))
    # scipy's noncentral t gives NaN deep in a tail (statsmodels then returns NaN power):
    # there the wrong-side term is ~0 and the right-side term ~1 or ~0
    if math.isnan(lower):
        lower = 0.0
    if math.isnan(upper):
        upper = 1.0 if nc > crit else 0.0
    return min(1.0, upper + lower)


def closed_form_seeds(var_d: float, delta: float, *, alpha: float = 0.05,
                      power: float = 0.8) -> int | None:
    """⌈(z_{1−α/2} + z_{1−β})² Var(D)/δ²⌉ (None when δ = 0)."""
    if delta == 0 or not math.isfinite(var_d):
        return None
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return max(2, math.ceil(z * z * var_d / (delta * delta) - 1e-9))


def t_seeds(sd_d: float, delta: float, *, alpha: float = 0.05, power: float = 0.8
            ) -> int | None:
    """Pairs needed by the two-sided paired t: the smallest n >= 2 whose noncentral-t power
    reaches ``power`` (what ``TTestPower.solve_power`` gives, rounded up)."""
    if delta == 0 or not math.isfinite(sd_d):
        return None
    if sd_d == 0:
        return 2
    es = abs(delta) / sd_d
    if paired_t_power(es, 2, alpha=alpha) >= power:
        return 2
    # the t needs a little more than the closed form: search upwards from it
    guess = closed_form_seeds(sd_d * sd_d, delta, alpha=alpha, power=power) or 2
    lo, hi = max(2, guess - 1), guess + 1
    while paired_t_power(es, lo, alpha=alpha) >= power and lo > 2:
        lo = max(2, lo // 2)
    while paired_t_power(es, hi, alpha=alpha) < power:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # bisection on the power curve (monotone in n)
        mid = (lo + hi) // 2
        if paired_t_power(es, mid, alpha=alpha) >= power:
            hi = mid
        else:
            lo = mid
    return hi


def t_seeds_many(sd_d: np.ndarray, delta: float, *, alpha: float = 0.05, power: float = 0.8
                 ) -> np.ndarray:
    """``t_seeds`` for an array of SDs at once (simulating plans): the effect-size threshold
    at which n pairs reach ``power`` is found for every n of the needed range by a vectorised
    bisection, then each SD's n by ``searchsorted``. Equals ``t_seeds`` element-wise."""
    sd = np.asarray(sd_d, dtype=np.float64)
    if delta == 0 or not np.isfinite(sd).all() or (sd <= 0).any():
        raise ConfigError("t_seeds_many needs delta != 0 and finite SDs > 0")
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    n_hi = math.ceil(z * z * float(sd.max()) ** 2 / delta ** 2) + 8
    n = np.arange(2, n_hi + 1, dtype=np.float64)
    crit = stats.t.isf(alpha / 2, n - 1)

    def pw(es: np.ndarray) -> np.ndarray:
        nc = es * np.sqrt(n)
        return np.nan_to_num(stats.nct.sf(crit, n - 1, nc), nan=1.0) + np.nan_to_num(
            stats.nct.cdf(-crit, n - 1, nc), nan=0.0)

    lo, hi = np.zeros_like(n), np.full_like(n, 2.0)
    while (grow := pw(hi) < power).any():
        hi = np.where(grow, hi * 2, hi)
    for _ in range(60):  # threshold[i]: smallest standardised effect n[i] pairs detect
        mid = (lo + hi) / 2
        ok = pw(mid) >= power
        hi, lo = np.where(ok, mid, hi), np.where(ok, lo, mid)
    es = abs(delta) / sd
    # thresholds decrease with n: the first n whose threshold is <= es
    idx = np.searchsorted(-hi, -es, side="left")
    return n[np.minimum(idx, len(n) - 1)].astype(np.int64)


def t_power(sd_d: float, delta: float, n_pairs: int, *, alpha: float = 0.05) -> float | None:
    """Power of the two-sided paired t with ``n_pairs`` pairs at effect ``delta``."""
    if n_pairs < 2 or not math.isfinite(sd_d) or sd_d <= 0:
        return None
    return paired_t_power(abs(delta) / sd_d, n_pairs, alpha=alpha)


def t_mde(sd_d: float, n_pairs: int, *, alpha: float = 0.05, power: float = 0.8
          ) -> float | None:
    """Smallest |δ| the paired t detects with the given power and pairs."""
    if n_pairs < 2 or not math.isfinite(sd_d) or sd_d <= 0:
        return None
    hi = 1.0
    while paired_t_power(hi, n_pairs, alpha=alpha) < power:
        hi *= 2
        if hi > 1e6:
            return None
    es = optimize.brentq(lambda e: paired_t_power(e, n_pairs, alpha=alpha) - power, 0.0, hi,
                         xtol=1e-12, rtol=1e-12)
    return float(es) * sd_d


def var_d(sigma_seed: float, sigma_int: float, pq: float, k: int, m: int, *,
          rho: float = 0.0, rho_eval: float = 0.0) -> float:
    """Var(D_s) = 2σ²_seed(1 − ρ) + 2(σ²_int + (1 − ρ_eval)·E[p(1−p)]/K)/M (probability
    scale); ρ_eval: correlation of the arms' outcomes on a shared eval sampling seed."""
    return 2 * sigma_seed ** 2 * (1 - rho) + 2 * (sigma_int ** 2 + (1 - rho_eval) * pq / k) / m


def two_proportion_n(p1: float, p2: float, *, alpha: float = 0.05, power: float = 0.8
                     ) -> int | None:
    """Textbook two-proportion z: generations per arm, treating generations as independent."""
    delta = p2 - p1
    if delta == 0:
        return None
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return math.ceil(z * z * (p1 * (1 - p1) + p2 * (1 - p2)) / delta ** 2)


def two_proportion_mde(p: float, n_per_arm: int, *, alpha: float = 0.05,
                       power: float = 0.8) -> float:
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(z * math.sqrt(2 * p * (1 - p) / n_per_arm))


def sd_upper(sd: float, n: int, *, level: float = 0.8) -> float:
    """One-sided ``level`` upper confidence bound of an SD estimated with n − 1 df."""
    if n < 2:
        return math.nan
    return float(sd * math.sqrt((n - 1) / stats.chi2.ppf(1 - level, n - 1)))


def planned_seeds(sd_d: float, n_pilot: int, delta: float, *, alpha: float = 0.05,
                  power: float = 0.8, level: float = PLANNING_LEVEL) -> int | None:
    """The headline plan: pairs the paired t needs at ``delta`` when SD(D) is the ``level``
    upper confidence bound of ``sd_d`` estimated from ``n_pilot`` pairs. Planning with the
    point estimate under-delivers (a 4-pair SD is below the true one more often than not, and
    power is concave in n); see ``PLANNING_LEVEL``."""
    if n_pilot < 2:
        return None
    return t_seeds(sd_upper(sd_d, n_pilot, level=level), delta, alpha=alpha, power=power)


@attrs.frozen
class VarianceComponents:
    """Probability-scale components of Var(D_s) estimated from a paired pilot."""

    var_d: float  # observed Var(D_s)
    seed_part: float  # 2σ²_seed(1 − ρ), floored at 0
    sigma_int: float
    pq: float  # E[p(1 − p)] over prompts
    k: int
    m: int
    #: variance of one paired sample difference within a (pair, prompt): 2(1 − ρ_eval)·pq;
    #: 2·pq when the samples were not matched (independent sampling assumed)
    sampling: float = math.nan
    sampling_source: str = "assumed independent"

    @property
    def rho_eval(self) -> float:
        """Correlation of the arms' outcomes on a shared eval sampling seed."""
        return 1 - self.sampling / (2 * self.pq) if self.pq > 0 else 0.0

    def project(self, k: int, m: int) -> float:
        return self.seed_part + (2 * self.sigma_int ** 2 + self.sampling / k) / m

    def to_dict(self) -> dict[str, float | str]:
        return {"var_d": self.var_d, "seed_part": self.seed_part,
                "sigma_seed_pp_if_rho0": 100 * math.sqrt(self.seed_part / 2),
                "sigma_int": self.sigma_int, "pq": self.pq, "samples_per_prompt": self.k,
                "eval_prompts": self.m, "sampling_var": self.sampling,
                "rho_eval": self.rho_eval, "sampling_source": self.sampling_source}


def paired_sampling_variance(base_samples: np.ndarray, cand_samples: np.ndarray
                             ) -> float | None:
    """Mean within-(pair, prompt) variance of the per-sample paired difference
    ``cand[s, m, j] − base[s, m, j]`` (sample j of both arms drew from the same eval sampling
    seed): it estimates 2(1 − ρ_eval)·E[p(1 − p)]. NaN entries (missing samples) are left out;
    None with fewer than two samples per cell."""
    diff = np.asarray(cand_samples, dtype=np.float64) - np.asarray(base_samples,
                                                                  dtype=np.float64)
    if diff.ndim != 3 or diff.shape[2] < 2:
        return None
    ok = np.isfinite(diff)
    n = ok.sum(axis=2)
    use = n >= 2
    if not use.any():
        return None
    filled = np.where(ok, diff, 0.0)
    mean = filled.sum(axis=2) / np.maximum(n, 1)
    ss = np.where(ok, (filled - mean[..., None]) ** 2, 0.0).sum(axis=2)
    return float((ss[use] / (n[use] - 1)).mean())


def variance_components(base_units: np.ndarray, cand_units: np.ndarray, k: int, *,
                        sampling: float | None = None) -> VarianceComponents:
    """Split Var(D_s) of a paired held-out pilot into its seed, interaction and sampling parts.

    ``*_units`` are per-(pair, prompt) accuracies [S, M] measured with ``k`` samples each.
    ``sampling``: ``paired_sampling_variance`` of the matched samples; without it the arms'
    eval samples are assumed independent (2·pq), which overstates Var(D_s) projected to other
    K or M — and floors σ_int at 0 — when the arms share eval sampling seeds (they do).
    """
    diff = cand_units - base_units
    s, m = diff.shape
    d = diff.mean(axis=1)
    vd = float(d.var(ddof=1)) if s > 1 else math.nan
    within = float(diff.var(axis=1, ddof=1).mean())  # = 2σ²_int + sampling/K per prompt
    acc = np.concatenate([base_units, cand_units]).ravel()
    c = acc * k
    pq = float(np.mean(c * (k - c) / (k * (k - 1)))) if k > 1 else float(np.mean(acc * (1 - acc)))
    source = "matched samples (shared eval sampling seeds)"
    if sampling is None:
        sampling, source = 2 * pq, "assumed independent"
    sigma_int2 = max(0.0, (within - sampling / k) / 2)
    seed_part = max(0.0, vd - within / m) if s > 1 else math.nan
    return VarianceComponents(var_d=vd, seed_part=seed_part, sigma_int=math.sqrt(sigma_int2),
                              pq=pq, k=k, m=m, sampling=sampling, sampling_source=source)


# ---- the hierarchical simulator --------------------------------------------------------

@attrs.frozen
class LogitModel:
    """``logit p = μ + δ_l·arm + u_s + e_{s,arm} + b_m + c_{s,arm,m}`` with
    Var(u + e) = σ²_seed, corr within a pair = ρ, b ~ N(0, σ²_prompt), c ~ N(0, σ²_int);
    μ and δ_l are set so that the mean accuracy is ``p0`` and the effect is ``delta`` (prob.
    scale) averaged over every random effect. ``rho_eval``: sample j of a prompt uses the same
    uniform in both arms of a pair with this probability (shared eval sampling seeds), which
    makes the arms' outcomes correlate ≈ ρ_eval when their accuracies are close."""

    p0: float
    delta: float
    sigma_seed: float = 0.1
    rho: float = 0.0
    sigma_prompt: float = 1.5
    sigma_int: float = 0.5
    rho_eval: float = 0.0

    def __attrs_post_init__(self) -> None:
        if not 0 < self.p0 < 1:
            raise ConfigError(f"baseline accuracy must lie in (0, 1), got {self.p0}")
        if not 0 < self.p0 + self.delta < 1:
            raise ConfigError(f"baseline accuracy + effect must lie in (0, 1), got "
                              f"{self.p0} + {self.delta}")
        if not 0 <= self.rho <= 1:
            raise ConfigError(f"rho must lie in [0, 1], got {self.rho}")
        if not 0 <= self.rho_eval <= 1:
            raise ConfigError(f"rho_eval must lie in [0, 1], got {self.rho_eval}")
        for name in ("sigma_seed", "sigma_prompt", "sigma_int"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def _tau(self) -> float:
        return math.sqrt(self.sigma_seed ** 2 + self.sigma_prompt ** 2 + self.sigma_int ** 2)

    def _mean(self, eta: float) -> float:
        z = eta + self._tau * math.sqrt(2) * _GH_X
        return float(np.sum(_GH_W * special.expit(z)) / math.sqrt(math.pi))

    @property
    def mu(self) -> float:
        return float(optimize.brentq(lambda m: self._mean(m) - self.p0, -30, 30))

    @property
    def delta_logit(self) -> float:
        mu = self.mu
        target = self.p0 + self.delta
        return float(optimize.brentq(lambda d: self._mean(mu + d) - target, -40, 40))

    def pp_components(self) -> tuple[float, float, float]:
        """Delta-method probability-scale (σ_seed, σ_int, E[p(1−p)]) of this model."""
        tau_b = math.sqrt(self.sigma_prompt ** 2)
        z = self.mu + tau_b * math.sqrt(2) * _GH_X
        p = special.expit(z)
        w = _GH_W / math.sqrt(math.pi)
        slope = float(np.sum(w * p * (1 - p)))
        slope2 = float(np.sum(w * (p * (1 - p)) ** 2))
        pq = float(np.sum(w * p * (1 - p)))
        return self.sigma_seed * slope, self.sigma_int * math.sqrt(slope2), pq

    def closed_form_var_d(self, k: int, m: int) -> float:
        s_seed, s_int, pq = self.pp_components()
        return var_d(s_seed, s_int, pq, k, m, rho=self.rho, rho_eval=self.rho_eval)


def simulate_paired(model: LogitModel, *, n_pairs: int, m: int, k: int, num_sims: int,
                    alpha: float = 0.05, seed: int = 0, effect: bool = True
                    ) -> dict[str, float]:
    """Simulate ``num_sims`` paired campaigns and run the paired t on each.

    Returns the rejection rate (power, or type-I error with ``effect=False``), the mean
    estimated effect and the empirical SD of D_s. Vectorised over simulations (in blocks).
    """
    if n_pairs < 2:
        raise ConfigError(f"seeds must be >= 2 for a paired t, got {n_pairs}")
    rng = np.random.default_rng(seed)
    mu = model.mu
    dl = model.delta_logit if effect else 0.0
    sd_shared = model.sigma_seed * math.sqrt(model.rho)
    sd_run = model.sigma_seed * math.sqrt(1 - model.rho)
    block = max(1, 4_000_000 // (n_pairs * 2 * m * (k if model.rho_eval > 0 else 1)))
    rejections = 0
    d_means = []
    d_sds = []
    for start in range(0, num_sims, block):
        b = min(block, num_sims - start)
        prompt = rng.normal(0, model.sigma_prompt, size=(b, 1, 1, m))
        shared = rng.normal(0, sd_shared, size=(b, n_pairs, 1, 1))
        run = rng.normal(0, sd_run, size=(b, n_pairs, 2, 1))
        inter = rng.normal(0, model.sigma_int, size=(b, n_pairs, 2, m))
        arm = np.array([0.0, dl]).reshape(1, 1, 2, 1)
        p = special.expit(mu + arm + shared + run + prompt + inter)
        if model.rho_eval > 0:  # sample-level draws: shared uniforms with prob. rho_eval
            own = rng.random((b, n_pairs, 2, m, k))
            shared_u = rng.random((b, n_pairs, 1, m, k))
            use = rng.random((b, n_pairs, 1, m, k)) < model.rho_eval
            u = np.where(use, shared_u, own)
            acc = (u < p[..., None]).mean(axis=(3, 4))  # [b, S, 2]
        else:
            acc = rng.binomial(k, p).mean(axis=3) / k  # [b, S, 2]
        d = acc[:, :, 1] - acc[:, :, 0]
        mean = d.mean(axis=1)
        sd = d.std(axis=1, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = mean / (sd / math.sqrt(n_pairs))
        p_val = 2 * stats.t.sf(np.abs(t), n_pairs - 1)
        # identical differences: t undefined, the analysis reports no p (never a rejection)
        p_val = np.where(sd <= NEGLIGIBLE_SD * np.maximum(1.0, np.abs(mean)), 1.0, p_val)
        rejections += int(np.sum(p_val < alpha))
        d_means.append(mean)
        d_sds.append(sd)
    means = np.concatenate(d_means)
    sds = np.concatenate(d_sds)
    return {"rejection_rate": rejections / num_sims, "mean_delta": float(means.mean()),
            "sd_pair_diff": float(np.sqrt(np.mean(sds ** 2))), "num_sims": num_sims}
