"""``kind = "pool"``: the pooled analysis of finished campaigns (``tp run pool.toml``).

The spec names the campaigns in the order they were run (``[pool] campaigns``), the
alpha-spending function (``[pool] spending``) and the analysis settings (``[analysis]``);
``tp run`` writes what ``tp analyze A B ... --spending S --out OUTPUT`` writes — the pooled
significance report, sequential.json/.md/.png (every look, the design-adjusted p) — plus a
manifest.json recording the spec, the campaigns, the design and the outcome. The analysis is
computed before the output directory is touched, so a failed analysis writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from textpolicy.errors import ConfigError
from textpolicy.runner import manifest as mf
from textpolicy.runner.spec import POOL_KEYS, Spec
from textpolicy.training.dirlock import DirLock

EXIT_OK = 0


def run_pool(spec: Spec, *, execute: bool, echo: Callable[..., Any], hint: str) -> int:
    """Analyse the spec's campaigns as one and write the report into its output."""
    from textpolicy.analysis import build_sepa_significance_markdown, write_outputs
    from textpolicy.analysis.pooling import analyze_pooled
    from textpolicy.analysis.sequential import report_markdown, write_report

    assert spec.pool is not None  # specload requires [pool] for kind "pool"
    root = spec.output_dir()
    pool, a = spec.pool, spec.analysis
    _check_output(root, pool.campaigns)
    if not execute:  # the spec (and that the campaigns pool) was checked when it was loaded
        echo(f"Pool of {len(pool.campaigns)} campaigns, each a look ({pool.spending} "
             f"alpha-spending, alpha = {a.alpha}): {', '.join(pool.campaigns)}; nothing "
             f"written{hint}")
        return EXIT_OK
    report, seq = analyze_pooled(pool.campaigns, alpha=a.alpha, num_resamples=a.resamples,
                                 seed=a.seed, spending=pool.spending, mde=a.mde,
                                 margin_pp=a.margin_pp)
    with DirLock(root, what="output directory"):
        write_outputs(report, root, sequential_state=seq)
        write_report(seq, root)
        mf.write_json(root / "manifest.json", {
            "kind": "pool", "name": spec.name, "campaigns": list(pool.campaigns),
            "spending": pool.spending, "alpha": a.alpha, "resamples": a.resamples,
            "analysis_seed": a.seed, "rule": seq["rule"], "status": seq["status"],
            "stopped_at_look": seq["stopped_at_look"], "final": seq["final"],
            "design": seq["design"], "versions": mf.versions(),
            "spec": {k: v for k, v in spec.to_dict().items() if k in POOL_KEYS}})
    echo(report_markdown(seq))
    echo(build_sepa_significance_markdown(report))
    echo(f"pooled analysis written to {root}")
    return EXIT_OK


def _check_output(root: Path, campaigns: Sequence[str]) -> None:
    """``ConfigError`` (one line) for an output that would overwrite what a pool must not:
    one of its campaigns, or a directory whose manifest.json is not an earlier pool's."""
    from textpolicy.analysis.jsonl import read_json

    here = root.resolve()
    for campaign in campaigns:
        if Path(campaign).resolve() == here:
            raise ConfigError(f"output: {str(root)!r}: is the pooled campaign {campaign!r}; "
                              "allowed: a directory of its own")
    manifest = root / "manifest.json"
    if manifest.is_file():
        data = read_json(manifest)
        kind = data.get("kind") if isinstance(data, Mapping) else None
        if kind != "pool":
            raise ConfigError(f"output: {str(root)!r}: holds the manifest.json of a "
                              f"{kind or 'non-pool'} output, which a pool would overwrite; "
                              "allowed: a new directory or an earlier pool's output")
