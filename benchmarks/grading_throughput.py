"""Grading throughput and latency of the MATH grader (``textpolicy.grading``).

Usage (from the repository root, with ../shared/data/math present)::

    python benchmarks/grading_throughput.py                 # 800 real responses + variants
    python benchmarks/grading_throughput.py --problems 5000 --json out.json

Measures, for the 800 real Qwen2.5-Math responses (100 MATH problems × 8):
  * batch throughput (answers/s) with a pool of 1 and of 2 worker processes;
  * per-call latency of ``MathGrader.grade`` one answer at a time (p50/p90/p99/max);
and for the equivalence variants of the MATH test golds (``--problems`` of them, fixed seed):
  * batch throughput, acceptance of equivalent / rejection of non-equivalent variants, and the
    latency distribution of the math-verify calls inside the workers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from textpolicy.grading import GradeRequest, MathGrader, extract_boxed
from textpolicy.grading.variants import generate_variants, policy_variants

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "math"
LIST_HINT = re.compile(r"\bcommas\b|comma-separated", re.I)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _dist(values: list[float]) -> dict[str, float]:
    a = np.asarray(values) * 1000.0
    return {"mean_ms": float(a.mean()), "p50_ms": float(np.percentile(a, 50)),
            "p90_ms": float(np.percentile(a, 90)), "p99_ms": float(np.percentile(a, 99)),
            "max_ms": float(a.max())}


def real_requests() -> list[GradeRequest]:
    out: list[GradeRequest] = []
    for row in _jsonl(DATA / "qwen25math_cot_100.jsonl"):
        is_list = bool(LIST_HINT.search(row["question"]))
        out.extend(GradeRequest(extract_boxed(r) or "", row["answer"], is_list)
                   for r in row["code"])
    return out


def bench_real(workers: int) -> dict[str, Any]:
    reqs = real_requests()
    with MathGrader(workers=workers) as g:
        g.grade_many(reqs[:1])  # start the workers (not timed)
        t = time.perf_counter()
        results = g.grade_many(reqs)  # first sight of these answers in fresh workers
        cold_s = time.perf_counter() - t
        t = time.perf_counter()
        g.grade_many(reqs)  # warm: parser code paths compiled, gold parses cached
        batch_s = time.perf_counter() - t
        lat = []
        for r in reqs:
            t = time.perf_counter()
            g.grade_many([r])
            lat.append(time.perf_counter() - t)
        counts = dict(g.counts)
    return {"workers": workers, "answers": len(reqs), "accepted": sum(r.correct for r in results),
            "timeouts": sum(r.timed_out for r in results), "cold_batch_s": cold_s,
            "cold_answers_per_s": len(reqs) / cold_s, "batch_s": batch_s,
            "answers_per_s": len(reqs) / batch_s, "per_call": _dist(lat), "methods": counts}


def bench_variants(problems: int, workers: int) -> dict[str, Any]:
    rows = _jsonl(DATA / "math_test.jsonl")
    pick = np.sort(np.random.default_rng(2024).choice(len(rows), min(problems, len(rows)),
                                                       replace=False))
    golds, flags = [], []
    for i in pick:
        gold = extract_boxed(rows[i]["solution"])
        if gold:
            golds.append(gold)
            flags.append(bool(LIST_HINT.search(rows[i]["problem"])))
    variants = generate_variants(golds, seed=0, list_flags=flags)
    reqs = [GradeRequest(v.given, v.gold, v.gold_is_list) for v in variants]
    with MathGrader(workers=workers) as g:
        g.grade_many(reqs[:2])
        pool = g._get_pool()
        seconds: list[float] = []
        original = pool.verify_many

        def timed(pairs: Any) -> Any:
            outs = original(pairs)
            seconds.extend(o.seconds for o in outs)
            return outs

        pool.__dict__["verify_many"] = timed  # instance override: time each call
        t = time.perf_counter()
        results = g.grade_many(reqs)
        batch_s = time.perf_counter() - t
        counts = dict(g.counts)
    policy = [(kind, given, gold, verdict) for gold in golds
              for kind, given, verdict in policy_variants(gold)]
    with MathGrader(workers=workers) as g2:
        policy_results = g2.grade_many([GradeRequest(given, gold)
                                        for _k, given, gold, _v in policy])
    by_kind: dict[str, list[bool]] = {}
    for (kind, _given, _gold, verdict), res in zip(policy, policy_results, strict=True):
        by_kind.setdefault(kind, []).append(res.correct == verdict)
    eq = [r.correct for v, r in zip(variants, results, strict=True) if v.equivalent]
    ne = [not r.correct for v, r in zip(variants, results, strict=True) if not v.equivalent]
    return {"problems": len(golds), "variants": len(variants), "equivalent": len(eq),
            "non_equivalent": len(ne), "equivalent_accepted": float(np.mean(eq)),
            "non_equivalent_rejected": float(np.mean(ne)),
            "wrong_rejects": len(eq) - sum(eq), "wrong_accepts": len(ne) - sum(ne),
            "timeouts": sum(r.timed_out for r in results), "batch_s": batch_s,
            "answers_per_s": len(reqs) / batch_s, "math_verify_calls": len(seconds),
            "math_verify_latency": _dist(seconds) if seconds else {}, "methods": counts,
            "policy_cases": {k: {"n": len(v), "as_policy": sum(v)} for k, v in by_kind.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=1500,
                    help="MATH test problems whose golds get variants (5000 = all, 0 = skip)")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"needs {DATA}")
    report = {"cpus": os.cpu_count(), "load_avg_start": os.getloadavg(),
              "real_1_worker": bench_real(1), "real_2_workers": bench_real(2),
              "variants_2_workers": (bench_variants(args.problems, 2) if args.problems > 0
                                     else None),
              "load_avg_end": os.getloadavg()}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
