"""``tp analyze``: significance report of finished runs (campaign dir or explicit run dirs)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import click

from textpolicy import strictjson
from textpolicy.cli.params import finite
from textpolicy.errors import ConfigError
from textpolicy.runner.spec import MAX_RESAMPLES
from textpolicy.training.seeds import MAX_SEED


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("campaign_dirs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--baseline", "baseline_dirs", multiple=True, type=click.Path(path_type=Path),
              help="Baseline run directory (repeat for each seed).")
@click.option("--candidate", "candidate_dirs", multiple=True, type=click.Path(path_type=Path),
              help="Candidate run directory (repeat for each seed).")
@click.option("--alpha", type=finite(), default=None, show_default="manifest or 0.05",
              help="Significance level (two-sided).")
@click.option("--resamples", type=click.IntRange(min=1, max=MAX_RESAMPLES), default=None,
              show_default="manifest or 20000",
              help="Bootstrap/permutation resamples.")
@click.option("--seed", type=click.IntRange(min=0, max=MAX_SEED), default=None,
              show_default="manifest or 0",
              help="Seed of every resampling procedure.")
@click.option("--mde", type=finite(), default=None,
              help="Minimum detectable effect (pp) for the power section.")
@click.option("--margin", "margin_pp", type=float, default=None,
              show_default="manifest or none",
              help="Non-inferiority/equivalence margin (pp): adds a one-sided non-inferiority "
                   "test and a TOST equivalence test.")
@click.option("--spending", type=click.Choice(["obrien-fleming", "pocock"]), default=None,
              metavar="NAME", show_default="obrien-fleming",
              help="Pooled campaigns only: the Lan–DeMets alpha-spending function of the "
                   "looks, obrien-fleming or pocock (recorded in sequential.json).")
@click.option("--unpaired", is_flag=True, help="Do not pair runs by seed (Welch t primary).")
@click.option("--json", "as_json", is_flag=True, help="Print significance.json to stdout.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Write the analysis files here (default: CAMPAIGN_DIR/analysis).")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@click.option("--partial", is_flag=True,
              help="Analyse only the runs that reach the planned endpoint (the report says "
                   "which were dropped and marks the recommendation partial). Without it, "
                   "incomplete runs stop the analysis (exit 3).")
def analyze(campaign_dirs: tuple[Path, ...], baseline_dirs: tuple[Path, ...],
            candidate_dirs: tuple[Path, ...], alpha: float | None, resamples: int | None,
            seed: int | None, mde: float | None, margin_pp: float | None,
            spending: str | None, unpaired: bool, as_json: bool, out_dir: Path | None,
            no_plots: bool, partial: bool) -> None:
    """Seed-level significance analysis of an A/B campaign.

    Several campaign directories of the same arms and settings are pooled, each campaign a
    look of a group-sequential design (docs/statistics.md, "Pooling campaigns"). A campaign
    added after looking at an earlier result counts as a look: give the campaigns in the
    order they were run; the pooled result is judged at its look's boundary (--spending),
    never at the fixed-design alpha, and is valid only if no earlier campaign was itself
    declared significant at the fixed alpha. Mismatched settings are refused, one line each.

    \b
    tp analyze results/my_campaign
    tp analyze results/part1 results/part2 --out pooled/
    tp analyze --baseline runs/grpo_s0 --baseline runs/grpo_s1 \\
               --candidate runs/full_s0 --candidate runs/full_s1 --out report/
    """
    from textpolicy.analysis import (
        analyze_campaign,
        build_sepa_significance_markdown,
        evaluate_significance,
        write_outputs,
    )
    from textpolicy.analysis.sequential import campaign_dir_state as sequential_state
    from textpolicy.analysis.sequential import report_markdown as sequential_markdown

    paired = False if unpaired else None
    campaign_dir = campaign_dirs[0] if len(campaign_dirs) == 1 else None
    seq: dict[str, Any] | None = None
    written_to: Path | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if len(campaign_dirs) > 1:  # pooled: each campaign a look (analysis.pooling)
            if baseline_dirs or candidate_dirs:
                raise ConfigError("give either CAMPAIGN_DIRs or --baseline/--candidate, not both")
            from textpolicy.analysis.pooling import analyze_pooled

            report, seq = analyze_pooled(
                campaign_dirs, alpha=0.05 if alpha is None else alpha,
                num_resamples=20000 if resamples is None else resamples,
                seed=0 if seed is None else seed, spending=spending or "obrien-fleming",
                mde=mde, paired=paired, partial=partial, margin_pp=margin_pp)
            written_to = out_dir
            if out_dir is not None:
                from textpolicy.analysis.sequential import write_report

                write_outputs(report, out_dir, plots=not no_plots, sequential_state=seq)
                write_report(seq, out_dir, plots=not no_plots)
        elif spending is not None:
            raise ConfigError("--spending: only for pooled campaigns (two or more "
                              "CAMPAIGN_DIRs); a [sequential] campaign records its own")
        elif campaign_dir is not None:
            if baseline_dirs or candidate_dirs:
                raise ConfigError("give either CAMPAIGN_DIR or --baseline/--candidate, not both")
            report = analyze_campaign(campaign_dir, alpha=alpha, num_resamples=resamples,
                                      seed=seed, mde=mde, out_dir=out_dir, paired=paired,
                                      plots=not no_plots, partial=partial,
                                      margin_pp=margin_pp)
            written_to = out_dir or campaign_dir / "analysis"
        else:
            if not baseline_dirs or not candidate_dirs:
                raise ConfigError("give CAMPAIGN_DIR, or at least one --baseline and one "
                                  "--candidate run directory")
            report = evaluate_significance(
                baseline_run_dirs=list(baseline_dirs), candidate_run_dirs=list(candidate_dirs),
                alpha=0.05 if alpha is None else alpha,
                num_resamples=20000 if resamples is None else resamples,
                seed=0 if seed is None else seed, mde=mde, paired=paired, partial=partial,
                margin_pp=margin_pp)
            written_to = None
            if out_dir is not None:
                write_outputs(report, out_dir, plots=not no_plots)
                written_to = out_dir
    for message in dict.fromkeys(str(w.message) for w in caught):
        click.echo(f"Warning: {message}", err=True)
    if campaign_dir is not None:
        seq = sequential_state(campaign_dir)
    if as_json:
        data = report.to_dict()
        if seq is not None:
            data["sequential"] = seq
        click.echo(strictjson.dumps(data, indent=2))
    else:
        if seq is not None:  # every look and the design-adjusted p come first
            click.echo(sequential_markdown(seq))
        click.echo(build_sepa_significance_markdown(report))
    if written_to is not None:
        click.echo(f"analysis written to {written_to}", err=True)
    sys.stdout.flush()
