"""Benchmark: the local engine's step time (sampling, training).

CPU (default): the built-in tiny model, one RL step of B=4 prompts × G=8 samples × ≤4 tokens
(sampling = one batched decode, training = forward_backward(importance_sampling) + optim_step),
median over repeated steps; plus sampling cost against batch size and plain
``transformers.generate`` on the same sequences.

GPU (``--gpu``): a randomly initialised model with Qwen3-0.6B's shape (Qwen3Config with its
dimensions, vocab 151,936; no weights are downloaded), bf16, LoRA rank 16: sampled tokens/s at
64 prompts × 16 samples × 512 new tokens through the engine's sampler and through
``model.generate`` (same model, same batch size, every sampling parameter explicit), and trained
tokens/s for forward_backward + optim_step on all those sequences.

    python benchmarks/engine_step.py                 # CPU, tiny model
    python benchmarks/engine_step.py --gpu --out results/engine_step_gpu.json
    python benchmarks/engine_step.py --gpu --shape small --prompts 4 --samples 2 --tokens 16
                                                     # dry run of the GPU path on a CPU
Figures are recorded in docs/performance.md ("Engine step time").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _versions() -> dict[str, str]:
    import torch
    import transformers

    info = {"torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "machine": platform.machine()}
    try:
        import peft

        info["peft"] = peft.__version__
    except ImportError:  # pragma: no cover
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


# -- CPU: the tiny model ----------------------------------------------------------------------
def bench_cpu(steps: int, warmup: int) -> dict[str, Any]:
    import numpy as np
    import torch

    from textpolicy.engines.base import AdamParams, SamplingParams, build_rl_datum
    from textpolicy.engines.local import TINY_MODEL, LocalEngine
    from textpolicy.tasks.arithmetic import ArithmeticTask

    torch.set_num_threads(1)
    task = ArithmeticTask()
    engine = LocalEngine(device="cpu")
    t0 = time.perf_counter()
    tc = engine.create_training_client(TINY_MODEL, lora_rank=None, seed=0)
    load_s = time.perf_counter() - t0
    tok = tc.get_tokenizer()
    train = task.train_examples(0)
    sample_s, train_s, step_s = [], [], []
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        sc = tc.sampling_client(f"step{step}")
        batch = [train[(4 * step + i) % len(train)] for i in range(4)]
        prompts = [task.render_prompt(ex, tok) for ex in batch]
        futures = [sc.sample(p, 8, SamplingParams(max_tokens=4, seed=100 * step + g))
                   for g, p in enumerate(prompts)]
        groups = [f.result() for f in futures]
        t1 = time.perf_counter()
        datums = []
        for ex, p, seqs in zip(batch, prompts, groups, strict=True):
            r = np.array([task.grade(ex, tok.decode(list(s.tokens), skip_special_tokens=True))
                          .reward for s in seqs])
            for s, a in zip(seqs, r - r.mean(), strict=True):
                datums.append(build_rl_datum(p, list(s.tokens), s.logprobs,
                                             np.full(len(s.tokens), a)))
        t2 = time.perf_counter()
        tc.forward_backward(datums, "importance_sampling").result()
        tc.optim_step(AdamParams(learning_rate=1e-3)).result()
        t3 = time.perf_counter()
        if step >= warmup:
            sample_s.append(t1 - t0)
            train_s.append(t3 - t2)
            step_s.append(t3 - t0)

    # sampling cost against the number of sequences in one batched decode, and generate()
    prompt = task.render_prompt(train[0], tok)
    scaling = []
    model = tc.model
    for n in (32, 128, 512):
        sc = tc.sampling_client(f"scale{n}")
        times = []
        for rep in range(3):
            t0 = time.perf_counter()
            sc.sample(prompt, n, SamplingParams(max_tokens=4, seed=rep)).result()
            times.append(time.perf_counter() - t0)
        gen_times = []
        ids = torch.tensor([prompt] * n)
        for rep in range(3):
            torch.manual_seed(rep)
            t0 = time.perf_counter()
            with torch.inference_mode():
                model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                               do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                               max_new_tokens=4, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.pad_token_id)
            gen_times.append(time.perf_counter() - t0)
        scaling.append({"sequences": n, "engine_ms": 1000 * statistics.median(times),
                        "generate_ms": 1000 * statistics.median(gen_times)})
    return {
        "kind": "cpu-tiny", "steps": steps, "load_s": load_s,
        "step_ms_median": 1000 * statistics.median(step_s),
        "sample_ms_median": 1000 * statistics.median(sample_s),
        "train_ms_median": 1000 * statistics.median(train_s),
        "sampling_scaling": scaling, "threads": torch.get_num_threads(),
    }


# -- GPU: a randomly initialised Qwen3-0.6B-shaped model ------------------------------------
SHAPES: dict[str, dict[str, Any]] = {
    # Qwen3-0.6B's config.json dimensions
    "qwen3-0.6b": dict(vocab_size=151936, hidden_size=1024, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                       intermediate_size=3072, max_position_embeddings=40960,
                       rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True),
    # for a dry run of this code path on a CPU
    "small": dict(vocab_size=4096, hidden_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                  intermediate_size=256, max_position_embeddings=2048,
                  tie_word_embeddings=True),
}


def build_random_checkpoint(out: Path, shape: str, device: str) -> int:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from textpolicy.engines.local.tiny import build_char_tokenizer

    config = Qwen3Config(**SHAPES[shape], pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    with torch.device(device):
        model: Any = Qwen3ForCausalLM(config)
        model = model.to(torch.bfloat16)
    model.save_pretrained(out)
    # any tokenizer will do: the benchmark passes token ids (eos = 2 is then rarely sampled)
    build_char_tokenizer().save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return n


def bench_gpu(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from textpolicy.engines.base import AdamParams, SamplingParams, build_rl_datum
    from textpolicy.engines.local import LocalEngine
    from textpolicy.engines.local.hf import cache_kwarg

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(1)
    out: dict[str, Any] = {"kind": f"{device}-{args.shape}", "prompts": args.prompts,
                           "samples": args.samples, "new_tokens": args.tokens,
                           "prompt_tokens": args.prompt_len, "lora_rank": args.lora_rank,
                           "max_decode_batch": args.decode_batch}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out["parameters"] = build_random_checkpoint(Path(tmp), args.shape, device)
        out["build_s"] = time.perf_counter() - t0
        engine = LocalEngine(device=device, max_decode_batch=args.decode_batch,
                             train_tokens_per_batch=args.train_tokens, state_dir=tmp)
        t0 = time.perf_counter()
        tc = engine.create_training_client(tmp, lora_rank=args.lora_rank, seed=0)
        out["load_s"] = time.perf_counter() - t0
        out["cache_kwarg"] = cache_kwarg(tc.model)
        vocab = tc.vocab_size
        rng = np.random.default_rng(0)
        prompts = [rng.integers(3, vocab, size=args.prompt_len).tolist()
                   for _ in range(args.prompts)]
        params = SamplingParams(max_tokens=args.tokens, temperature=1.0)

        # warm-up (kernels, allocator) on a small batch
        tc.sampling_client("warm").sample(prompts[0], 2, SamplingParams(max_tokens=4)).result()

        _sync()
        t0 = time.perf_counter()
        sc = tc.sampling_client("bench")
        futures = [sc.sample(p, args.samples, params) for p in prompts]
        groups = [f.result() for f in futures]
        _sync()
        sample_s = time.perf_counter() - t0
        sampled = sum(len(s.tokens) for g in groups for s in g)
        out.update(engine_sample_s=sample_s, engine_sampled_tokens=sampled,
                   engine_sample_tok_s=sampled / sample_s)
        if device == "cuda":
            out["engine_sample_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()

        # plain transformers.generate on the same model, same sequences, same batch size
        if not args.skip_generate:
            model = tc.model
            chunk = args.decode_batch or args.prompts * args.samples
            rows = [p for p in prompts for _ in range(args.samples)]
            generated = 0
            _sync()
            t0 = time.perf_counter()
            for start in range(0, len(rows), chunk):
                ids = torch.tensor(rows[start:start + chunk], device=device)
                with torch.inference_mode():
                    seqs = model.generate(
                        input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                        temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=args.tokens,
                        eos_token_id=2, pad_token_id=0)
                new = seqs[:, ids.shape[1]:]
                # tokens up to and including the first eos, as the engine counts them
                is_eos = (new == 2).int()
                after = is_eos.cumsum(-1) - is_eos
                generated += int((after == 0).sum())
                del seqs, new
            _sync()
            gen_s = time.perf_counter() - t0
            out.update(generate_s=gen_s, generate_tokens=generated,
                       generate_tok_s=generated / gen_s)
            if device == "cuda":
                out["generate_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
                torch.cuda.reset_peak_memory_stats()

        # training on every sampled sequence: importance_sampling + Adam step
        datums = []
        for p, group in zip(prompts, groups, strict=True):
            for s in group:
                adv = np.full(len(s.tokens), rng.normal(), dtype=np.float32)
                datums.append(build_rl_datum(p, list(s.tokens), s.logprobs, adv))
        trained = sum(len(d.model_input) for d in datums)
        _sync()
        t0 = time.perf_counter()
        result = tc.forward_backward(datums, "importance_sampling").result()
        tc.optim_step(AdamParams(learning_rate=1e-5)).result()
        _sync()
        train_s = time.perf_counter() - t0
        out.update(train_s=train_s, trained_tokens=trained, train_tok_s=trained / train_s,
                   train_tokens_per_batch=args.train_tokens, loss_sum=result.loss)
        if device == "cuda":
            out["train_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        # sampler/learner agreement on a few sequences (bf16 on GPU)
        check = [prompts[0] + list(s.tokens) for s in groups[0][:4]]
        learner = sc.compute_logprobs(check).result()
        diffs = [float(np.abs(np.asarray(lp[len(prompts[0]):]) - np.asarray(s.logprobs)).max())
                 for lp, s in zip(learner, groups[0][:4], strict=True)]
        out["max_abs_logprob_diff"] = max(diffs)
        engine.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true",
                        help="benchmark a random Qwen3-0.6B-shaped model (CUDA when present)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen3-0.6b")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--decode-batch", type=int, default=None,
                        help="sequences per decode loop (engine option max_decode_batch)")
    parser.add_argument("--train-tokens", type=int, default=8192,
                        help="padded tokens per forward/backward micro-batch")
    parser.add_argument("--skip-generate", action="store_true")
    parser.add_argument("--steps", type=int, default=20, help="CPU: measured steps")
    parser.add_argument("--warmup", type=int, default=3, help="CPU: warm-up steps")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()
    result = bench_gpu(args) if args.gpu else bench_cpu(args.steps, args.warmup)
    result["versions"] = _versions()
    text = json.dumps(result, indent=1, sort_keys=True)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
