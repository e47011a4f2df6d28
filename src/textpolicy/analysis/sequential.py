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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from scipy import optimize, stats

from textpolicy.errors import AnalysisError, ConfigError

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
    Four equally spaced looks, α = 0.05: OBF-type ≈ 0.00009, 0.0055, 0.0216, 0.0411;
    Pocock-type ≈ 0.0179, 0.0179, 0.0184, 0.0188 (module doc: formula and references).
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


def decide(looks: Sequence[int], p_values: Sequence[float | None], *, alpha: float = 0.05,
           spending: str = "obrien-fleming", futility: str = "none") -> list[Look]:
    """Apply the design to the p values observed so far (one per look done, in order).
    Stops at the first crossing; a NaN or None p (test undefined; a recorded NaN reads back
    from strict JSON as null) never crosses."""
    if futility not in FUTILITY:
        raise ConfigError(f"futility: unknown rule {futility!r}; allowed: {', '.join(FUTILITY)}")
    c = z_boundaries(looks, alpha=alpha, spending=spending)
    thr = 2 * stats.norm.sf(c)
    t = information_fractions(looks)
    out: list[Look] = []
    for k, given in enumerate(p_values):
        p = math.nan if given is None else float(given)
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


def primary_at_look(arms: dict[str, list[Path]], *, baseline: str, alpha: float,
                    num_resamples: int, seed: int) -> dict[str, Any]:
    """The primary test of the analysis on these run directories (one look's data):
    test name, p value (unadjusted; one candidate), Δ and the t statistic with its df."""
    from textpolicy.analysis.report import evaluate_significance

    report = evaluate_significance({k: list(v) for k, v in arms.items()}, baseline=baseline,
                                   alpha=alpha, num_resamples=num_resamples, seed=seed,
                                   tests=("seeds_prompts", "paired_seeds"))
    comp = report.headline
    prim = comp.primary
    p = prim.p_value if prim.p_value is not None else math.nan
    return {"test": prim.name, "p_value": float(p), "delta_pp": prim.delta,
            "t": prim.extra.get("t"), "df": prim.extra.get("df"),
            "n_pairs": comp.data.n_pairs, "endpoint": report.endpoint.label}


def design_record(looks: Sequence[int], *, alpha: float, spending: str,
                  futility: str) -> dict[str, Any]:
    """What manifest.json records of a design (boundaries included)."""
    c = z_boundaries(looks, alpha=alpha, spending=spending)
    t = information_fractions(looks)
    return {"looks": [int(n) for n in looks], "alpha": alpha, "spending": spending,
            "futility": futility, "futility_rule": (
                f"conditional power under the current trend < {FUTILITY_CONDITIONAL_POWER} "
                "(non-binding)" if futility == "non-binding" else None),
            "information": [float(v) for v in t],
            "cumulative_alpha": [float(v) for v in spending_function(
                t, alpha=alpha, spending=spending)],
            "z_boundaries": [float(v) for v in c],
            "thresholds": [float(v) for v in 2 * stats.norm.sf(c)],
            "convention": "Lan–DeMets spending, two-sided symmetric, spending function at the "
                          "two-sided alpha; boundaries applied to the primary test's p value"}


