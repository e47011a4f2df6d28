"""Advantage pipelines: an episode-level stage followed by token-level stages.

A pipeline maps the :class:`~textpolicy.rollouts.Rollouts` of one training step to token
advantages ``[N, T]`` plus per-step diagnostics::

    import textpolicy as tp
    p = tp.load_pipeline("full", gtpo={"beta": 0.1})
    result = p(rollouts, step=step, vocab=vocab)     # one call per training step
    result.token_advantages                           # float64 [N, T], 0 on padding

How one call runs:

1. the planning mask is taken from ``rollouts.planning_mask`` or detected with the pipeline's
   planning detector (needs a :class:`~textpolicy.vocab.TokenVocab`);
2. the token signal ``h`` [N, T] is computed once (``surprisal`` = ``-logprob`` by default, or
   ``entropy`` from top-k logprobs, chosen by the ``signal`` parameter of a stage such as gtpo);
3. the pipeline's scheduler (SEPA's λ) observes the step — correct rate and the variance of the
   execution-token signal — exactly once, and gives the value for this step;
4. the episode stage gives scalar advantages ``[N]`` (strictly per group), expanded to tokens;
5. each token stage transforms the :class:`TokenCredit` (advantages and signal) in order.

Conventions that let a pipeline wire plugins together without knowing them:

- a stage whose ``needs`` include ``"planning_mask"`` makes the pipeline detect the mask;
- a stage whose ``needs`` include ``"sepa_lambda"`` has a ``schedule`` parameter naming a
  registered scheduler; the scheduler's parameters are taken from the stage's parameters with
  the same field names (``ramp_steps``, ``delay_steps``, ...);
- a stage with a ``signal`` parameter chooses the token signal of the whole pipeline.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Protocol

import attrs
import numpy as np
from numpy.typing import NDArray

from textpolicy import records
from textpolicy.errors import ConfigError, RolloutError, StageError
from textpolicy.plugins import Registry, did_you_mean, get_registry, structure_params
from textpolicy.rollouts import Rollouts

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]

__all__ = [
    "AGGREGATION_MODES",
    "Pipeline",
    "PipelineResult",
    "SchedulerProtocol",
    "StepContext",
    "StepObservation",
    "TokenCredit",
    "aggregate_advantages",
    "build_pipeline",
    "choice_field",
    "group_centred",
    "group_index",
    "int_field",
    "load_pipeline",
    "number_field",
    "split_pipeline_list",
    "token_signal",
]

SIGNALS = ("surprisal", "entropy")
AGGREGATION_MODES = ("token-sum", "token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
DEFAULT_DETECTOR = "strategic_grams"


# --------------------------------------------------------------------------------------------
# Records passed to and returned by stages


@attrs.frozen(eq=False)
class StepContext:
    """What a stage may read besides the rollouts.

    Attributes:
        step: 0-based training step.
        sepa_lambda: the scheduler's value for this step (0 when the pipeline has none).
        planning_mask: bool ``[N, T]`` planning tokens (None when the pipeline needs none and
            no vocabulary was given).
        correct_rate: share of correct completions in this step's rollouts.
        gate_open: whether the scheduler's correctness gate is open.
        mask: bool ``[N, T]`` real-token mask (``rollouts.mask``, computed once per call).
        rng: the generator a stage draws random numbers from — the run's own for this step
            (never ``numpy.random``'s or ``random``'s global state, which threads share).
    """

    step: int
    sepa_lambda: float = 0.0
    planning_mask: BoolArray | None = None
    correct_rate: float = 0.0
    gate_open: bool = False
    mask: BoolArray | None = None
    rng: np.random.Generator = attrs.field(factory=lambda: np.random.default_rng(0))

    def token_mask(self, rollouts: Rollouts) -> BoolArray:
        """The real-token mask of ``rollouts`` (cached in the context when available)."""
        return self.mask if self.mask is not None else rollouts.mask


@attrs.frozen(eq=False)
class TokenCredit:
    """Token-level credit: advantages ``[N, T]`` and the token signal ``[N, T]`` (both float64,
    0 on padding). Token stages return a new ``TokenCredit`` (use ``attrs.evolve``)."""

    advantages: FloatArray
    signal: FloatArray


@attrs.frozen(eq=False)
class PipelineResult:
    """Output of one pipeline call.

    Attributes:
        token_advantages: float64 ``[N, T]``, 0 on padding.
        episode_advantages: float64 ``[N]`` from the episode stage.
        diagnostics: ``sepa_lambda``, ``sepa_gate_open`` (0/1), ``planning_token_share``,
            ``credit_moved_share`` (floats).
        planning_mask: bool ``[N, T]`` when one was detected or given, else None.
    """

    token_advantages: FloatArray
    episode_advantages: FloatArray
    diagnostics: dict[str, float]
    planning_mask: BoolArray | None = None


@attrs.frozen
class StepObservation:
    """What a scheduler observes once per training step."""

    step: int
    correct_rate: float
    exec_signal_variance: float  # nan when there are no execution tokens


class SchedulerProtocol(Protocol):
    """What a ``Scheduler`` record's factory returns."""

    @property
    def gate_open(self) -> bool: ...

    def observe(self, obs: StepObservation) -> None: ...

    def value(self, step: int) -> float: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


