"""Executor overhead: a 2 arms x 4 seeds local-engine campaign on ``local``, ``ray`` (a local
Ray instance) and ``slurm`` (submitit's local executor), same spec, same parallelism.

Each executor trains the same 8 runs (arithmetic task, tiny model, ``--max-steps`` steps) in a
fresh output directory; the wall time of ``run_spec`` (for ``ray`` including starting the
instance) is printed, and the per-run overhead against ``local``:
(wall − local wall) × parallel / runs.

    OMP_NUM_THREADS=1 python benchmarks/executor_overhead.py [--max-steps 4] [--parallel 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from typing import Any

EXECUTORS: dict[str, dict[str, Any]] = {
    "local": {"name": "local"},
    "ray": {"name": "ray", "options": {"address": "local"}},
    "slurm": {"name": "slurm", "options": {"cluster": "local", "timeout_min": 10}},
}
MODULES = {"ray": "ray", "slurm": "submitit"}


def campaign(executor: dict[str, Any], max_steps: int, parallel: int) -> dict[str, Any]:
    return {"kind": "campaign", "name": "bench", "engine": "local", "task": "arithmetic",
            "seeds": [0, 1, 2, 3], "output": "out", "parallel": parallel,
            "training": {"max_steps": max_steps}, "eval": {"every": 0},
            "analysis": {"enabled": False}, "executor": executor}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--max-steps", type=int, default=4)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--only", nargs="*", choices=list(EXECUTORS), default=list(EXECUTORS),
                    help="executors to time (local is the reference)")
    args = ap.parse_args()

    from textpolicy.runner import Options, run_spec
    from textpolicy.runner.spec import load_spec

    walls: dict[str, float] = {}
    home = os.getcwd()
    for name, table in EXECUTORS.items():
        if name not in args.only:
            continue
        if name in MODULES and importlib.util.find_spec(MODULES[name]) is None:
            print(f"{name}: skipped ({MODULES[name]} is not installed)")
            continue
        with tempfile.TemporaryDirectory(prefix=f"tp_exec_{name}_") as where:
            os.chdir(where)
            try:
                spec = load_spec(campaign(table, args.max_steps, args.parallel))
                t0 = time.perf_counter()
                outcome = run_spec(spec, Options(progress="off"), echo=lambda _line: None)
                walls[name] = time.perf_counter() - t0
            finally:
                os.chdir(home)
        assert outcome.exit_code == 0, f"{name}: exit code {outcome.exit_code}"
        line = f"{name:6s} wall {walls[name]:6.1f} s"
        if name != "local" and "local" in walls:
            per_run = (walls[name] - walls["local"]) * args.parallel / 8
            line += f"   overhead per run {per_run:+5.1f} s"
        print(line, flush=True)


if __name__ == "__main__":
    main()