# --------------------------------------------------------------------------- campaign reports
def campaign_state(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``"sequential"`` record of a campaign manifest (None: a fixed design)."""
    seq = manifest.get("sequential")
    return dict(seq) if isinstance(seq, Mapping) and seq.get("design") else None


def used_runs(arms: Mapping[str, list[Path]], manifest: Mapping[str, Any],
              state: Mapping[str, Any]) -> dict[str, list[Path]]:
    """The runs of the seeds the procedure used (the last recorded look); runs of waves it
    never started are left out, so a stopped campaign is analysed on the data it stopped on."""
    looks = state.get("looks") or []
    if not looks:
        raise AnalysisError("sequential campaign: no look is recorded yet; run it with tp run")
    seeds = set(looks[-1]["seeds"])
    out: dict[str, list[Path]] = {}
    entries = {str(a.get("name")): a.get("runs") or [] for a in manifest.get("arms") or []
               if isinstance(a, Mapping)}
    for name, dirs in arms.items():
        runs = entries.get(name, [])
        out[name] = [d for d, r in zip(dirs, runs, strict=False)
                     if isinstance(r, Mapping) and r.get("seed") in seeds]
    return out


def report_markdown(state: Mapping[str, Any]) -> str:
    """Every look (statistic, boundary, nominal α, decision) and the design-adjusted p."""
    d = state["design"]
    lines = []
    if state.get("pooled"):  # the rule first: it is what keeps "run another campaign" valid
        from textpolicy.analysis.pooling import LOOK_RULE

        lines += ["## Pooled campaigns: each campaign is a look", "",
                  f"Rule: {state.get('rule') or LOOK_RULE}", ""]
    lines += ["## Sequential design", "",
             f"Lan–DeMets {d['spending']} alpha-spending, two-sided alpha = {d['alpha']}, looks "
             f"at {d['looks']} seed pairs, futility: {d['futility']}"
             + (f" ({d['futility_rule']})" if d.get("futility_rule") else "") + "."
             + (f" Pooled campaigns, each a look, in this order: {', '.join(d['campaigns'])}."
                if d.get("campaigns") else ""), "",
             "| look | seed pairs | test | Δ (pp) | t | p | boundary (nominal α) | |Z| | "
             "|Z| boundary | decision |", "|---|---|---|---|---|---|---|---|---|---|"]

    def num(v: Any, fmt: str) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    for lk in state.get("looks") or []:
        lines.append(f"| {lk['index'] + 1} | {lk['seed_pairs']} | {lk.get('test', '-')} | "
                     f"{num(lk.get('delta_pp'), '+.2f')} | {num(lk.get('t'), '.3f')} | "
                     f"{num(lk['p_value'], '.4g')} | {lk['threshold']:.4g} | "
                     f"{num(lk['z'], '.3f')} | {lk['z_boundary']:.3f} | {lk['decision']} |")
    final = state.get("final")
    lines.append("")
    if final:
        verdict = {"reject": "the boundary was crossed: the arms differ",
                   "futility": "stopped for futility: no difference shown",
                   "accept": "no boundary crossed by the last look: no difference shown"}
        lines.append(f"Stopped at look {final['look']} ({final['seed_pairs']} seed pairs): "
                     f"{verdict[final['decision']]}. Design-adjusted p (stage-wise ordering) "
                     f"= {final['p_value_stagewise']:.4g}. The fixed-design p values of the "
                     "analysis below ignore the looks; report this one.")
    else:
        lines.append("In progress: no final inference until the procedure stops (tp run "
                     "continues it).")
    return "\n".join(lines) + "\n"


def sequential_recommendation(state: Mapping[str, Any], delta: float | None) -> str:
    """The recommendation a sequential procedure supports: a crossed boundary is significant
    in the direction of Δ; a futility stop or the last look without a crossing is not; a
    procedure that has not stopped supports none yet."""
    final = state.get("final")
    if not final:
        return "sequential_in_progress"
    if final.get("decision") != "reject":
        return "not_significant"
    return "significant_regression" if delta is not None and delta < 0 else \
        "significant_improvement"


def override_verdict(data: Mapping[str, Any], markdown: str, state: Mapping[str, Any]
                     ) -> tuple[dict[str, Any], str]:
    """significance.json/.md of a sequential design: the design decides, the fixed-design
    recommendation (which ignores the looks) is kept beside it, labelled."""
    delta = None
    head = data.get("primary")
    if isinstance(head, Mapping) and head.get("delta") is not None:
        delta = float(head["delta"])
    for comp in [] if delta is not None else data.get("comparisons") or []:
        primary = comp.get("primary") if isinstance(comp, Mapping) else None
        if isinstance(primary, Mapping) and primary.get("delta") is not None:
            delta = float(primary["delta"])
            break
    verdict = sequential_recommendation(state, delta)
    final = state.get("final")
    out = {**data, "recommendation": verdict,
           "fixed_design_recommendation": data.get("recommendation"),
           "sequential": {"status": state.get("status"), "final": final,
                          "design": state.get("design"),
                          "note": "the recommendation is the sequential design's; the "
                                  "fixed-design p values and recommendation ignore the looks"}}
    if final:
        how = (f"stopped at look {final['look']} ({final['seed_pairs']} seed pairs), "
               f"decision {final['decision']}, design-adjusted p (stage-wise) "
               f"{final['p_value_stagewise']:.4g}")
    else:
        how = "in progress: no final inference until the procedure stops"
    banner = [f"**Sequential design — recommendation: `{verdict}`** ({how}; "
              "sequential.md has every look). Everything below is the fixed-design analysis "
              "of the seeds used: its p values and recommendation ignore the looks and are "
              "descriptive only.", ""]
    lines = markdown.splitlines()
    lines = [line.replace("**Recommendation", "**Fixed-design recommendation (ignores the "
                          "looks)", 1) if line.startswith("**Recommendation") else line
             for line in lines]
    return out, "\n".join(banner + lines) + "\n"


def write_report(state: Mapping[str, Any], out_dir: Path, *, plots: bool = True
                 ) -> dict[str, Path]:
    """sequential.json (strict JSON: an undefined p is null), sequential.md and (``plots``)
    sequential.png into ``out_dir``."""
    from textpolicy import strictjson
    from textpolicy.analysis.files import write_texts

    written = write_texts(out_dir, {
        "sequential.json": strictjson.dumps(state, indent=2, default=str) + "\n",
        "sequential.md": report_markdown(state)})
    if plots:
        written["sequential.png"] = plot(state, out_dir / "sequential.png")
    return written


def plot(state: Mapping[str, Any], path: Path) -> Path:
    """|Z| of the primary test (from its p) against seed pairs, with the design's boundary."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    d = state["design"]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(d["looks"], d["z_boundaries"], "o--", color="tab:red",
            label=f"efficacy boundary ({d['spending']})")
    looks = state.get("looks") or []
    if looks:
        ax.plot([lk["seed_pairs"] for lk in looks],
                [lk["z"] if math.isfinite(lk["z"]) else np.nan for lk in looks], "s-",
                color="tab:blue", label="primary test |Z| = Φ⁻¹(1 − p/2)")
    ax.set_xlabel("seed pairs")
    ax.set_ylabel("|Z|")
    ax.set_xticks(d["looks"])
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title("Sequential campaign: statistic and boundaries")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def campaign_dir_state(campaign_dir: str | Path) -> dict[str, Any] | None:
    """``campaign_state`` of ``<campaign_dir>/manifest.json`` (None: none or not sequential)."""
    from textpolicy.analysis.jsonl import read_json

    path = Path(campaign_dir) / "manifest.json"
    if not path.is_file():
        return None
    data = read_json(path)
    return campaign_state(data) if isinstance(data, Mapping) else None