# --------------------------------------------------------------------------------------------
# Parameter-field helpers for plugin authors (one-line errors naming the key and the value)


def number_field(
    default: float, *, ge: float | None = None, le: float | None = None, gt: float | None = None
) -> Any:
    """An attrs field holding a float, accepting ints, rejecting bools/strings/NaN."""

    def check(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        bounds = []
        if ge is not None:
            bounds.append(f">= {ge}")
        if gt is not None:
            bounds.append(f"> {gt}")
        if le is not None:
            bounds.append(f"<= {le}")
        allowed = "a number" + (f" {' and '.join(bounds)}" if bounds else "")
        ok = isinstance(value, float) and math.isfinite(value)
        ok = ok and (ge is None or value >= ge) and (le is None or value <= le)
        ok = ok and (gt is None or value > gt)
        if not ok:
            raise ValueError(f"{attribute.name} must be {allowed}, got {value!r}")

    def convert(value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value

    return attrs.field(default=default, converter=convert, validator=check)


def int_field(default: int, *, ge: int | None = None) -> Any:
    """An attrs field holding an int (bools rejected)."""

    def check(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        ok = isinstance(value, int) and not isinstance(value, bool)
        ok = ok and (ge is None or value >= ge)
        if not ok:
            extra = f" >= {ge}" if ge is not None else ""
            raise ValueError(f"{attribute.name} must be an integer{extra}, got {value!r}")

    return attrs.field(default=default, validator=check)


def choice_field(default: str, choices: tuple[str, ...]) -> Any:
    """An attrs field holding one of ``choices``."""

    def check(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            raise ValueError(
                f"{attribute.name} must be one of {', '.join(choices)}, got {value!r}"
                f"{did_you_mean(str(value), choices)}")

    return attrs.field(default=default, validator=check)


# --------------------------------------------------------------------------------------------
# Shared array helpers


def group_index(group_ids: NDArray[Any]) -> tuple[IntArray, IntArray]:
    """Return ``(inverse [N], counts [G])``: dense group index of each completion."""
    _, inverse, counts = np.unique(group_ids, return_inverse=True, return_counts=True)
    return inverse.astype(np.int64).reshape(-1), counts.astype(np.int64)


def group_centred(values: NDArray[Any], inverse: IntArray, counts: IntArray
                  ) -> tuple[FloatArray, FloatArray]:
    """``(v_i − m_g, m_g)`` per completion (``m_g`` the mean of its group, from
    :func:`group_index`), with differences inside the rounding error of the mean set to
    exactly 0.

    A float mean is off by up to about ``n·ε·max|v|`` (0.3 × 3 / 3 = 0.30000000000000004), so a
    group of equal non-binary rewards would get ±1e-16 advantages and count as trainable
    datums; such differences carry no information and become 0 (hand-written: no library
    centres by group with this guarantee)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    mean = (np.bincount(inverse, weights=v, minlength=counts.shape[0]) / counts)[inverse]
    centred = v - mean
    scale = np.zeros(counts.shape[0], dtype=np.float64)
    np.maximum.at(scale, inverse, np.abs(v))
    tol = counts[inverse] * np.finfo(np.float64).eps * scale[inverse]
    centred[np.abs(centred) <= tol] = 0.0
    return centred, mean


def token_signal(rollouts: Rollouts, kind: str, mask: BoolArray | None = None) -> FloatArray:
    """The per-token signal ``h`` [N, T] (0 on padding).

    ``surprisal``: ``-logprob`` of the sampled token. ``entropy``: ``-Σ_k p_k log p_k`` over the
    top-k logprobs of each position (exact when k covers the vocabulary, a lower bound
    otherwise); needs ``rollouts.topk_logprobs``.
    """
    if mask is None:
        mask = rollouts.mask
    if kind == "surprisal":
        out = np.negative(rollouts.logprobs, dtype=np.float64)
        out[~mask] = 0.0  # (faster than np.where on a batch that is mostly real tokens)
        return out
    if kind == "entropy":
        topk = rollouts.topk_logprobs
        if topk is None or topk.shape[-1] == 0:
            raise RolloutError(
                "signal 'entropy' needs top-k logprobs: sample with topk_logprobs > 0 "
                "(or use signal 'surprisal')")
        finite = np.isfinite(topk)
        safe = np.where(finite, topk, 0.0)
        ent = -(np.exp(safe) * safe * finite).sum(axis=-1)
        return np.where(mask, np.maximum(ent, 0.0), 0.0)
    raise ConfigError(f"unknown signal {kind!r}; allowed: {', '.join(SIGNALS)}")


def aggregate_advantages(
    token_adv: FloatArray, lengths: NDArray[Any], mode: str, *, horizon: int | None = None
) -> FloatArray:
    """Fold a loss-aggregation mode into token advantages (Tinker losses are sums).

    With ``loss = -Σ_i Σ_t ratio·A'_it`` the scaled advantages ``A'`` reproduce verl's modes:

    - ``token-sum``: ``A' = A`` (Tinker's own semantics);
    - ``token-mean``: ``A' = A / Σ_i L_i`` (mean over every real token of the batch);
    - ``seq-mean-token-mean``: ``A' = A / (L_i · N)`` (token mean per sequence, then mean);
    - ``seq-mean-token-sum-norm``: ``A' = A / (H · N)`` with ``H = horizon`` (default: the
      padded width T), as Dr. GRPO's constant normaliser.

    ``N`` counts sequences with at least one token. Padding stays 0.
    """
    adv = np.asarray(token_adv, dtype=np.float64)
    lens = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if adv.ndim != 2 or adv.shape[0] != lens.shape[0]:
        raise RolloutError(
            f"token advantages of shape {adv.shape} do not match {lens.shape[0]} lengths")
    if mode == "token-sum":
        return adv.copy()
    n_seq = int(np.count_nonzero(lens > 0))
    if n_seq == 0:
        return np.zeros_like(adv)
    if mode == "token-mean":
        return adv / float(lens.sum())
    if mode == "seq-mean-token-mean":
        scale = np.where(lens > 0, 1.0 / (np.maximum(lens, 1) * n_seq), 0.0)
        return adv * scale[:, None]
    if mode == "seq-mean-token-sum-norm":
        h = adv.shape[1] if horizon is None else int(horizon)
        if h <= 0:
            raise ConfigError(f"loss aggregation horizon must be > 0, got {h}")
        return adv / float(h * n_seq)
    raise ConfigError(
        f"unknown loss aggregation {mode!r}{did_you_mean(mode, AGGREGATION_MODES)}; "
        f"allowed: {', '.join(AGGREGATION_MODES)}")


# --------------------------------------------------------------------------------------------
# Pipeline


@attrs.frozen
class _BoundStage:
    record: records.AdvantageStage
    params: Any

    @property
    def name(self) -> str:
        return self.record.name


def _params_dict(params: Any) -> dict[str, Any]:
    if attrs.has(type(params)):
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in attrs.asdict(params, recurse=False).items()}
    return {}


class Pipeline:
    """An episode stage followed by token stages, with the detector and scheduler they need.

    Build with :func:`load_pipeline`. Call once per training step; the pipeline owns its
    scheduler, whose state travels with :meth:`state_dict` / :meth:`load_state_dict`.
    """

    def __init__(
        self,
        name: str,
        stages: list[_BoundStage],
        *,
        detector: tuple[records.PlanningDetector, Any] | None,
        scheduler: tuple[records.Scheduler, Any, SchedulerProtocol] | None,
        signal: str,
    ) -> None:
        self.name = name
        self._stages = tuple(stages)
        self._detector = detector
        self._scheduler = scheduler
        self.signal = signal
        self._calls = 0
        self._last_step: int | None = None

    # -- introspection --------------------------------------------------------------------

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self._stages)

    @property
    def needs_planning_mask(self) -> bool:
        return any("planning_mask" in s.record.needs for s in self._stages)

    @property
    def needs_vocab(self) -> bool:
        """True when a planning mask must be detected (pass ``vocab=`` to each call, or
        rollouts that carry ``planning_mask``)."""
        return self.needs_planning_mask

    @property
    def scheduler(self) -> SchedulerProtocol | None:
        return None if self._scheduler is None else self._scheduler[2]

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description (stages in order with resolved parameters)."""
        out: dict[str, Any] = {
            "name": self.name,
            "stages": [
                {"name": s.name, "level": s.record.level, "params": _params_dict(s.params)}
                for s in self._stages
            ],
            "signal": self.signal,
            "planning": None,
            "scheduler": None,
        }
        if self._detector is not None:
            rec, params = self._detector
            out["planning"] = {"detector": rec.name, "params": _params_dict(params),
                               "required": self.needs_planning_mask}
        if self._scheduler is not None:
            srec, sparams, _ = self._scheduler
            out["scheduler"] = {"name": srec.name, "params": _params_dict(sparams)}
        return out

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}: {' > '.join(self.stage_names)})"

    # -- state ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (scheduler state and call counter)."""
        sched = self.scheduler
        return {
            "version": 1,
            "pipeline": self.name,
            "calls": self._calls,
            "last_step": self._last_step,
            "scheduler": None if sched is None else sched.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (e.g. from a checkpoint)."""
        if not isinstance(state, Mapping) or state.get("version") != 1:
            raise ConfigError(f"pipeline state: unsupported state {state!r:.80}")
        self._calls = int(state.get("calls", 0))
        last = state.get("last_step")
        self._last_step = None if last is None else int(last)
        sched_state = state.get("scheduler")
        sched = self.scheduler
        if sched is not None and sched_state is not None:
            sched.load_state_dict(sched_state)
        elif sched is not None and sched_state is None and self._calls:
            raise ConfigError(
                f"pipeline state: {self.name!r} has a scheduler but the state holds none")

    # -- the call ---------------------------------------------------------------------------

    def detect_planning(self, rollouts: Rollouts, vocab: Any,
                        mask: BoolArray | None = None) -> BoolArray:
        """Run this pipeline's planning detector on ``rollouts`` (needs ``vocab``)."""
        if self._detector is None:
            raise ConfigError(f"pipeline {self.name!r} has no planning detector")
        rec, params = self._detector
        detected = np.asarray(rec.fn(rollouts.tokens, rollouts.lengths, vocab, params),
                              dtype=bool)
        if detected.shape != rollouts.tokens.shape:
            raise RolloutError(
                f"planning detector {rec.name!r} returned shape {detected.shape}, "
                f"expected {rollouts.tokens.shape}")
        return detected & (rollouts.mask if mask is None else mask)

    def __call__(self, rollouts: Rollouts, *, step: int, vocab: Any = None,
                 rng: np.random.Generator | None = None) -> PipelineResult:
        """Token advantages for one training step (call exactly once per step).

        ``rng`` is handed to the stages as ``StepContext.rng`` (the training loop passes the
        run's generator of this step, :func:`textpolicy.training.seeds.step_rng`); None gives
        ``numpy.random.default_rng(step)``, so a call never depends on global random state.
        """
        if not isinstance(rollouts, Rollouts):
            raise RolloutError(f"expected Rollouts, got {type(rollouts).__name__}")
        if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
            raise ConfigError(f"step must be an integer >= 0, got {step!r}")
        step = int(step)
        mask = rollouts.mask
        n = rollouts.num_completions

        plan: BoolArray | None = rollouts.planning_mask
        if plan is not None:
            plan = plan & mask
        elif vocab is not None and self._detector is not None:
            plan = self.detect_planning(rollouts, vocab, mask)
        elif self.needs_planning_mask:
            raise ConfigError(
                f"pipeline {self.name!r} needs a planning mask: pass vocab=TokenVocab... "
                "or rollouts with planning_mask")

        signal = token_signal(rollouts, self.signal, mask)
        correct_rate = float(rollouts.correct.mean()) if n else 0.0

        lam = 0.0
        gate_open = False
        if self._scheduler is not None:
            srec, _sparams, sched = self._scheduler
            exec_mask = mask if plan is None else (mask & ~plan)
            cnt = int(np.count_nonzero(exec_mask))
            var = float(signal[exec_mask].var()) if cnt else math.nan
            sched.observe(StepObservation(step=step, correct_rate=correct_rate,
                                          exec_signal_variance=var))
            raw = float(sched.value(step))
            if not math.isfinite(raw):
                raise StageError(
                    f"step {step}: scheduler {srec.name!r} returned λ = {raw}; a "
                    "scheduler must return a finite value")
            lam = min(max(raw, 0.0), 1.0)
            gate_open = bool(sched.gate_open)
        self._calls += 1
        self._last_step = step

        ctx = StepContext(step=step, sepa_lambda=lam, planning_mask=plan,
                          correct_rate=correct_rate, gate_open=gate_open, mask=mask,
                          rng=rng if rng is not None else np.random.default_rng(step))

        first, rest = self._stages[0], self._stages[1:]
        episode = _episode_output(first, first.record.fn(rollouts, ctx, first.params), n, step)
        start = np.where(mask, episode[:, None], 0.0)
        credit = TokenCredit(advantages=start, signal=signal)
        for stage in rest:
            credit = _token_output(stage, stage.record.fn(credit, rollouts, ctx, stage.params),
                                   mask, step)
        token_adv = np.where(mask, credit.advantages, 0.0)

        denom = float(np.abs(episode) @ rollouts.lengths)  # = Σ|start|, without the [N, T] pass
        diff = token_adv - start
        moved = float(np.abs(diff, out=diff).sum()) / denom if denom > 0 else 0.0
        real = int(np.count_nonzero(mask))
        share = np.count_nonzero(plan) / real if (plan is not None and real) else 0.0
        diagnostics = {
            "sepa_lambda": lam,
            "sepa_gate_open": 1.0 if gate_open else 0.0,
            "planning_token_share": share,
            "credit_moved_share": moved,
        }
        return PipelineResult(token_advantages=token_adv, episode_advantages=episode,
                              diagnostics=diagnostics, planning_mask=plan)


def _first_bad(values: FloatArray, where: BoolArray | None = None) -> tuple[int, ...] | None:
    """Index of the first non-finite value (only where ``where`` is True), or None."""
    if math.isfinite(float(np.add.reduce(values, axis=None))):
        return None  # a sum is finite only when every term is: one pass, no temporary array
    bad = ~np.isfinite(values)
    if where is not None:
        bad &= where
    if not bad.any():
        return None
    return tuple(int(v) for v in np.argwhere(bad)[0])


def _episode_output(stage: _BoundStage, out: Any, n: int, step: int) -> FloatArray:
    """An episode stage's output as float64 ``[N]``; ``StageError`` naming the stage when it
    is not an array of N finite numbers."""
    try:
        episode = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError):
        raise StageError(
            f"step {step}: episode stage {stage.name!r} returned {type(out).__name__}, "
            f"not an array of {n} advantages") from None
    if episode.shape != (n,):
        raise StageError(
            f"step {step}: stage {stage.name!r} returned shape {episode.shape}, "
            f"expected ({n},)")
    bad = _first_bad(episode)
    if bad is not None:
        raise StageError(
            f"step {step}: stage {stage.name!r} returned a non-finite episode advantage "
            f"({episode[bad]} for completion {bad[0]}); a stage must return finite values")
    return episode


