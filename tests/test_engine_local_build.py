"""The built-in tiny model: build, cache, verification, rebuild, warm-start quality."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from textpolicy.engines.local.cache import MARKER, ensure_cached, folder_digest, is_valid
from textpolicy.engines.local.tiny import TINY_VERSION, build_char_tokenizer, tiny_model_path
from textpolicy.errors import EngineError


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    mp = pytest.MonkeyPatch()
    mp.setenv("TEXTPOLICY_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tp-cache"))
    try:
        return tiny_model_path()
    finally:
        mp.undo()


def test_tokenizer_round_trips_and_has_47_symbols() -> None:
    tok = build_char_tokenizer()
    assert len(tok) == 47
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    text = "12+7=19, what is 3*4? a-z: xyz"
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) == len(text)
    assert tok.decode(ids) == text
    assert tok.decode([1, *ids, 2], skip_special_tokens=True) == text


def test_tiny_checkpoint_loads_with_transformers(built: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert built.name == TINY_VERSION and is_valid(built, TINY_VERSION)
    model = AutoModelForCausalLM.from_pretrained(built)
    cfg = model.config
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads,
            cfg.head_dim, cfg.intermediate_size, cfg.max_position_embeddings) == (
        47, 64, 2, 4, 16, 256, 64)
    assert cfg.tie_word_embeddings
    assert sum(p.numel() for p in model.parameters()) == 134_464
    tok = AutoTokenizer.from_pretrained(built)
    assert tok.encode("3+4=", add_special_tokens=False) == [6, 13, 7, 15]


def test_warm_start_is_knowledgeable_but_diffuse(built: Path) -> None:
    """Expected pass@1 at temperature 1 over all 100 prompts ≈ 0.2 (easy 0.25, hard 0.13)."""
    import torch
    from transformers import AutoModelForCausalLM

    from textpolicy.engines.local.tiny import addition_pairs

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(built).eval()
    tok = build_char_tokenizer()
    probs, digits = [], []
    for prompt, answer in addition_pairs():
        p = [1, *tok.encode(prompt, add_special_tokens=False)]
        c = [*tok.encode(answer, add_special_tokens=False), 2]
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([p + c])).logits[0].float(), -1)
        probs.append(float(np.exp(sum(lp[len(p) - 1 + i, t].item() for i, t in enumerate(c)))))
        digits.append(len(answer))
    probs_a, digits_a = np.asarray(probs), np.asarray(digits)
    assert 0.15 < probs_a.mean() < 0.25
    assert probs_a[digits_a == 1].mean() > probs_a[digits_a == 2].mean() + 0.05
    # knowledgeable: the correct first digit is the single most likely token nearly always
    assert probs_a.min() > 0.05


def test_corrupt_cache_is_rebuilt_identically(built: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cache"
    shutil.copytree(built, root / TINY_VERSION)
    monkeypatch.setenv("TEXTPOLICY_CACHE_DIR", str(root))
    reference = folder_digest(built)
    weights = root / TINY_VERSION / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16] + b"\0" * 16)
    assert not is_valid(root / TINY_VERSION, TINY_VERSION)
    path = tiny_model_path()
    assert path == root / TINY_VERSION
    assert folder_digest(path) == reference  # the build is deterministic
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_cache_builds_once_and_rebuilds_missing_or_corrupt(tmp_path: Path) -> None:
    calls: list[Path] = []

    def build(out: Path) -> None:
        calls.append(out)
        (out / "data.txt").write_text("payload")

    first = ensure_cached("thing-v1", "v1", build, root=tmp_path)
    assert (first / "data.txt").read_text() == "payload" and (first / MARKER).is_file()
    assert ensure_cached("thing-v1", "v1", build, root=tmp_path) == first
    assert len(calls) == 1
    (first / "data.txt").write_text("tampered")
    ensure_cached("thing-v1", "v1", build, root=tmp_path)
    assert len(calls) == 2 and (first / "data.txt").read_text() == "payload"
    (first / MARKER).unlink()
    ensure_cached("thing-v1", "v1", build, root=tmp_path)
    assert len(calls) == 3
    # a version bump rebuilds too
    ensure_cached("thing-v1", "v2", build, root=tmp_path)
    assert len(calls) == 4 and is_valid(first, "v2")
    shutil.rmtree(first)
    ensure_cached("thing-v1", "v2", build, root=tmp_path)
    assert len(calls) == 5


def test_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    def broken(out: Path) -> None:
        (out / "half.bin").write_bytes(b"x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        ensure_cached("thing-v1", "v1", broken, root=tmp_path)
    assert list(tmp_path.iterdir()) == []

    def empty(out: Path) -> None:
        return None

    with pytest.raises(EngineError, match="verification"):
        ensure_cached("thing-v1", "v1", empty, root=tmp_path)
