"""Analysis speed: 2 arms x 8 seeds x 23k training generations per run + held-out eval.

Writes a synthetic campaign in the exact run-directory format (90 steps x 16 prompts x 16
completions = 23,040 generations per run, eval of 500 prompts x 4 samples every 10 steps), then
times ``analyze_campaign`` with 20,000 resamples — reading the files included — warm (imports
done) and cold (``tp analyze`` in a fresh process).

    python benchmarks/analysis_speed.py [--root /tmp/tp_analysis_bench] [--repeats 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default="/tmp/tp_analysis_bench")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--resamples", type=int, default=20000)
    args = ap.parse_args()

    from textpolicy.analysis import analyze_campaign, evaluate_significance
    from textpolicy.analysis.campaign import discover_arms
    from textpolicy.analysis.synthetic import SyntheticDesign, write_campaign

    root = Path(args.root)
    design = SyntheticDesign(steps=90, batch_size=16, group_size=16, eval_every=10,
                             eval_prompts=500, eval_samples=4, completion_chars=400)
    if not (root / "manifest.json").exists():
        t0 = time.perf_counter()
        write_campaign(root, arms={"baseline": 0.0, "candidate": 0.05}, seeds=range(8),
                       design=design)
        print(f"wrote campaign in {time.perf_counter() - t0:.1f} s")
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    gens = 8 * design.steps * design.batch_size * design.group_size
    print(f"campaign: 2 arms x 8 seeds, {gens} generations per arm "
          f"({design.steps * design.batch_size * design.group_size} per run), "
          f"{size / 1e6:.0f} MB on disk")

    arms, baseline, _ = discover_arms(root)
    # warm-up: imports (scipy, statsmodels, matplotlib) and page cache
    analyze_campaign(root, num_resamples=200, plots=True)
    for label, kwargs in (("files + tests + power + json/md", {"plots": False}),
                          ("... + 2 PNG plots", {"plots": True})):
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            analyze_campaign(root, num_resamples=args.resamples, **kwargs)  # type: ignore[arg-type]
            times.append(time.perf_counter() - t0)
        print(f"analyze_campaign ({label}), {args.resamples} resamples: "
              f"best {min(times):.3f} s, median {sorted(times)[len(times) // 2]:.3f} s")
    t0 = time.perf_counter()
    report = evaluate_significance({k: list(v) for k, v in arms.items()}, baseline=baseline,
                                   num_resamples=args.resamples)
    t_eval = time.perf_counter() - t0
    print(f"evaluate_significance only (reading included): {t_eval:.3f} s; "
          f"recommendation {report.recommendation}")
    t0 = time.perf_counter()
    cli = "from textpolicy.cli import main; main()"
    subprocess.run([sys.executable, "-c", cli, "analyze", str(root), "--resamples",
                    str(args.resamples), "--json"], check=True, stdout=subprocess.DEVNULL)
    print(f"cold `tp analyze` in a fresh process (imports included): "
          f"{time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