def _token_output(stage: _BoundStage, out: Any, mask: BoolArray, step: int) -> TokenCredit:
    """A token stage's output checked: a ``TokenCredit`` of ``[N, T]`` arrays, finite on
    real tokens (``StageError`` naming the stage otherwise)."""
    if not isinstance(out, TokenCredit):
        raise StageError(
            f"step {step}: token stage {stage.name!r} returned {type(out).__name__}, not a "
            "TokenCredit; return attrs.evolve(credit, advantages=...) (or signal=...)")
    for label, values in (("advantage", out.advantages), ("signal", out.signal)):
        shape = getattr(values, "shape", None)
        if shape != mask.shape:
            raise StageError(
                f"step {step}: stage {stage.name!r} returned {label} values of shape {shape}, "
                f"expected {mask.shape}")
        bad = _first_bad(np.asarray(values, dtype=np.float64), mask)
        if bad is not None:
            raise StageError(
                f"step {step}: stage {stage.name!r} returned a non-finite token {label} "
                f"({values[bad]} at completion {bad[0]} token {bad[1]}); a stage must return "
                "finite values")
    return out


# --------------------------------------------------------------------------------------------
# Loading


#: what separates the stages of a composition: ``,`` (``maxrl,gtpo,hicra``, safe as an
#: unquoted shell word, the documented form) or ``>`` (``maxrl>gtpo>hicra``; a shell reads an
#: unquoted ``>`` as a redirect, so it is only safe in spec files and Python)
COMPOSITION_SEPARATORS = (",", ">")
_SEPARATOR = re.compile("|".join(re.escape(s) for s in COMPOSITION_SEPARATORS))


