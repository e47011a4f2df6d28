"""The built-in tiny model: a character tokenizer, a 134k-parameter Qwen3 and its warm start.

``TINY_MODEL`` is the stable name the local engine resolves to a cached Hugging Face checkpoint
folder (``tiny_model_path()``), built on first use:

* tokenizer: ``tokenizers`` WordLevel over single characters (every character is a token, Fuse
  decoder) wrapped in ``PreTrainedTokenizerFast`` with ``<pad>`` (0), ``<bos>`` (1), ``<eos>``
  (2): 47 symbols (specials, digits, ``+-=*,:?``, space, a-z);
* model: ``Qwen3Config`` with vocab 47, hidden 64, 2 layers, 4 heads (4 kv), head_dim 16,
  intermediate 256, tied embeddings, 64 positions (134,464 parameters), the same architecture
  class as Qwen3-0.6B, so it loads through the same code as any real checkpoint;
* warm start: full-batch supervised training on all 100 single-digit additions
  (``<bos>a+b=`` → digits of a+b then ``<eos>``) with label smoothing 0.5 on the answer tokens,
  200 Adam steps (lr 1e-2, betas 0.9/0.95), seed 0, on CPU with one thread. The result is a
  knowledgeable but diffuse base: about 0.5 probability on each correct answer token, so pass@1
  at temperature 1 is ≈ 0.2 and RL has room to sharpen it. A random model scores 0.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from textpolicy.engines.local.cache import ensure_cached

TINY_MODEL = "textpolicy/tiny-arithmetic"
# bump when anything below changes what is built
TINY_VERSION = "tiny-arithmetic-v1"
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")
CHARS = tuple(string.digits) + tuple("+-=*,:?") + (" ",) + tuple(string.ascii_lowercase)
WARM_STEPS = 200
WARM_LR = 1e-2
WARM_SMOOTHING = 0.5


def tiny_model_path() -> Path:
    """The cached tiny checkpoint folder, built (≈ 10 s on one CPU core) when missing/corrupt."""
    return ensure_cached(TINY_VERSION, TINY_VERSION, build_tiny_checkpoint)


def build_char_tokenizer() -> Any:
    """The character-level ``PreTrainedTokenizerFast`` of the tiny model."""
    from tokenizers import Regex, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + CHARS)}
    backend = Tokenizer(WordLevel(vocab))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")


def tiny_config(vocab_size: int) -> Any:
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, head_dim=16, intermediate_size=256, tie_word_embeddings=True,
        max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def addition_pairs() -> list[tuple[str, str]]:
    """The 100 single-digit additions as (``"a+b="``, answer digits), a-major order."""
    return [(f"{a}+{b}=", str(a + b)) for a in range(10) for b in range(10)]


def build_tiny_checkpoint(out_dir: Path, steps: int = WARM_STEPS) -> None:
    """Build the warm-started tiny model + tokenizer into ``out_dir`` (deterministic)."""
    import torch
    from transformers import Qwen3ForCausalLM

    from textpolicy.engines.local.hf import quiet_transformers

    quiet_transformers()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tok = build_char_tokenizer()
        # transformers initialises from torch's global generator: seed it inside fork_rng so
        # the caller's global state is left as it was (the build runs once per cache, during a
        # slot's one-at-a-time warm-up; the training loop itself never reads global state)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = Qwen3ForCausalLM(tiny_config(len(tok)))
        seqs, prompt_lens = [], []
        for prompt, answer_text in addition_pairs():
            p = [tok.bos_token_id, *tok.encode(prompt, add_special_tokens=False)]
            seqs.append(p + tok.encode(answer_text, add_special_tokens=False) + [tok.eos_token_id])
            prompt_lens.append(len(p))
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), tok.pad_token_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
        lengths = torch.tensor([len(s) for s in seqs])
        pos = torch.arange(width - 1)
        # target position j predicts token j + 1: answer targets are j >= len(prompt) - 1
        is_answer = (pos[None, :] >= torch.tensor(prompt_lens)[:, None] - 1) & (
            pos[None, :] < lengths[:, None] - 1)
        inputs, targets = ids[:, :-1], ids[:, 1:]
        mask = (pos[None, :] < lengths[:, None] - 1).long()
        opt = torch.optim.Adam(model.parameters(), lr=WARM_LR, betas=(0.9, 0.95))
        model.train()
        for _ in range(steps):
            logits = model(input_ids=inputs, attention_mask=mask).logits
            loss = torch.nn.functional.cross_entropy(
                logits[is_answer], targets[is_answer], label_smoothing=WARM_SMOOTHING)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        model.generation_config.do_sample = True
        model.save_pretrained(out_dir)
        tok.save_pretrained(out_dir)
    finally:
        torch.set_num_threads(threads)
