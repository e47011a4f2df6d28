"""Contract: the installed tinker SDK is exactly the pinned one, and its API still has what the
tinker engine and `tp serve` rely on. The SDK changes fast between minor versions; when this
fails, re-read the SDK (tinker.md) before bumping the pin in pyproject.toml."""

from __future__ import annotations

import importlib.metadata
import inspect
import re
import tomllib
from pathlib import Path

from textpolicy.engines.tinker_engine import PINNED_SDK_VERSION

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def pinned_in_pyproject() -> str:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    pins = [m.group(1) for d in deps if (m := re.fullmatch(r"tinker==([\w.]+)", d.strip()))]
    assert len(pins) == 1, f"pyproject.toml must pin tinker exactly once (tinker==X), got {deps}"
    return pins[0]


def test_installed_sdk_is_the_pinned_version() -> None:
    pinned = pinned_in_pyproject()
    installed = importlib.metadata.version("tinker")
    assert installed == pinned, (
        f"tinker {installed} is installed but pyproject.toml pins tinker=={pinned}: the SDK's "
        "API and wire protocol change between versions; install the pin or re-verify "
        "textpolicy.engines.tinker_engine and textpolicy.serve against the new SDK")
    assert pinned == PINNED_SDK_VERSION, (
        f"textpolicy.engines.tinker_engine.PINNED_SDK_VERSION={PINNED_SDK_VERSION} but "
        f"pyproject.toml pins {pinned}")


def test_sdk_api_the_engine_uses() -> None:
    import tinker
    from tinker import types
    from tinker.proto import tinker_public_pb2  # noqa: F401 - tp serve encodes with it

    service = inspect.signature(tinker.ServiceClient.__init__).parameters
    assert {"base_url", "api_key"} <= set(service)
    for name in ("create_lora_training_client",
                 "create_training_client_from_state_with_optimizer", "close"):
        assert callable(getattr(tinker.ServiceClient, name)), name
    for name in ("forward_backward", "optim_step", "save_state", "save_weights_for_sampler",
                 "save_weights_and_get_sampling_client", "get_tokenizer", "get_info"):
        assert callable(getattr(tinker.TrainingClient, name)), name
    sample = inspect.signature(tinker.SamplingClient.sample).parameters
    assert {"prompt", "num_samples", "sampling_params", "topk_sample_logprobs"} <= set(sample)
    assert types.ModelInput.from_ints([1, 2]).to_ints() == [1, 2]
    assert set(types.AdamParams.model_fields) >= {"learning_rate", "beta1", "beta2", "eps",
                                                  "weight_decay", "grad_clip_norm"}
    assert set(types.SamplingParams.model_fields) >= {"max_tokens", "seed", "stop",
                                                      "temperature", "top_k", "top_p"}
