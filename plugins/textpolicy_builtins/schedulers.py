"""Built-in schedulers for SEPA's λ: ``linear`` and ``auto``, both behind a correctness gate.

A pipeline owns one scheduler instance, calls ``observe`` exactly once per training step (with
the step's correct rate and execution-signal variance) and then ``value(step)``. The state
(gate, EMA, latched variance) is saved with every checkpoint via ``state_dict``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from textpolicy.errors import ConfigError
from textpolicy.pipeline import StepObservation, int_field, number_field
from textpolicy.plugins import hookimpl
from textpolicy.records import Scheduler


@attrs.frozen
class LinearParams:
    """``λ(step) = clamp((step − delay_steps) / ramp_steps, 0, 1)`` once the gate is open."""

    ramp_steps: int = int_field(100, ge=0)
    delay_steps: int = int_field(10, ge=0)
    correct_rate_gate: float = number_field(0.1, ge=0.0, le=1.0)


@attrs.frozen
class AutoParams:
    """``max(λ_auto, λ_linear)``, λ_auto from the decay of the execution-signal variance."""

    ramp_steps: int = int_field(100, ge=0)
    delay_steps: int = int_field(10, ge=0)
    correct_rate_gate: float = number_field(0.1, ge=0.0, le=1.0)
    auto_decay: float = number_field(0.99, ge=0.0, le=1.0)
    auto_warmup: int = int_field(50, ge=1)
    auto_threshold: float = number_field(0.2, gt=0.0)


def linear_lambda(step: int, ramp_steps: int, delay_steps: int) -> float:
    """``clamp((step − delay) / ramp, 0, 1)``; 0 when ``ramp_steps <= 0``."""
    if ramp_steps <= 0:
        return 0.0
    return float(min(max((step - delay_steps) / ramp_steps, 0.0), 1.0))


def _state_error(name: str, state: Any) -> ConfigError:
    return ConfigError(f"scheduler {name!r}: invalid state {state!r:.80}")


class LinearScheduler:
    """Linear ramp after a delay, 0 until the gate opens (then open for good)."""

    name = "linear"

    def __init__(self, params: LinearParams) -> None:
        self.params = params
        self.gate_open = params.correct_rate_gate <= 0.0
        self.observations = 0

    def observe(self, obs: StepObservation) -> None:
        self.observations += 1
        if not self.gate_open and obs.correct_rate >= self.params.correct_rate_gate:
            self.gate_open = True

    def _linear(self, step: int) -> float:
        return linear_lambda(step, self.params.ramp_steps, self.params.delay_steps)

    def value(self, step: int) -> float:
        return self._linear(step) if self.gate_open else 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.name, "gate_open": self.gate_open,
                "observations": self.observations}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping) or state.get("kind") != self.name:
            raise _state_error(self.name, state)
        self.gate_open = bool(state["gate_open"])
        self.observations = int(state.get("observations", 0))


class AutoScheduler(LinearScheduler):
    """λ = max(λ_auto, λ_linear): λ_auto = 1 − min((var_ema / var_0) / threshold, 1).

    ``var_ema ← d·var_ema + (1−d)·var_batch`` (initialised with the first observed variance),
    ``var_0`` latched after ``auto_warmup`` updates. Steps without execution tokens (NaN
    variance) do not update the EMA."""

    name = "auto"

    def __init__(self, params: AutoParams) -> None:
        super().__init__(LinearParams(ramp_steps=params.ramp_steps,
                                      delay_steps=params.delay_steps,
                                      correct_rate_gate=params.correct_rate_gate))
        self.auto = params
        self.var_ema: float | None = None
        self.var_0: float | None = None
        self.updates = 0

    def observe(self, obs: StepObservation) -> None:
        super().observe(obs)
        v = obs.exec_signal_variance
        if not math.isfinite(v):
            return
        d = self.auto.auto_decay
        self.var_ema = v if self.var_ema is None else d * self.var_ema + (1.0 - d) * v
        self.updates += 1
        if self.var_0 is None and self.updates >= self.auto.auto_warmup:
            self.var_0 = self.var_ema

    def auto_lambda(self) -> float:
        if self.var_0 is None or self.var_ema is None or self.var_0 <= 0.0:
            return 0.0
        ratio = (self.var_ema / self.var_0) / self.auto.auto_threshold
        return float(1.0 - min(ratio, 1.0))

    def value(self, step: int) -> float:
        if not self.gate_open:
            return 0.0
        return max(self.auto_lambda(), self._linear(step))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "var_ema": self.var_ema, "var_0": self.var_0,
                "updates": self.updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        try:
            ema, v0 = state["var_ema"], state["var_0"]
            self.var_ema = None if ema is None else float(ema)
            self.var_0 = None if v0 is None else float(v0)
            self.updates = int(state["updates"])
        except (KeyError, TypeError, ValueError):
            raise _state_error(self.name, state) from None


SCHEDULERS: tuple[Scheduler, ...] = (
    Scheduler(name="linear", factory=LinearScheduler, params=LinearParams,
              doc="clamp((step - delay)/ramp, 0, 1) behind a correct-rate gate"),
    Scheduler(name="auto", factory=AutoScheduler, params=AutoParams,
              doc="max(linear, 1 - min(var_ema/var_0/threshold, 1)) behind a correct-rate gate"),
)


@hookimpl
def textpolicy_register_schedulers() -> Iterable[Scheduler]:
    return SCHEDULERS
