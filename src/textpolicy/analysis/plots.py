"""PNG plots (matplotlib, Agg backend): learning curves per arm with seed bands, forest plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from textpolicy.analysis.report import SignificanceReport


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def endpoint_words(report: SignificanceReport) -> str:
    """The endpoint as a phrase ("held-out pass@1 at step 40, 500 test prompts")."""
    ep = report.endpoint
    if ep.kind == "heldout":
        return f"held-out pass@1 at step {ep.step}, {len(ep.prompt_ids)} test prompts"
    return f"on-policy training correctness over {len(ep.common_steps)} steps"


def learning_curves(report: SignificanceReport, path: Path) -> Path:
    """Mean accuracy per arm over steps with a band = the 95 % t confidence interval of the
    mean over that arm's seeds (runs) at each step (held-out when present)."""
    plt = _pyplot()
    fig = learning_figure(report)
    fig.savefig(path)
    plt.close(fig)
    return path


def learning_figure(report: SignificanceReport) -> Any:
    """The figure ``learning_curves`` saves (a matplotlib Figure)."""
    from scipy import stats

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    for name, runs in report.runs.items():
        curves = [report.values[r] for r in runs]
        steps = curves[0].curve_steps
        if any(len(c.curve_steps) != len(steps) or (c.curve_steps != steps).any()
               for c in curves):
            common = set(steps.tolist())
            for c in curves[1:]:
                common &= set(c.curve_steps.tolist())
            steps = np.array(sorted(common))
        ys = np.stack([c.curve[np.isin(c.curve_steps, steps)] for c in curves]) * 100
        mean = ys.mean(axis=0)
        (line,) = ax.plot(steps, mean, label=f"{name} ({len(runs)} seeds)", lw=1.8)
        if len(runs) > 1:
            n = len(runs)
            half = (stats.t.ppf(0.975, n - 1) * ys.std(axis=0, ddof=1) / np.sqrt(n))
            ax.fill_between(steps, mean - half, mean + half, alpha=0.2,
                            color=line.get_color(), lw=0)
    kind = "held-out pass@1" if report.endpoint.kind == "heldout" else \
        "training correctness (on-policy)"
    ax.set_xlabel("step")
    ax.set_ylabel(f"{kind} (%)")
    ax.set_title("Learning curves (band: 95% t CI of the mean over seeds, per step)")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def forest_plot(report: SignificanceReport, path: Path) -> Path:
    """Every test's effect and CI (pp) per candidate; the primary first, in bold."""
    plt = _pyplot()
    fig = forest_figure(report)
    fig.savefig(path)
    plt.close(fig)
    return path


def forest_figure(report: SignificanceReport) -> Any:
    """The figure ``forest_plot`` saves (a matplotlib Figure)."""
    plt = _pyplot()
    rows: list[tuple[str, float, float | None, float | None, bool]] = []
    for c in report.comparisons:
        rows.append((f"{c.candidate}: {c.primary.name} (primary, {100 * c.ci_level:.4g}% CI)",
                     c.primary.delta or 0.0, c.primary.ci_low, c.primary.ci_high, True))
        for t in c.tests:
            if t.name == c.primary.name or t.delta is None or t.unit != "pp":
                continue
            rows.append((f"{c.candidate}: {t.name} [{t.level}]", t.delta, t.ci_low,
                         t.ci_high, False))
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.4), dpi=100)
    y = np.arange(len(rows))[::-1]
    for yi, (_label, delta, lo, hi, primary) in zip(y, rows, strict=True):
        color = "C0" if primary else "0.45"
        if lo is not None and hi is not None:
            ax.plot([lo, hi], [yi, yi], color=color, lw=2.5 if primary else 1.5)
        ax.plot([delta], [yi], "o", color=color, ms=7 if primary else 5)
    ax.axvline(0.0, color="k", lw=0.8, ls="--")
    ax.set_yticks(y)
    ax.set_yticklabels([r[0] for r in rows], fontsize=8)
    ax.set_xlabel(f"candidate − baseline (percentage points); other rows: "
                  f"{100 * (1 - report.alpha):g}% CIs")
    ax.set_title(f"Candidate − baseline: {endpoint_words(report)}\n"
                 "(generation-level rows: pooled training data, pseudo-replicated)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
