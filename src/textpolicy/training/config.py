"""The resolved configuration of one training run (what ``tp train`` flags and spec files
produce, and what ``config.json`` records)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from textpolicy.engines.base import LOSSES
from textpolicy.training.seeds import MAX_SEED


def _finite(value: Any) -> bool:
    return isinstance(value, int) or math.isfinite(value)


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not _finite(value):  # nan passes `value <= 0`
        raise ValueError(f"{attribute.name} must be a finite number > 0, got {value!r}")
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not _finite(value):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value!r}")
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _freeze(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return dict(value or {})


@attrs.frozen
class TrainConfig:
    """Every setting of one run. All randomness flows from ``seed``.

    ``pipeline_params`` maps stage names to parameter overrides, plus the key ``"planning"``
    for the planning detector (``{"detector": "strategic_grams", "grams": [...]}``); e.g. the
    seed document's ``--gtpo-beta 0.1 --sepa-steps 100`` become
    ``{"gtpo": {"beta": 0.1}, "sepa": {"ramp_steps": 100}}``.
    ``model = None`` means the task's default model.
    """

    log_dir: str
    task: str = "arithmetic"
    task_params: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze)
    engine: str = "local"
    engine_options: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze)
    model: str | None = None
    pipeline: str = "grpo"
    pipeline_params: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze)
    lr: float = attrs.field(default=4e-5, validator=_positive)
    max_steps: int = attrs.field(default=100, validator=_positive)
    batch_size: int = attrs.field(default=4, validator=_positive)
    group_size: int = attrs.field(default=8, validator=_positive)
    lora_rank: int | None = attrs.field(default=64, validator=_positive)
    max_tokens: int = attrs.field(default=2048, validator=_positive)
    temperature: float = attrs.field(default=0.7, validator=_positive)
    seed: int = attrs.field(default=0, validator=[_non_negative, attrs.validators.le(MAX_SEED)])
    save_every: int = attrs.field(default=20, validator=_non_negative)
    eval_every: int = attrs.field(default=0, validator=_non_negative)
    eval_samples: int = attrs.field(default=4, validator=_positive)
    eval_prompts: int | None = attrs.field(default=None, validator=_positive)
    eval_temperature: float = attrs.field(default=1.0, validator=_positive)
    #: the held-out split evaluated: "test" (the campaign endpoint) or "validation" (what an LR
    #: sweep's probes are evaluated on, so the choice of LR never sees the test prompts)
    eval_split: str = attrs.field(default="test", validator=attrs.validators.in_(
        ("validation", "test")))
    max_examples: int | None = attrs.field(default=None, validator=_positive)
    loss: str = attrs.field(default="importance_sampling", validator=attrs.validators.in_(LOSSES))
    loss_aggregation: str = attrs.field(
        default="token-sum",
        validator=attrs.validators.in_(
            ("token-sum", "token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")),
    )
    condition: str = ""  # label written into metrics rows (arm name)

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)
