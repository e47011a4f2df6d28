"""Frozen records shared by the analysis modules and the significance-test plugins."""

from __future__ import annotations

import math
from typing import Any, Literal

import attrs
import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
EndpointKind = Literal["heldout", "training"]
Recommendation = Literal["significant_improvement", "not_significant", "significant_regression",
                         "insufficient_seeds"]
RECOMMENDATIONS: tuple[str, ...] = (
    "significant_improvement", "not_significant", "significant_regression",
    "insufficient_seeds")
#: The fewest seed pairs (runs per arm, unpaired) on which a recommendation is given: the
#: smallest S at which the primary test's calibration was validated by simulation
#: (benchmarks/primary_calibration.py, S in {4, 8, 16, 32}). Below it a t with 1-2 df
#: rests on the normality of seed effects, which 2-3 pairs cannot check, and the exact
#: sign-flip cannot reach alpha = 0.05 (its smallest p is 2/2^S >= 0.25). The recommendation
#: is then ``insufficient_seeds``; p values and CIs are still reported, as descriptive.
MIN_SEED_PAIRS = 4


class AnalysisWarning(UserWarning):
    """Something in the run directories was repaired or left out (truncated line, ...)."""


@attrs.frozen(eq=False)
class AnalysisInput:
    """Everything one baseline-versus-candidate comparison offers a significance test.

    Accuracies are fractions in [0, 1]; tests report differences in percentage points.
    ``base_units`` / ``cand_units`` are per-run accuracies over the crossed unit (held-out
    eval prompts, or training steps when no eval ran), shape ``[runs, M]``. When ``paired``,
    row ``i`` of both arms belongs to seed pair ``i`` (seed ``seeds[i]``).
    Generation-level data pool every training generation of every run of an arm (the seed
    document's pseudo-replicated view): ``gen_counts = (base_correct, base_total,
    cand_correct, cand_total)``; ``base_rewards`` / ``cand_rewards`` hold raw rewards only when
    rewards are not binary (``None`` means the reward equals correctness, use the counts).
    """

    baseline: str
    candidate: str
    endpoint: str
    endpoint_kind: EndpointKind
    unit_kind: Literal["prompt", "step"]
    paired: bool
    seeds: tuple[int | None, ...]
    base_values: FloatArray
    cand_values: FloatArray
    base_units: FloatArray
    cand_units: FloatArray
    gen_counts: tuple[int, int, int, int] | None = None
    base_rewards: FloatArray | None = None
    cand_rewards: FloatArray | None = None
    rewards_binary: bool = True
    alpha: float = 0.05
    num_resamples: int = 20000
    seed: int = 0

    @property
    def n_pairs(self) -> int:
        return len(self.base_values) if self.paired else 0

    @property
    def pair_differences(self) -> FloatArray:
        """Per-pair candidate − baseline endpoint differences (fractions)."""
        if not self.paired:
            raise ValueError("runs are not paired")
        return np.asarray(self.cand_values - self.base_values, dtype=np.float64)

    def rng(self, name: str) -> np.random.Generator:
        """A generator for test ``name``, determined by ``seed`` and the name only."""
        import zlib

        return np.random.default_rng([self.seed, zlib.crc32(name.encode())])


def _opt_float(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


@attrs.frozen
class TestResult:
    """One test's answer. ``delta``/``ci_*`` are in ``unit`` (``"pp"`` = percentage points).

    ``p_value`` is ``None`` when the test does not apply (``notes`` says why). ``level`` is the
    unit of replication the test assumes: ``"seed"``, ``"seed×prompt"``, ``"prompt"`` or
    ``"generation"`` (pseudo-replicated). ``extra`` holds test-specific numbers (statistic,
    df, the sign-flip p, odds ratios, ...), all JSON-serialisable.
    """

    __test__ = False  # not a pytest class

    name: str
    p_value: float | None = attrs.field(converter=_opt_float)
    delta: float | None = attrs.field(converter=_opt_float)
    ci_low: float | None = attrs.field(default=None, converter=_opt_float)
    ci_high: float | None = attrs.field(default=None, converter=_opt_float)
    unit: str = "pp"
    notes: str = ""
    level: str = "seed"
    extra: dict[str, Any] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "p_value": self.p_value, "delta": self.delta,
            "ci_low": self.ci_low, "ci_high": self.ci_high, "unit": self.unit,
            "notes": self.notes, "level": self.level, "extra": _jsonable(self.extra),
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def not_applicable(name: str, why: str, *, level: str = "seed", unit: str = "pp") -> TestResult:
    """A result saying the test cannot run on this data."""
    return TestResult(name=name, p_value=None, delta=None, unit=unit,
                      notes=f"not applicable: {why}", level=level)
