"""Client-side overhead of the ``tinker`` engine, and parallel sweeps, against ``tp serve``.

``tp serve`` runs the tiny model in a separate process with ``--delay-ms`` of injected latency
per HTTP request (a stand-in for the network and Tinker's queue). Two measurements:

1. Client overhead per step: CPU time of the *client* process (``time.process_time``, all its
   threads, so the SDK's event-loop thread too) divided by the step's wall time, for
   (a) the engine primitives alone (sampling of B prompts + forward_backward + optim_step:
   the SDK and textpolicy's wrapper) and (b) the whole training loop (``run_training``:
   also grading, advantages, datums, run files). The target is <= 2 % of step time for (a);
   (b) also includes textpolicy's own per-step work.
2. Eight probes (4 LRs x 2 algorithms) at once versus one probe alone: (a) as eight
   ``run_training`` threads of this process started together (the engine and server side of
   parallelism), (b) as ``tp sweep --parallel 8`` versus ``--parallel 1`` (whole commands,
   process start-up included). With latency dominating, 8 parallel probes should take about
   as long as one.

Usage::

    python benchmarks/tinker_overhead.py                    # both parts, 100 ms latency
    python benchmarks/tinker_overhead.py --delay-ms 50 --steps 10 --skip-sweep

It is a measurement of textpolicy's client against a local stand-in; it says nothing about
Tinker's own speed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

TP = str(Path(sys.executable).with_name("tp"))


class Serve:
    def __init__(self, delay_ms: float, state_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [TP, "serve", "--port", "0", "--delay-ms", str(delay_ms), "--state-dir",
             str(state_dir)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on " not in line:
            raise RuntimeError(f"tp serve did not start: {line!r}")
        self.url = line.split("listening on ")[1].split()[0]
        threading.Thread(target=lambda: [None for _ in self.proc.stdout or ()],
                         daemon=True).start()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def _summary(walls: list[float], cpus: list[float]) -> dict[str, float]:
    shares = [c / w for c, w in zip(cpus, walls, strict=True)]
    return {"steps": len(walls), "step_wall_s": statistics.median(walls),
            "client_cpu_s": statistics.median(cpus),
            "client_cpu_share": statistics.median(shares)}


def engine_primitives(url: str, steps: int, batch: int, group: int) -> dict[str, float]:
    """Per step: a sampling client, B sample requests (all submitted before any is awaited),
    forward_backward + optim_step back to back."""
    import numpy as np

    from textpolicy.engines.base import AdamParams, SamplingParams, build_rl_datum
    from textpolicy.engines.local import TINY_MODEL
    from textpolicy.engines.tinker_engine import TinkerEngine

    engine = TinkerEngine(base_url=url)
    tc = engine.create_training_client(TINY_MODEL, lora_rank=None, seed=0)
    tok = tc.get_tokenizer()
    eos = (int(tok.eos_token_id),)
    prompts = [[tok.bos_token_id, *tok.encode(f"{a}+{a + 3}=", add_special_tokens=False)]
               for a in range(batch)]
    walls: list[float] = []
    cpus: list[float] = []
    for step in range(steps + 1):
        w0, c0 = time.perf_counter(), time.process_time()
        sampler = tc.sampling_client(f"step{step}")
        futures = [sampler.sample(p, group, SamplingParams(max_tokens=4, temperature=1.0,
                                                           seed=step * 1000 + i,
                                                           stop_token_ids=eos))
                   for i, p in enumerate(prompts)]
        groups = [f.result() for f in futures]
        datums = [build_rl_datum(p, s.tokens, s.logprobs, np.full(len(s.tokens), 0.5 - j % 2))
                  for p, seqs in zip(prompts, groups, strict=True)
                  for j, s in enumerate(seqs) if s.tokens]
        fb = tc.forward_backward(datums, "importance_sampling")
        opt = tc.optim_step(AdamParams(learning_rate=1e-4))
        fb.result()
        opt.result()
        if step:  # step 0 warms up (first sampler, imports)
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
    tc.close()
    engine.close()
    return _summary(walls, cpus)


def training_loop(url: str, steps: int, batch: int, group: int, root: Path) -> dict[str, float]:
    from textpolicy.training import make_config, run_training

    marks: list[tuple[float, float]] = []
    config = make_config(log_dir=str(root / "loop"), task="arithmetic", engine="tinker",
                         engine_options={"base_url": url}, max_steps=steps + 1,
                         batch_size=batch, group_size=group, eval_every=0, save_every=0,
                         seed=0)
    run_training(config, on_step=lambda _row: marks.append(
        (time.perf_counter(), time.process_time())), progress="off")
    walls = [b[0] - a[0] for a, b in itertools.pairwise(marks)]
    cpus = [b[1] - a[1] for a, b in itertools.pairwise(marks)]
    return _summary(walls, cpus)


def threaded_probes(url: str, root: Path, probe_steps: int, n: int) -> dict[str, float]:
    """``n`` probes (the sweep's LRs x algorithms) as run_training calls in threads of this
    process, all started at once (what the runner's thread slots do once warm), versus one
    probe alone. Imports are warm (the measurements above ran first)."""
    from textpolicy.training import make_config, run_training

    lrs = [3e-4, 1e-3, 3e-3, 1e-2]
    algorithms = ["grpo", "full"]

    def probe(i: int, name: str) -> None:
        config = make_config(
            log_dir=str(root / name / f"p{i}"), task="arithmetic", engine="tinker",
            engine_options={"base_url": url}, max_steps=probe_steps, batch_size=4,
            group_size=8, eval_every=0, save_every=0, seed=0, lr=lrs[i % 4],
            pipeline=algorithms[i // 4 % 2])
        run_training(config, progress="off")

    t0 = time.perf_counter()
    probe(0, "single")
    one = time.perf_counter() - t0
    threads = [threading.Thread(target=probe, args=(i, "threads")) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"one_probe_s": one, f"threads{n}_s": time.perf_counter() - t0}


def sweep(url: str, root: Path, parallel: int, lrs: str, algorithms: str,
          probe_steps: int, name: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [TP, "sweep", "--engine", "tinker", "--base-url", url, "--task", "arithmetic",
         "--lr-values", lrs, "--algorithms", algorithms, "--probe-steps", str(probe_steps),
         "--batch-size", "4", "--group-size", "8", "--eval-every", "0", "--seeds", "0",
         "--parallel", str(parallel), "--sweep-root", str(root / name), "--progress", "off"],
        check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay-ms", type=float, default=100.0)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--probe-steps", type=int, default=5)
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args()
    os.environ.setdefault("TINKER_API_KEY", "tml-local")
    os.environ.setdefault("TINKER_TELEMETRY", "0")

    results: dict[str, Any] = {"delay_ms": args.delay_ms, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        serve = Serve(args.delay_ms, root / "serve")
        try:
            results["engine_primitives"] = engine_primitives(serve.url, args.steps, args.batch,
                                                             args.group)
            print("engine primitives:", json.dumps(results["engine_primitives"]), flush=True)
            results["training_loop"] = training_loop(serve.url, args.steps, args.batch,
                                                     args.group, root)
            print("training loop:", json.dumps(results["training_loop"]), flush=True)
            if not args.skip_sweep:
                results["threaded_probes"] = threaded_probes(serve.url, root,
                                                             args.probe_steps, 8)
                print("threaded probes:", json.dumps(results["threaded_probes"]), flush=True)
                lrs, algorithms = "3e-4,1e-3,3e-3,1e-2", "grpo,full"
                one = sweep(serve.url, root, 1, "1e-3", "grpo", args.probe_steps, "one")
                par = sweep(serve.url, root, 8, lrs, algorithms, args.probe_steps, "par8")
                seq = sweep(serve.url, root, 1, lrs, algorithms, args.probe_steps, "seq")
                results["sweep"] = {"probe_steps": args.probe_steps, "one_probe_s": one,
                                    "parallel8_s": par, "sequential_s": seq}
                print("sweep:", json.dumps(results["sweep"]), flush=True)
        finally:
            serve.stop()
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