def _resolve_stage_refs(name: str, registry: Registry) -> tuple[str, list[records.StageRef]]:
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"pipeline name must be a non-empty string, got {name!r}")
    name = name.strip()
    if _SEPARATOR.search(name):
        parts = [p.strip() for p in _SEPARATOR.split(name)]
        if any(not p for p in parts):
            raise ConfigError(f"pipeline {name!r}: empty stage name in composition")
        for p in parts:
            registry.stages.get(p)  # raises UnknownComponentError with did-you-mean
        return ",".join(parts), [records.StageRef(stage=p) for p in parts]
    if name in registry.pipelines:
        named = registry.pipelines.get(name)
        return named.name, list(named.stages)
    if name in registry.stages:
        return name, [records.StageRef(stage=name)]
    raise registry.pipelines.unknown(name, also=registry.stages)


def _check_every_stage_acts(resolved: str, bound: list[_BoundStage]) -> None:
    """A token stage that writes only the signal acts through a later stage that needs the
    signal; without one it would silently do nothing (``maxrl>gtpo>sepa``): ConfigError."""
    for i, b in enumerate(bound):
        if b.record.level != "token" or "advantages" in b.record.writes:
            continue
        if any("signal" in later.record.needs for later in bound[i + 1:]):
            continue
        readers = [x.name for x in bound[1:i] if "signal" in x.record.needs]
        order = [x.name for x in bound]
        hint = ""
        if readers:
            order.remove(b.name)
            order.insert(order.index(readers[0]), b.name)
            hint = f"; put it before {readers[0]!r}: {','.join(order)!r}"
        raise ConfigError(
            f"pipeline {resolved!r}: stage {b.name!r} changes only the token signal and no "
            f"later stage reads it, so it would do nothing{hint}")


