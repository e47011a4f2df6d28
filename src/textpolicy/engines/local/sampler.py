"""Batched KV-cache sampling: one explicit decode loop for every sequence of a flush.

What a ``SampledSequence`` holds (the local engine's definition, documented in docs/engines.md):

* ``tokens``: the sampled ids, the stop token included when ``stop_reason == "stop"``;
* ``logprobs[t]``: log-probability of the sampled token under the distribution it was actually
  drawn from: softmax(logits / temperature), restricted to the top-k / top-p set and
  renormalised when those are set. At temperature 1 with no truncation this is exactly the
  learner's log p(token | prefix), so importance ratios start at 1. Greedy decoding
  (temperature 0) reports 0.0 (a point mass);
* ``topk_logprobs[t]``: the k most likely (token id, logprob) pairs of that same distribution;
* ``stop_reason``: ``"stop"`` when an eos/stop token was sampled, else ``"length"``.

Randomness: sequence j of a request draws its t-th uniform from a counter-based generator keyed
by ``sample_seed(SamplingParams.seed, j)`` (:func:`textpolicy.engines.base.sample_seed`; or,
when the seed is None, by the training client's seed, the sampling client's name and the
request's index on that client) and samples by inverse CDF, so a
sequence's tokens depend only on the weights, its prompt, its parameters, the seed and j — not
on which other requests share its batch. Two requests with the same explicit seed draw the same
uniforms (callers vary the seed per prompt and step).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
from numpy.typing import NDArray

from textpolicy.engines.base import SampledSequence, SamplingParams
from textpolicy.engines.local.hf import cache_kwarg, decoder_and_head
from textpolicy.errors import EngineError


@attrs.frozen
class DecodeJob:
    """One sequence to sample: prompt, parameters, its uniforms, stop ids, top-k count."""

    prompt: tuple[int, ...]
    params: SamplingParams
    uniforms: NDArray[np.float64]
    stop_ids: tuple[int, ...]
    topk: int


_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(z: NDArray[np.uint64]) -> NDArray[np.uint64]:
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def request_uniforms(seed_words: Sequence[int], num_samples: int,
                     count: int) -> NDArray[np.float64]:
    """Uniforms in [0, 1) for sequences 0..num_samples-1 of one request, ``[n, count]``.

    Counter-based (SplitMix64 of key + counter): entry (j, t) depends only on the seed words,
    j and t, so sequence j's draws are the same whatever else shares its batch, and a whole
    request costs one vectorised numpy call.
    """
    digest = hashlib.blake2b(
        ",".join(str(int(w)) for w in seed_words).encode(), digest_size=8).digest()
    key = np.uint64(int.from_bytes(digest, "little"))
    j = np.arange(num_samples, dtype=np.uint64)[:, None]
    t = np.arange(count, dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):
        counter = (j << np.uint64(32)) + t + np.uint64(1)
        bits = _splitmix64(key + counter * _GAMMA)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def validate_params(params: SamplingParams) -> None:
    if params.max_tokens < 1:
        raise EngineError(f"sample: max_tokens must be >= 1, got {params.max_tokens}")
    if params.temperature < 0:
        raise EngineError(f"sample: temperature must be >= 0, got {params.temperature}")
    if not 0 < params.top_p <= 1:
        raise EngineError(f"sample: top_p must be in (0, 1], got {params.top_p}")


def _truncate(logp: Any, top_k: Any, top_p: Any, need_k: bool, need_p: bool) -> Any:
    """Mask logp outside each row's top-k / top-p set and renormalise."""
    import torch

    neg_inf = torch.finfo(logp.dtype).min
    if need_k:
        vocab = logp.shape[-1]
        k = torch.where(top_k > 0, top_k.clamp(max=vocab), vocab)
        kmax = int(k.max())
        vals = torch.topk(logp, kmax, dim=-1).values
        threshold = vals.gather(-1, (k - 1)[:, None])
        logp = torch.where(logp < threshold, neg_inf, logp)
    if need_p:
        sorted_lp, order = torch.sort(logp, dim=-1, descending=True)
        probs = sorted_lp.exp()
        before = probs.cumsum(-1) - probs  # mass strictly before each token
        drop_sorted = before >= top_p[:, None]
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logp = torch.where(drop, neg_inf, logp)
    return torch.log_softmax(logp, dim=-1)


