"""Group-sequential designs over seed pairs: Lan–DeMets alpha-spending boundaries.

A sequential campaign analyses after each wave of seed pairs (a *look*) and stops as soon as
the primary test's p value falls below that look's nominal threshold. Testing at α after every
wave inflates the false-positive rate (≈ 13 % for 4 looks at α = 0.05); spending α over the
looks keeps the whole procedure at α.

Convention (two-sided, symmetric): the spending function is evaluated at the total two-sided
α and each look spends its increment over both tails,

    P_H0(|Z_1| < c_1, …, |Z_{k−1}| < c_{k−1}, |Z_k| ≥ c_k) = α*(t_k) − α*(t_{k−1}),

with information fractions t_k = n_k / n_K (n_k: complete seed pairs at look k; the
information of a paired design is proportional to n_k) and corr(Z_i, Z_j) = sqrt(t_i / t_j).
Spending functions (Lan & DeMets 1983):

- ``"obrien-fleming"``: α*(t) = 2 − 2 Φ(z_{1−α/2} / sqrt(t)),
- ``"pocock"``: α*(t) = α · ln(1 + (e − 1) t).

The nominal threshold of look k is 2 Φ(−c_k): reject at look k when p_k < threshold_k. With
few seeds the primary test's p comes from a t reference, so the normal boundary is applied on
the p-value scale; the type-I error of that whole procedure is validated by simulation
(tests/test_sequential.py, benchmarks/sequential.py).

The boundaries come from the recursive numerical integration of Armitage, McPherson & Rowe
(1969) (Jennison & Turnbull 2000, ch. 19): the sub-density of the score B_k = Z_k sqrt(t_k) on
the continuation region is propagated look by look with Simpson's rule, and c_k is found by
root finding on the exit probability. Written by hand: neither scipy nor statsmodels has
group-sequential boundaries (scipy's multivariate normal CDF is used in the tests as an
independent check).

After stopping, the naive p is biased; ``stagewise_p`` gives the stage-wise ordering p value
(Armitage 1957; Fairbanks & Madsen 1982): outcomes ordered by the look they stop at (earlier
is more extreme), then by |Z| at that look.

Futility (``conditional_power``): non-binding — the efficacy boundaries are computed as if the
campaign never stopped for futility, so stopping for futility can only lower the type-I error.
The rule stops when the conditional power under the current trend (the drift estimated from
the data so far) to cross the final boundary falls below 0.10.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import attrs
import numpy as np
from scipy import optimize, stats

from textpolicy.errors import ConfigError

SPENDING = ("obrien-fleming", "pocock")
FUTILITY = ("none", "non-binding")
FUTILITY_CONDITIONAL_POWER = 0.10
_GRID = 801  # Simpson points per look (odd)


def spending_function(t: np.ndarray | float, *, alpha: float, spending: str) -> np.ndarray:
    """Cumulative two-sided α spent at information fraction ``t`` (0 < t ≤ 1)."""
    tt = np.asarray(t, dtype=np.float64)
    if spending == "obrien-fleming":
        z = stats.norm.isf(alpha / 2)
        return np.asarray(2 * stats.norm.sf(z / np.sqrt(tt)))
    if spending == "pocock":
        return np.asarray(alpha * np.log1p((math.e - 1) * tt))
    raise ConfigError(f"spending: unknown spending function {spending!r}; "
                      f"allowed: {', '.join(SPENDING)}")


def information_fractions(looks: Sequence[int]) -> np.ndarray:
    """t_k = n_k / n_K after checking the looks (positive integers, strictly increasing)."""
    lk = list(looks)
    if not lk:
        raise ConfigError("looks: needs at least one look")
    if any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 for n in lk):
        raise ConfigError(f"looks: every look must be a positive integer, got {lk}")
    if any(b <= a for a, b in itertools.pairwise(lk)):
        raise ConfigError(f"looks: must be strictly increasing, got {lk}")
    return np.asarray(lk, dtype=np.float64) / float(lk[-1])


def _simpson(lo: float, hi: float, n: int = _GRID) -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(lo, hi, n)
    w = np.full(n, 2.0)
    w[1::2] = 4.0
    w[0] = w[-1] = 1.0
    return x, w * (hi - lo) / (3 * (n - 1))


class _Recursion:
    """The H0 sub-density of B_k on the continuation region, look by look."""

    def __init__(self) -> None:
        self.x = np.zeros(0)  # grid of B_{k-1}
        self.fw = np.zeros(0)  # sub-density × Simpson weight at the grid
        self.t = 0.0

    def exit_prob(self, t: float, b: float) -> float:
        """P(continued to the previous look, |B(t)| ≥ b)."""
        if self.t == 0.0:
            return float(2 * stats.norm.sf(b / math.sqrt(t)))
        s = math.sqrt(t - self.t)
        tails = stats.norm.sf((b - self.x) / s) + stats.norm.cdf((-b - self.x) / s)
        return float(self.fw @ tails)

    def advance(self, t: float, b: float) -> None:
        y, w = _simpson(-b, b)
        if self.t == 0.0:
            f = stats.norm.pdf(y / math.sqrt(t)) / math.sqrt(t)
        else:
            s = math.sqrt(t - self.t)
            f = (stats.norm.pdf((y[:, None] - self.x[None, :]) / s) / s) @ self.fw
        self.x, self.fw, self.t = y, f * w, t


def z_boundaries(looks: Sequence[int], *, alpha: float = 0.05,
                 spending: str = "obrien-fleming") -> np.ndarray:
    """Two-sided |Z| critical values c_k of the Lan–DeMets design (see module doc)."""
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha: must be in (0, 1), got {alpha}")
    t = information_fractions(looks)
    cum = spending_function(t, alpha=alpha, spending=spending)
    spend = np.diff(np.concatenate([[0.0], cum]))
    rec = _Recursion()
    out = np.empty(len(t))
    for k, (tk, ak) in enumerate(zip(t, spend, strict=True)):
        if k == 0:
            c = float(stats.norm.isf(ak / 2))
        else:
            def excess(z: float, tk: float = float(tk), ak: float = float(ak)) -> float:
                return rec.exit_prob(tk, z * math.sqrt(tk)) - ak
            c = float(optimize.brentq(excess, 1e-6, 40.0, xtol=1e-10, rtol=1e-12))
        out[k] = c
        rec.advance(float(tk), c * math.sqrt(tk))
    return out


def crossing_probability(looks: Sequence[int], z: Sequence[float] | np.ndarray) -> float:
    """P_H0(|Z_k| ≥ z_k at some look) for given |Z| boundaries (the same recursion)."""
    t = information_fractions(looks)
    rec = _Recursion()
    total = 0.0
    for tk, zk in zip(t, z, strict=True):
        b = float(zk) * math.sqrt(float(tk))
        total += rec.exit_prob(float(tk), b)
        rec.advance(float(tk), b)
    return total


def group_sequential_boundaries(looks: Sequence[int], alpha: float = 0.05,
                                spending: str = "obrien-fleming") -> list[float]:
    """Per look, the nominal two-sided p threshold: reject at look k when p_k < threshold_k.

    ``looks`` are the complete seed pairs at each look (strictly increasing), information
    fractions t_k = looks[k] / looks[-1]; ``spending`` is ``"obrien-fleming"`` or ``"pocock"``
    (Lan–DeMets spending functions, two-sided symmetric, evaluated at the two-sided ``alpha``).
    Four equally spaced looks, α = 0.05: OBF-type ≈ 0.00009, 0.0055, 0.0214, 0.0409;
    Pocock-type ≈ 0.0183, 0.0174, 0.0181, 0.0184 (module doc: formula and references).
    """
    c = z_boundaries(looks, alpha=alpha, spending=spending)
    return [float(v) for v in 2 * stats.norm.sf(c)]


def stagewise_p(looks: Sequence[int], *, stop_look: int, z: float, alpha: float = 0.05,
                spending: str = "obrien-fleming") -> float:
    """Stage-wise ordering p value of a campaign stopped at look index ``stop_look`` (0-based;
    the last look when it never crossed) with observed |Z| ``z`` at that look: α spent before
    that look plus P_H0(continue to it, |Z| ≥ z there)."""
    c = z_boundaries(looks, alpha=alpha, spending=spending)
    t = information_fractions(looks)
    if not 0 <= stop_look < len(t):
        raise ValueError(f"stop_look {stop_look} outside 0..{len(t) - 1}")
    rec = _Recursion()
    before = 0.0
    for k in range(stop_look):
        before += rec.exit_prob(float(t[k]), float(c[k] * math.sqrt(t[k])))
        rec.advance(float(t[k]), float(c[k] * math.sqrt(t[k])))
    last = rec.exit_prob(float(t[stop_look]), abs(z) * math.sqrt(float(t[stop_look])))
    return float(min(1.0, before + last))


def conditional_power(*, z: float, t: float, c_final: float) -> float:
    """Conditional power under the current trend: P(|B(1)| ≥ c_final | B(t) = z·sqrt(t)) when
    the drift is the one estimated so far (θ̂ = z / sqrt(t)); intermediate looks ignored."""
    if t >= 1.0:
        return float(abs(z) >= c_final)
    b = z * math.sqrt(t)
    mean = b + (z / math.sqrt(t)) * (1.0 - t)
    s = math.sqrt(1.0 - t)
    return float(stats.norm.sf((c_final - mean) / s) + stats.norm.cdf((-c_final - mean) / s))


@attrs.frozen
class Look:
    """One look of a sequential campaign: its data, boundary and decision."""

    index: int
    seed_pairs: int
    information: float
    p_value: float
    z: float  # |Z| equivalent of the p value: Φ⁻¹(1 − p/2)
    threshold: float  # nominal two-sided α of this look
    z_boundary: float
    conditional_power: float
    decision: str  # "reject" | "continue" | "futility" | "accept" (last look, not crossed)


def z_of_p(p: float) -> float:
    return float(stats.norm.isf(p / 2)) if p > 0 else math.inf


def decide(looks: Sequence[int], p_values: Sequence[float], *, alpha: float = 0.05,
           spending: str = "obrien-fleming", futility: str = "none") -> list[Look]:
    """Apply the design to the p values observed so far (one per look done, in order).
    Stops at the first crossing; a NaN p (test undefined) never crosses."""
    if futility not in FUTILITY:
        raise ConfigError(f"futility: unknown rule {futility!r}; allowed: {', '.join(FUTILITY)}")
    c = z_boundaries(looks, alpha=alpha, spending=spending)
    thr = 2 * stats.norm.sf(c)
    t = information_fractions(looks)
    out: list[Look] = []
    for k, p in enumerate(p_values):
        if k >= len(looks):
            raise ValueError(f"{len(p_values)} p values for {len(looks)} looks")
        z = z_of_p(p) if math.isfinite(p) else 0.0
        cp = conditional_power(z=z, t=float(t[k]), c_final=float(c[-1]))
        last = k == len(looks) - 1
        if math.isfinite(p) and p < thr[k]:
            decision = "reject"
        elif last:
            decision = "accept"
        elif futility == "non-binding" and cp < FUTILITY_CONDITIONAL_POWER:
            decision = "futility"
        else:
            decision = "continue"
        out.append(Look(k, int(looks[k]), float(t[k]), float(p), z, float(thr[k]),
                        float(c[k]), cp, decision))
        if decision != "continue":
            break
    return out


def simulate_procedure(p_by_look: np.ndarray, looks: Sequence[int], *, alpha: float = 0.05,
                       spending: str = "obrien-fleming",
                       futility: str = "none") -> dict[str, np.ndarray]:
    """Vectorised ``decide`` over replicates: ``p_by_look`` is ``[replicates, looks]``.
    Returns per replicate ``reject`` (bool) and ``pairs`` (seed pairs used at stopping)."""
    p = np.asarray(p_by_look, dtype=np.float64)
    c = z_boundaries(looks, alpha=alpha, spending=spending)
    thr = 2 * stats.norm.sf(c)
    t = information_fractions(looks)
    cross = np.nan_to_num(p, nan=1.0) < thr[None, :]
    stop = cross.copy()
    if futility == "non-binding":
        with np.errstate(divide="ignore"):
            z = np.where(np.isfinite(p), stats.norm.isf(np.nan_to_num(p, nan=1.0) / 2), 0.0)
        b = z * np.sqrt(t)
        mean = b + (z / np.sqrt(t)) * (1 - t)
        s = np.sqrt(np.maximum(1 - t, 1e-300))
        cp = stats.norm.sf((c[-1] - mean) / s) + stats.norm.cdf((-c[-1] - mean) / s)
        stop[:, :-1] |= cp[:, :-1] < FUTILITY_CONDITIONAL_POWER
    stop[:, -1] = True
    first = np.argmax(stop, axis=1)
    reject = cross[np.arange(len(p)), first]
    pairs = np.asarray(looks)[first]
    return {"reject": reject, "pairs": pairs, "stop_look": first}