def split_pipeline_list(text: str, registry: Registry | None = None) -> list[str]:
    """The pipelines of a comma-separated list such as ``tp sweep --algorithms``.

    A composition's own commas stay in it: a pipeline starts with its one episode-level
    stage, so an item naming a token-level stage continues the pipeline before it and any
    other item starts a new one — ``"grpo,maxrl,gtpo,hicra"`` is ``["grpo",
    "maxrl,gtpo,hicra"]`` and ``"grpo,full"`` is ``["grpo", "full"]``. Names are not checked
    here (:func:`load_pipeline` does that, with "did you mean").
    """
    reg = registry if registry is not None else get_registry()
    out: list[str] = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        first = _SEPARATOR.split(item, maxsplit=1)[0].strip()
        continues = (bool(out) and first in reg.stages and first not in reg.pipelines
                     and reg.stages.get(first).level == "token")
        if continues:
            out[-1] = f"{out[-1]},{item}"
        else:
            out.append(item)
    return out


def load_pipeline(name: str, /, **overrides: Any) -> Pipeline:
    """Build a pipeline from a registered name, an alias or a composition ``"a,b,c"`` (or
    ``"a>b>c"``: the same pipeline).

    ``overrides`` are per-stage parameter overrides keyed by stage name (validated against
    each stage's parameter class), plus ``planning={"detector": ..., **detector_params}``.
    A key naming a stage that is not in the pipeline is a ``ConfigError``.
    """
    return build_pipeline(name, overrides)


