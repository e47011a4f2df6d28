"""Wall time of `tp run examples/quickstart.toml` from a fresh cache (target: <= 3 minutes on
2 CPU cores, including the build of the tiny model).

    python benchmarks/quickstart.py [--repeats N] [--keep DIR]

Each repeat runs the command in a subprocess with TEXTPOLICY_CACHE_DIR pointing at an empty
temporary directory (so the tiny model is built from scratch) and a fresh output directory.
Prints the wall time, the CPU time of the child processes (user + system) and the load
average before and after (this machine may be shared: CPU time below wall time means the run
waited for a core).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run(keep: Path | None) -> dict[str, float | int | str]:
    with tempfile.TemporaryDirectory(prefix="tp-quickstart-") as tmp:
        work = Path(keep) if keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TEXTPOLICY_CACHE_DIR": str(work / "cache"),
               "WANDB_MODE": "offline"}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", "from textpolicy.cli import main; main()", "run",
             str(ROOT / "examples" / "quickstart.toml"), "--output", str(work / "out"),
             "--progress", "plain"], env=env, cwd=work, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"quickstart failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return {"wall_s": round(wall, 1),
                "cpu_s": round((after.ru_utime - before.ru_utime)
                               + (after.ru_stime - before.ru_stime), 1),
                "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2),
                "cores": os.cpu_count() or 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the cache and outputs of the (last) run here")
    args = parser.parse_args()
    results = [one_run(args.keep) for _ in range(args.repeats)]
    for r in results:
        print(json.dumps(r))
    walls = [float(r["wall_s"]) for r in results]
    print(f"quickstart wall time: median {statistics.median(walls):.1f} s, min {min(walls):.1f}"
          f" s, max {max(walls):.1f} s over {len(walls)} run(s) (target <= 180 s)")


if __name__ == "__main__":
    main()
