"""Saving and restoring a local training client: weights (or LoRA adapter) + Adam state.

A state folder holds ``model/`` (full fine-tune: an HF checkpoint with its tokenizer) or
``adapter/`` (LoRA: peft's adapter files; the base model is re-resolved from ``state.json``),
``optimizer.pt`` (torch's Adam state dict) and ``state.json`` (format, base model, LoRA rank and
alpha, seed, optimizer step count). A marker with the SHA-256 of every file is written last and
the folder is renamed into place, so a crash never leaves a readable half-written state, and
``resume`` refuses a folder whose files do not match their marker.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textpolicy import strictjson
from textpolicy.engines.local.cache import (
    is_valid,
    owned_tmp_dir,
    remove_leftovers,
    write_marker,
)
from textpolicy.errors import EngineError

if TYPE_CHECKING:
    from textpolicy.engines.local.training_client import LocalTrainingClient

STATE_FORMAT = "textpolicy-local-state-v1"


def save_state(client: LocalTrainingClient, path: Path) -> Path:
    """Write the client's state to ``path`` (atomically, via a temporary sibling folder).
    Leftover temporary folders of dead processes next to it are removed first; a full disk
    is an ``EngineError`` naming the path (the previous state is untouched)."""
    from textpolicy.engines.local.hf import quiet_transformers

    quiet_transformers()
    path = path.expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path.parent)
    tmp = owned_tmp_dir(path.name, "saving", path.parent)
    try:
        _write_state(client, tmp, path)
    except (OSError, RuntimeError) as exc:  # torch reports a failed write as RuntimeError
        if _no_space(exc, path.parent):
            raise EngineError(f"{path}: no space left on device while saving the checkpoint; "
                              "free some space and run the same command again to resume "
                              "(from the previous checkpoint)") from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


#: a failed write with less free space than this left is taken for a full disk
_FULL_BELOW = 1 << 20


def _no_space(exc: BaseException, parent: Path) -> bool:
    """Whether a failed save was a full disk: ENOSPC / EDQUOT anywhere in the chain, or (torch
    words a failed write as ``iostream error`` / ``unexpected pos``) almost no space left."""
    chain: BaseException | None = exc
    while chain is not None:
        if isinstance(chain, OSError) and chain.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        chain = chain.__cause__ or chain.__context__
    try:
        return shutil.disk_usage(parent).free < _FULL_BELOW
    except OSError:
        return False


def _write_state(client: LocalTrainingClient, tmp: Path, path: Path) -> None:
    import torch
    import transformers

    from textpolicy.engines.local.hf import hf_model

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
        trash = owned_tmp_dir(path.name, "old", path.parent)
        os.replace(path, trash / "old")
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(tmp, path)


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