def build_pipeline(
    name: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    registry: Registry | None = None,
    ignore_unknown_stages: bool = False,
) -> Pipeline:
    """:func:`load_pipeline` with an explicit registry and overrides mapping.

    ``ignore_unknown_stages=True`` drops overrides for stages the pipeline does not have
    (handy when one config, e.g. the seed document's SEPA flags, feeds several arms).
    """
    reg = registry if registry is not None else get_registry()
    resolved, refs = _resolve_stage_refs(name, reg)
    stage_names = [r.stage for r in refs]

    overrides = dict(overrides or {})
    planning_raw = overrides.pop("planning", None) or {}
    if not isinstance(planning_raw, Mapping):
        raise ConfigError(f"pipeline {resolved!r}: planning must be a mapping, got "
                          f"{planning_raw!r}")
    planning_cfg = dict(planning_raw)
    for key, value in overrides.items():
        if key not in stage_names:
            if ignore_unknown_stages:
                continue
            raise ConfigError(
                f"pipeline {resolved!r}: parameters for {key!r}, which is not one of its "
                f"stages ({', '.join(stage_names)}){did_you_mean(key, stage_names)}")
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"pipeline {resolved!r}: parameters for stage {key!r} must be a mapping, "
                f"got {value!r}")

    bound: list[_BoundStage] = []
    for i, ref in enumerate(refs):
        rec = reg.stages.get(ref.stage)
        if i == 0 and rec.level != "episode":
            raise ConfigError(
                f"pipeline {resolved!r}: first stage {rec.name!r} is token-level; a pipeline "
                "starts with one episode-level stage (e.g. grpo or maxrl)")
        if i > 0 and rec.level != "token":
            raise ConfigError(
                f"pipeline {resolved!r}: stage {rec.name!r} is episode-level; only the first "
                "stage may be")
        values = {**ref.param_dict, **dict(overrides.get(ref.stage, {}))}
        params = structure_params(rec.params, values, where=f"stage {rec.name!r}")
        bound.append(_BoundStage(record=rec, params=params))

    _check_every_stage_acts(resolved, bound)

    # signal: from the first stage that declares one; all must agree
    signals = {b.params.signal for b in bound if hasattr(b.params, "signal")}
    if len(signals) > 1:
        raise ConfigError(
            f"pipeline {resolved!r}: stages ask for different signals {sorted(signals)}")
    signal = signals.pop() if signals else "surprisal"
    if signal not in SIGNALS:
        raise ConfigError(f"pipeline {resolved!r}: unknown signal {signal!r}")

    det_name = planning_cfg.pop("detector", DEFAULT_DETECTOR)
    det_rec = reg.planning_detectors.get(str(det_name))
    det_params = structure_params(det_rec.params, planning_cfg,
                                  where=f"planning detector {det_rec.name!r}")

    scheduled = [b for b in bound if "sepa_lambda" in b.record.needs]
    scheduler: tuple[records.Scheduler, Any, SchedulerProtocol] | None = None
    if len(scheduled) > 1:
        raise ConfigError(
            f"pipeline {resolved!r}: more than one stage needs a scheduled λ "
            f"({', '.join(b.name for b in scheduled)})")
    if scheduled:
        b = scheduled[0]
        sched_name = getattr(b.params, "schedule", None)
        if not isinstance(sched_name, str):
            raise ConfigError(
                f"stage {b.name!r} needs a scheduled value but has no 'schedule' parameter")
        srec = reg.schedulers.get(sched_name)
        sfields = [f.name for f in attrs.fields(srec.params)] if attrs.has(srec.params) else []
        svalues = {k: getattr(b.params, k) for k in sfields if hasattr(b.params, k)}
        sparams = structure_params(srec.params, svalues, where=f"scheduler {srec.name!r}")
        scheduler = (srec, sparams, srec.factory(sparams))

    return Pipeline(resolved, bound, detector=(det_rec, det_params), scheduler=scheduler,
                    signal=signal)