def decode(model: Any, jobs: Sequence[DecodeJob], *, pad_id: int, device: Any) -> list[
        SampledSequence]:
    """Sample every job in ONE batched KV-cache decode loop (left-padded prompts)."""
    import torch
    from transformers import DynamicCache

    if not jobs:
        return []
    n = len(jobs)
    steps = max(j.params.max_tokens for j in jobs)
    width = max(len(j.prompt) for j in jobs)
    ids_np = np.full((n, width), pad_id, dtype=np.int64)
    mask_np = np.zeros((n, width), dtype=np.int64)
    uni_np = np.zeros((n, steps), dtype=np.float64)
    max_stop = max(1, max(len(j.stop_ids) for j in jobs))
    stop_np = np.full((n, max_stop), -1, dtype=np.int64)
    for i, job in enumerate(jobs):
        ids_np[i, width - len(job.prompt):] = job.prompt
        mask_np[i, width - len(job.prompt):] = 1
        uni_np[i, : job.params.max_tokens] = job.uniforms
        stop_np[i, : len(job.stop_ids)] = job.stop_ids
    temps_np = np.array([j.params.temperature for j in jobs], dtype=np.float32)
    top_k_np = np.array([j.params.top_k for j in jobs], dtype=np.int64)
    top_p_np = np.array([j.params.top_p for j in jobs], dtype=np.float32)
    max_new = torch.tensor([j.params.max_tokens for j in jobs], device=device)
    need_k = bool((top_k_np > 0).any())
    need_p = bool((top_p_np < 1).any())
    greedy = torch.tensor(temps_np == 0, device=device)
    kmax = max(j.topk for j in jobs)

    ids = torch.tensor(ids_np, device=device)
    mask = torch.tensor(mask_np, device=device)
    uniforms = torch.tensor(uni_np, dtype=torch.float32, device=device)
    stops = torch.tensor(stop_np, device=device)
    temps = torch.tensor(np.where(temps_np > 0, temps_np, 1.0), device=device)
    top_k = torch.tensor(top_k_np, device=device)
    top_p = torch.tensor(top_p_np, device=device)

    decoder, head = decoder_and_head(model)
    kw = cache_kwarg(model)
    base_config = getattr(decoder, "config", None)
    try:
        cache = DynamicCache(config=base_config)
    except TypeError:  # older signatures
        cache = DynamicCache()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)

    out_tokens = torch.full((n, steps), pad_id, dtype=torch.long, device=device)
    out_lp = torch.zeros((n, steps), dtype=torch.float32, device=device)
    top_ids = torch.zeros((n, steps, kmax), dtype=torch.long, device=device)
    top_lp = torch.zeros((n, steps, kmax), dtype=torch.float32, device=device)
    active = torch.ones(n, dtype=torch.bool, device=device)
    lengths = torch.zeros(n, dtype=torch.long, device=device)
    stopped = torch.zeros(n, dtype=torch.bool, device=device)
    step_input = ids
    step_pos = positions
    with torch.inference_mode():
        for t in range(steps):
            hidden = decoder(input_ids=step_input, attention_mask=mask, position_ids=step_pos,
                             use_cache=True, **{kw: cache}).last_hidden_state[:, -1]
            logits = head(hidden).float() / temps[:, None]
            logp = torch.log_softmax(logits, dim=-1)
            if need_k or need_p:
                logp = _truncate(logp, top_k, top_p, need_k, need_p)
            cdf = logp.exp().cumsum(-1)
            target = uniforms[:, t:t + 1] * cdf[:, -1:]
            sampled = torch.searchsorted(cdf, target).clamp(max=logp.shape[-1] - 1)[:, 0]
            sampled = torch.where(greedy, logp.argmax(-1), sampled)
            token_lp = logp.gather(-1, sampled[:, None])[:, 0]
            token_lp = torch.where(greedy, torch.zeros_like(token_lp), token_lp)
            sampled = torch.where(active, sampled, pad_id)
            out_tokens[:, t] = sampled
            out_lp[:, t] = torch.where(active, token_lp, 0.0)
            if kmax:
                tv, ti = torch.topk(logp, kmax, dim=-1)
                top_ids[:, t], top_lp[:, t] = ti, tv
            lengths += active.long()
            hit = (sampled[:, None] == stops).any(-1) & active
            stopped |= hit
            active = active & ~hit & (lengths < max_new)
            if t + 1 == steps or not bool(active.any()):
                break
            step_input = sampled[:, None]
            step_pos = step_pos[:, -1:] + 1
            mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=device)], 1)

    tokens_c = out_tokens.cpu().numpy()
    lp_c = out_lp.cpu().numpy()
    len_c = lengths.cpu().numpy()
    stop_c = stopped.cpu().numpy()
    top_ids_c = top_ids.cpu().numpy() if kmax else None
    top_lp_c = top_lp.cpu().numpy() if kmax else None
    results = []
    for i, job in enumerate(jobs):
        m = int(len_c[i])
        topk_rows = None
        if job.topk and top_ids_c is not None and top_lp_c is not None:
            topk_rows = tuple(
                tuple(zip(top_ids_c[i, t, : job.topk].tolist(),
                          top_lp_c[i, t, : job.topk].tolist(), strict=True))
                for t in range(m))
        results.append(SampledSequence(
            tokens=tokens_c[i, :m].tolist(), logprobs=lp_c[i, :m].tolist(),
            stop_reason="stop" if stop_c[i] else "length", topk_logprobs=topk_rows))
    return results


def prompt_logprobs(model: Any, sequences: Sequence[Sequence[int]], *, pad_id: int,
                    device: Any) -> list[list[float]]:
    """log p(token_i | tokens_<i) for every token of every sequence (first entry 0.0)."""
    import torch

    seqs = [list(s) for s in sequences]
    if not seqs:
        return []
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    ids, mask = ids.to(device), mask.to(device)
    decoder, head = decoder_and_head(model)
    from textpolicy.engines.local.hf import token_logprobs

    with torch.inference_mode():
        hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        flat = token_logprobs(head, hidden[:, :-1].reshape(-1, hidden.shape[-1]),
                              ids[:, 1:].reshape(-1)).view(len(seqs), width - 1)
    lp = flat.cpu().numpy()
    return [[0.0, *lp[i, : len(s) - 1].tolist()] for i, s in enumerate(seqs)]