# --------------------------------------------------------------------------- planning
def simulate_look_p(model: Any, *, looks: Sequence[int], m: int, k: int, num_sims: int,
                    rng: np.random.Generator, effect: bool) -> np.ndarray:
    """``[num_sims, looks]`` primary-test p values (``seed_prompt_p`` on the first n_k seed
    pairs × m prompts) of campaigns of a ``power.LogitModel`` (the ``tp power`` model)."""
    from textpolicy.analysis.methods import seed_prompt_p

    s = int(looks[-1])
    mu = model.mu
    dl = model.delta_logit if effect else 0.0
    sd_shared = model.sigma_seed * math.sqrt(model.rho)
    sd_run = model.sigma_seed * math.sqrt(1 - model.rho)
    block = max(1, 2_000_000 // (s * 2 * m))
    out = []
    for start in range(0, num_sims, block):
        b = min(block, num_sims - start)
        prompt = rng.normal(0, model.sigma_prompt, size=(b, 1, 1, m))
        shared = rng.normal(0, sd_shared, size=(b, s, 1, 1))
        run = rng.normal(0, sd_run, size=(b, s, 2, 1))
        inter = rng.normal(0, model.sigma_int, size=(b, s, 2, m))
        arm = np.array([0.0, dl]).reshape(1, 1, 2, 1)
        p = 1.0 / (1.0 + np.exp(-(mu + arm + shared + run + prompt + inter)))
        acc = rng.binomial(k, p) / k  # [b, S, 2, m]
        d = acc[:, :, 1] - acc[:, :, 0]
        out.append(np.stack([seed_prompt_p(d[:, :n]) for n in looks], axis=1))
    return np.concatenate(out)


def plan_sequential(model: Any, *, looks: Sequence[int], m: int, k: int, alpha: float = 0.05,
                    spending: str = "obrien-fleming", futility: str = "none",
                    num_sims: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Expected and maximum seed pairs under H0 and at the model's effect, type-I error and
    power of the design (simulated with the primary test), and the fixed design of the same
    power (paired-t planning on the model's Var(D_s))."""
    from textpolicy.analysis import power as pw

    if num_sims < 100:
        raise ConfigError(f"--sims: a sequential plan needs >= 100 simulations, got {num_sims}")
    design = design_record(looks, alpha=alpha, spending=spending, futility=futility)
    rows: dict[str, dict[str, Any]] = {}
    for label, effect in (("null", False), ("effect", True)):
        p = simulate_look_p(model, looks=looks, m=m, k=k, num_sims=num_sims,
                            rng=np.random.default_rng([seed, int(effect)]), effect=effect)
        r = simulate_procedure(p, looks, alpha=alpha, spending=spending, futility=futility)
        stops = np.bincount(r["stop_look"], minlength=len(looks)) / num_sims
        rows[label] = {"rejection_rate": float(r["reject"].mean()),
                       "expected_seed_pairs": float(r["pairs"].mean()),
                       "max_seed_pairs": int(looks[-1]),
                       "stop_probability_by_look": [float(v) for v in stops]}
    # the simulated power, kept inside (0, 1) by half a simulation (all or none rejected)
    seq_power = min(max(rows["effect"]["rejection_rate"], 0.5 / num_sims), 1 - 0.5 / num_sims)
    sd_d = math.sqrt(model.closed_form_var_d(k, m))
    fixed = pw.t_seeds(sd_d, model.delta, alpha=alpha, power=max(seq_power, alpha))
    return {"design": design, "eval_prompts": m, "eval_samples": k, "num_sims": num_sims,
            "seed": seed, "delta_pp": 100 * model.delta, "null": rows["null"],
            "effect": rows["effect"], "fixed_design_seed_pairs_same_power": fixed,
            "sd_pair_diff_pp": 100 * sd_d}
