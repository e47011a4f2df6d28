"""Saving and restoring a local training client: weights (or LoRA adapter) + Adam state.

A state folder holds ``model/`` (full fine-tune: an HF checkpoint with its tokenizer) or
``adapter/`` (LoRA: peft's adapter files; the base model is re-resolved from ``state.json``),
``optimizer.pt`` (torch's Adam state dict) and ``state.json`` (format, base model, LoRA rank and
alpha, seed, optimizer step count). A marker with the SHA-256 of every file is written last and
the folder is renamed into place, so a crash never leaves a readable half-written state, and
``resume`` refuses a folder whose files do not match their marker.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textpolicy import strictjson
from textpolicy.engines.local.cache import is_valid, write_marker
from textpolicy.errors import EngineError

if TYPE_CHECKING:
    from textpolicy.engines.local.training_client import LocalTrainingClient

STATE_FORMAT = "textpolicy-local-state-v1"


def save_state(client: LocalTrainingClient, path: Path) -> Path:
    import torch
    import transformers

    from textpolicy.engines.local.hf import hf_model, quiet_transformers

    quiet_transformers()
    path = path.expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.saving-", dir=path.parent))
    try:
        if client.lora_rank:
            client.model.save_pretrained(str(tmp / "adapter"))
        else:
            hf_model(client.model).save_pretrained(str(tmp / "model"))
            if client.tokenizer is not None:
                client.tokenizer.save_pretrained(str(tmp / "model"))
        torch.save(client.optimizer.state_dict(), tmp / "optimizer.pt")
        meta = {
            "format": STATE_FORMAT,
            "base_model": client.base_model,
            "lora_rank": client.lora_rank,
            "lora_alpha": client.lora_alpha,
            "seed": client.seed,
            "optim_steps": client.optim_steps,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        }
        (tmp / "state.json").write_text(strictjson.dumps(meta, indent=1, sort_keys=True))
        write_marker(tmp, STATE_FORMAT)
        if path.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, trash / "old")
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_state_meta(path: Path) -> dict[str, Any]:
    """``state.json`` of a verified state folder (EngineError when missing or corrupt)."""
    if not (path / "state.json").is_file():
        raise EngineError(f"resume: {path} is not a local engine state folder (no state.json)")
    if not is_valid(path, STATE_FORMAT):
        raise EngineError(f"resume: {path} is corrupt (its files do not match their marker)")
    meta: dict[str, Any] = json.loads((path / "state.json").read_text())
    return meta


def load_optimizer(client: LocalTrainingClient, path: Path) -> None:
    import torch

    state = torch.load(path / "optimizer.pt", map_location=client.device, weights_only=True)
    client.optimizer.load_state_dict(state)
