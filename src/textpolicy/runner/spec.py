"""Spec files: TOML → frozen attrs classes, validated with every problem reported at once.

Four kinds of spec share one schema (``kind = "sweep" | "campaign" | "experiment" |
"pool"``)::

    kind = "experiment"
    engine = "local"                 # or [engine] name = "tinker" + [engine.options]
    task = "arithmetic"              # or [task] name = "math" + [task.params]
    seeds = [0, 1, 2, 3]
    [training]   lr, max_steps, batch_size, group_size, lora_rank, ...
    [eval]       every, samples, prompts, temperature
    [stage_params.sepa]  ramp_steps = 100   # every arm whose pipeline has the stage
    [[arms]]     name, pipeline, lr, params
    [sweep]      lr_values, probe_steps, seeds, select
    [analysis]   alpha, resamples, seed, mde
    [wandb]      project, entity, group
    [sequential] looks, spending, futility
    [executor]   name = "local" | "ray" | "slurm" + [executor.options]
    [pool]       campaigns, spending   # kind = "pool": finished campaigns analysed as one

``Spec.from_toml`` loads and validates a file (``textpolicy.runner.specload``): every problem
— unknown keys, wrong types, values out of range, unknown plugin names, plugin parameters
their own classes reject, missing files — becomes one line
``FILE: key.path: value: problem; allowed: ...``, and they are raised together as one
``SpecError`` (a ``ConfigError``: exit code 2).
"""

from __future__ import annotations

import itertools
import math
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from textpolicy.errors import ConfigError
from textpolicy.plugins import did_you_mean
from textpolicy.training.config import TrainConfig
from textpolicy.training.seeds import MAX_SEED

KINDS = ("sweep", "campaign", "experiment", "pool")
#: the top-level keys a ``kind = "pool"`` spec uses (it trains nothing)
POOL_KEYS = ("kind", "name", "output", "pool", "analysis")
SELECT_METRICS = ("auto", "eval", "running_correct_rate")
LOSSES = ("importance_sampling", "ppo", "cross_entropy")
LOSS_AGGREGATIONS = ("token-sum", "token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
SECRET_KEY = re.compile(r"(api[_-]?key|secret|password|token$|^token)", re.IGNORECASE)
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
DEFAULT_LR_VALUES = (5e-5, 2e-4, 5e-4, 1e-3)
#: sweep seeds count from here (campaign seeds from 0), so no campaign run replays a probe
SWEEP_SEED_BASE = 1000
SWEEP_SPLITS = ("validation", "test")
#: bounds on sizes, so that a typo (``seeds = 0-1500000``, ``resamples = 2**63-1``) is an
#: error at once rather than minutes of planning or an analysis that fails at the end
MAX_SEEDS = 1000
MAX_ARMS = 64
MAX_LR_VALUES = 64
MAX_RESAMPLES = 10_000_000
MAX_SPEC_BYTES = 1 << 20
#: names become directory names (at most 255 bytes on most file systems)
MAX_NAME = 100
#: TOML arrays / inline tables nest at most this deep (tomllib recurses per level)
MAX_NESTING = 32
UTF8_BOM = b"\xef\xbb\xbf"


class SpecError(ConfigError):
    """A spec has one or more problems; ``problems`` holds one line per problem."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        n = len(self.problems)
        head = f"invalid spec {source} ({n} problem{'s' if n != 1 else ''}):"
        super().__init__("\n".join([head, *self.problems]))


# --------------------------------------------------------------------------- validators
def _doc(text: str, allowed: str = "") -> dict[str, str]:
    return {"doc": text, "allowed": allowed}


def _finite(v: Any) -> bool:
    return isinstance(v, int) or math.isfinite(v)


def _positive(_i: object, a: attrs.Attribute[Any], v: Any) -> None:
    if v is not None and not _finite(v):  # nan passes `v <= 0`
        raise ValueError("not a finite number; allowed: a finite number > 0")
    if v is not None and v <= 0:
        raise ValueError("must be > 0")


def _non_negative(_i: object, a: attrs.Attribute[Any], v: Any) -> None:
    if v is not None and not _finite(v):
        raise ValueError("not a finite number; allowed: a finite number >= 0")
    if v is not None and v < 0:
        raise ValueError("must be >= 0")


def _at_most(limit: int, what: str = "") -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def check(_i: object, a: attrs.Attribute[Any], v: Any) -> None:
        if v is not None and v > limit:
            raise ValueError(f"must be at most {limit:,}{what}")

    return check


def _max_len(limit: int) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def check(_i: object, a: attrs.Attribute[Any], v: Any) -> None:
        if len(v) > limit:
            raise ValueError(f"{len(v):,} values; allowed: at most {limit:,}")

    return check


def _open_unit(_i: object, a: attrs.Attribute[Any], v: Any) -> None:
    if v is not None and not 0 < v < 1:
        raise ValueError("must be strictly between 0 and 1")


def _one_of(*choices: str) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def check(_i: object, a: attrs.Attribute[Any], v: Any) -> None:
        if v not in choices:
            raise ValueError(f"not allowed{did_you_mean(str(v), choices)}; allowed: "
                             + ", ".join(choices))

    return check


def _safe_name(_i: object, a: attrs.Attribute[Any], v: Any) -> None:
    if v is not None and not SAFE_NAME.match(v):
        raise ValueError("must be a file-system safe name; allowed: letters, digits, _ . -")
    if v is not None and len(v) > MAX_NAME:
        raise ValueError(f"{len(v):,} characters; allowed: a name of at most {MAX_NAME}")


def _each(check: Callable[[object, attrs.Attribute[Any], Any], None]
          ) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def run(i: object, a: attrs.Attribute[Any], values: Any) -> None:
        for v in values:
            check(i, a, v)

    return run


def _non_empty(_i: object, a: attrs.Attribute[Any], v: Any) -> None:
    if len(v) == 0:
        raise ValueError("must not be empty")


def _unique(_i: object, a: attrs.Attribute[Any], v: Any) -> None:
    if len(set(v)) != len(v):
        raise ValueError("values must be unique")


def _tc_default(name: str) -> Any:
    return attrs.fields_dict(TrainConfig)[name].default


def _freeze_map(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return dict(value or {})


# --------------------------------------------------------------------------- spec classes
@attrs.frozen
class EngineSpec:
    """Which engine runs training and sampling. ``engine = "local"`` is short for
    ``[engine] name = "local"``."""

    name: str = attrs.field(default="local", metadata=_doc(
        "engine name", "a registered engine (`tp plugins`): local, tinker"))
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_map, metadata=_doc(
        "keyword options of the engine factory (local: device; tinker: base_url); never "
        "secrets — the Tinker key comes from TINKER_API_KEY", "the engine factory's keywords"))


@attrs.frozen
class ExecutorSpec:
    """Where the runs execute (docs/executors.md). ``executor = "ray"`` is short for
    ``[executor] name = "ray"``."""

    name: str = attrs.field(default="local", metadata=_doc(
        "executor name", "a registered executor (`tp plugins`): local, ray, slurm"))
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_map, metadata=_doc(
        "the executor's options (ray: address, num_cpus, num_gpus, local_cpus; slurm: "
        "partition, gpus_per_node, timeout_min, cpus_per_task, mem_gb, account, qos, "
        "constraint, cluster)", "the executor's parameter class"))


@attrs.frozen
class TaskSpec:
    """The task: prompts, held-out prompts and grader. ``task = "math"`` is short for
    ``[task] name = "math"``."""

    name: str = attrs.field(default=_tc_default("task"), metadata=_doc(
        "task name", "a registered task: arithmetic, math"))
    params: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_map, metadata=_doc(
        "task parameters, checked against the task's parameter class", "the task's params"))


@attrs.frozen
class TrainingSpec:
    """Hyper-parameters shared by every run (the seed document's training flags)."""

    lr: float | None = attrs.field(default=None, validator=_positive, metadata=_doc(
        "learning rate of arms that set none and are not tuned by a sweep (omit: the task's "
        "default — 4e-5 as in the seed document; arithmetic: 1e-3)", "> 0"))
    max_steps: int = attrs.field(default=_tc_default("max_steps"), validator=_positive,
                                 metadata=_doc("training steps per campaign run", "> 0"))
    batch_size: int = attrs.field(default=_tc_default("batch_size"), validator=_positive,
                                  metadata=_doc("prompts per step", "> 0"))
    group_size: int = attrs.field(default=_tc_default("group_size"), validator=_positive,
                                  metadata=_doc("completions per prompt", "> 0"))
    lora_rank: int | None = attrs.field(default=None, validator=_non_negative, metadata=_doc(
        "LoRA rank; 0 trains all weights (omit: the task's default — 64; arithmetic: 0)",
        ">= 0"))
    max_tokens: int | None = attrs.field(default=None, validator=_positive, metadata=_doc(
        "maximum completion length in tokens (omit: the task's default — 2048; "
        "arithmetic: 4)", "> 0"))
    temperature: float | None = attrs.field(default=None, validator=_positive, metadata=_doc(
        "sampling temperature (omit: the task's default — 0.7; arithmetic: 1.0)", "> 0"))
    save_every: int = attrs.field(default=_tc_default("save_every"), validator=_non_negative,
                                  metadata=_doc("checkpoint interval in steps (0: only at the "
                                                "end)", ">= 0"))
    max_examples: int | None = attrs.field(default=None, validator=_positive, metadata=_doc(
        "limit the training set to this many examples (omit: all)", "> 0"))
    loss: str = attrs.field(default=_tc_default("loss"), validator=_one_of(*LOSSES),
                            metadata=_doc("loss function", ", ".join(LOSSES)))
    loss_aggregation: str = attrs.field(
        default=_tc_default("loss_aggregation"), validator=_one_of(*LOSS_AGGREGATIONS),
        metadata=_doc("how token losses are aggregated", ", ".join(LOSS_AGGREGATIONS)))


@attrs.frozen
class EvalSpec:
    """Held-out evaluation during training (the same prompts in every arm and seed)."""

    every: int | None = attrs.field(default=None, validator=_non_negative, metadata=_doc(
        "evaluate every N steps and at the end; 0: never (omit: the task's default — 0; "
        "arithmetic: 10)", ">= 0"))
    samples: int = attrs.field(default=_tc_default("eval_samples"), validator=_positive,
                               metadata=_doc("samples per held-out prompt", "> 0"))
    prompts: int | None = attrs.field(default=None, validator=_positive, metadata=_doc(
        "number of held-out prompts (omit: all of the task's held-out set)", "> 0"))
    temperature: float = attrs.field(default=_tc_default("eval_temperature"),
                                     validator=_positive,
                                     metadata=_doc("sampling temperature of eval", "> 0"))


@attrs.frozen
class ArmSpec:
    """One arm: a pipeline with its parameters and (optionally) its own learning rate."""

    pipeline: str = attrs.field(metadata=_doc(
        "pipeline name, alias or composition (`tp pipelines`)", "grpo, maxrl, full, ..., "
        "or a composition like maxrl,gtpo,hicra (or maxrl>gtpo>hicra)"))
    name: str | None = attrs.field(default=None, validator=_safe_name, metadata=_doc(
        "arm name: its directory and the condition label (omit: the pipeline name)",
        "letters, digits, _ . -"))
    lr: float | None = attrs.field(default=None, validator=_positive, metadata=_doc(
        "this arm's learning rate (omit: tuned by the sweep in an experiment, else "
        "training.lr)", "> 0"))
    params: Mapping[str, Mapping[str, Any]] = attrs.field(
        factory=dict, converter=_freeze_map, metadata=_doc(
            "stage parameters of this arm, keyed by stage name (+ `planning`); every key must "
            "be a stage of the arm's pipeline", "each stage's parameter class"))

    @property
    def label(self) -> str:
        """The arm's name, or its pipeline name when that is a safe directory name."""
        if self.name:
            return self.name
        return self.pipeline if SAFE_NAME.match(self.pipeline) else _slug(self.pipeline)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "arm"


DEFAULT_ARMS = (ArmSpec(pipeline="grpo", name="baseline"),
                ArmSpec(pipeline="full", name="candidate"))


@attrs.frozen
class SweepSpec:
    """The LR sweep: short probes of every arm at every LR (× sweep seeds)."""

    lr_values: tuple[float, ...] = attrs.field(
        default=DEFAULT_LR_VALUES, converter=tuple,
        validator=[_non_empty, _max_len(MAX_LR_VALUES), _unique, _each(_positive)],
        metadata=_doc("learning rates to probe", "unique values > 0"))
    probe_steps: int = attrs.field(default=20, validator=_positive,
                                   metadata=_doc("training steps per probe", "> 0"))
    seeds: tuple[int, ...] = attrs.field(
        default=(SWEEP_SEED_BASE,), converter=tuple,
        validator=[_non_empty, _max_len(MAX_SEEDS), _unique, _each(_non_negative),
                   _each(_at_most(MAX_SEED))],
        metadata=_doc("seeds of every probe; disjoint from the campaign seeds unless "
                      "share_seeds = true (a campaign run at a shared seed would replay a "
                      "probe)", f"unique, 0 to {MAX_SEED}"))
    share_seeds: bool = attrs.field(default=False, metadata=_doc(
        "allow sweep seeds that are also campaign seeds (the campaign report then says which "
        "runs replay probes)", "true, false"))
    split: str = attrs.field(default="validation", validator=_one_of(*SWEEP_SPLITS),
                             metadata=_doc(
        "held-out split the probes are evaluated on and the LR is chosen by; test is the "
        "campaign endpoint's prompts (the campaign report then says the LRs were chosen on "
        "them)", ", ".join(SWEEP_SPLITS)))
    select: str = attrs.field(default="auto", validator=_one_of(*SELECT_METRICS), metadata=_doc(
        "metric that picks the best LR: eval accuracy on `split` (mean over seeds) or the "
        "final running correct rate; auto = eval when [eval] every > 0",
        ", ".join(SELECT_METRICS)))
    plot: bool = attrs.field(default=True, metadata=_doc("write sweep_plot.png", "true, false"))


@attrs.frozen
class AnalysisSpec:
    """The campaign's statistical analysis (run at the end of a campaign)."""

    enabled: bool = attrs.field(default=True, metadata=_doc(
        "run the analysis when every run has finished", "true, false"))
    alpha: float = attrs.field(default=0.05, validator=_open_unit,
                               metadata=_doc("significance level", "0 < alpha < 1"))
    resamples: int = attrs.field(default=20000, validator=[
        _positive, _at_most(MAX_RESAMPLES)], metadata=_doc(
        "bootstrap / permutation resamples", f"1 to {MAX_RESAMPLES:,}"))
    seed: int = attrs.field(default=0, validator=[_non_negative, _at_most(MAX_SEED)],
                            metadata=_doc("seed of the resampling", f"0 to {MAX_SEED}"))
    mde: float | None = attrs.field(default=None, validator=_positive, metadata=_doc(
        "minimum detectable effect for the power estimate (omit: the observed effect)", "> 0"))
    margin_pp: float | None = attrs.field(default=None, validator=_positive, metadata=_doc(
        "non-inferiority / equivalence margin in percentage points: adds a one-sided "
        "non-inferiority test (H0: Δ ≤ −margin) and a TOST equivalence test (omit: none)",
        "> 0"))


def _increasing(_i: object, a: attrs.Attribute[Any], v: Any) -> None:
    if any(b <= x for x, b in itertools.pairwise(v)):
        raise ValueError("must be strictly increasing")


@attrs.frozen
class SequentialSpec:
    """A group-sequential campaign: seeds run in waves, analysed after each wave (a look),
    stopping once the primary test crosses its Lan–DeMets boundary (docs/statistics.md)."""

    looks: tuple[int, ...] = attrs.field(
        converter=tuple, validator=[_non_empty, _each(_positive), _increasing],
        metadata=_doc("complete seed pairs at each look (the first seeds of `seeds`); the "
                      "last look is the most seeds the campaign may use", "strictly "
                      "increasing integers > 0, the last <= the number of seeds"))
    spending: str = attrs.field(default="obrien-fleming",
                                validator=_one_of("obrien-fleming", "pocock"), metadata=_doc(
        "Lan–DeMets alpha-spending function (two-sided, at analysis.alpha)",
        "obrien-fleming, pocock"))
    futility: str = attrs.field(default="none", validator=_one_of("none", "non-binding"),
                                metadata=_doc(
        "non-binding: also stop when the conditional power under the current trend falls "
        "below 0.10 (the efficacy boundaries ignore it, so alpha holds)", "none, non-binding"))


def _at_least(n: int) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def check(_i: object, a: attrs.Attribute[Any], v: Any) -> None:
        if len(v) < n:
            raise ValueError(f"{len(v)} value{'s' if len(v) != 1 else ''}; allowed: at least "
                             f"{n}")

    return check


@attrs.frozen
class PoolSpec:
    """`kind = "pool"`: finished campaigns of the same arms and settings analysed as one,
    each campaign a look of a group-sequential design (docs/statistics.md, "Pooling
    campaigns"). A campaign added after looking at an earlier result counts as a look."""

    campaigns: tuple[str, ...] = attrs.field(
        converter=tuple, validator=[_at_least(2), _max_len(MAX_SEEDS), _unique],
        metadata=_doc("campaign directories, relative to the current directory, in the order "
                      "they were run (look k pools campaigns 1..k); same arms and settings, "
                      "disjoint seeds", "at least two existing campaign directories"))
    spending: str = attrs.field(default="obrien-fleming",
                                validator=_one_of("obrien-fleming", "pocock"), metadata=_doc(
        "Lan–DeMets alpha-spending function over the looks (two-sided, at analysis.alpha)",
        "obrien-fleming, pocock"))


@attrs.frozen
class WandbSpec:
    """Direct logging of every run to Weights & Biases (the section's presence enables it)."""

    project: str = attrs.field(default="textpolicy-tinker", metadata=_doc("W&B project", ""))
    entity: str | None = attrs.field(default=None, metadata=_doc(
        "W&B entity (omit: your default entity)", ""))
    group: str | None = attrs.field(default=None, metadata=_doc(
        "W&B group of every run (omit: the spec's name)", ""))
    mode: str | None = attrs.field(default=None, validator=attrs.validators.optional(
        _one_of("online", "offline", "disabled")), metadata=_doc(
        "W&B mode (omit: WANDB_MODE or online)", "online, offline, disabled"))


@attrs.frozen
class Spec:
    """A whole spec file. ``kind`` selects what ``tp run`` does with it."""

    kind: str = attrs.field(validator=_one_of(*KINDS), metadata=_doc(
        "sweep: LR probes; campaign: arms × seeds + analysis; experiment: sweep, then a "
        "campaign at the tuned LRs, then the analysis; pool: the pooled analysis of finished "
        "campaigns ([pool])", ", ".join(KINDS)))
    name: str | None = attrs.field(default=None, validator=_safe_name, metadata=_doc(
        "experiment name: W&B group and default output directory (omit: the file's stem)",
        "letters, digits, _ . -"))
    output: str | None = attrs.field(default=None, metadata=_doc(
        "output directory, relative to the current directory (omit: results/<name>)", "a path"))
    engine: EngineSpec = attrs.field(factory=EngineSpec, metadata=_doc(
        "engine name, or a table with name and options", "see [engine]"))
    model: str | None = attrs.field(default=None, metadata=_doc(
        "model name or local checkpoint path (omit: the task's default model)", ""))
    task: TaskSpec = attrs.field(factory=TaskSpec, metadata=_doc(
        "task name, or a table with name and params", "see [task]"))
    seeds: tuple[int, ...] = attrs.field(
        default=(0,), converter=tuple, validator=[
            _non_empty, _max_len(MAX_SEEDS), _unique, _each(_non_negative),
            _each(_at_most(MAX_SEED))],
        metadata=_doc("campaign seeds; seed s is paired across arms (same init, data order, "
                      "eval prompts)", f"unique, 0 to {MAX_SEED}, at most {MAX_SEEDS}"))
    parallel: int = attrs.field(default=1, validator=_positive, metadata=_doc(
        "runs executed at the same time", "> 0"))
    continue_on_error: bool = attrs.field(default=False, metadata=_doc(
        "keep going when a run fails", "true, false"))
    executor: ExecutorSpec = attrs.field(factory=ExecutorSpec, metadata=_doc(
        "executor name, or a table with name and options (where runs execute; `parallel` "
        "caps the runs submitted at once)", "see [executor]"))
    baseline: str | None = attrs.field(default=None, metadata=_doc(
        "name of the baseline arm (omit: the first arm)", "an arm name"))
    lr_sweep: str | None = attrs.field(default=None, metadata=_doc(
        "campaign: the sweep_results.json (or sweep directory) of the sweep that chose the "
        "arms' LRs, relative to the current directory; the manifest and the report record "
        "which split and seeds chose them and any overlap with this campaign (the sweep's "
        "campaign.toml sets it)", "a path"))
    training: TrainingSpec = attrs.field(factory=TrainingSpec,
                                         metadata=_doc("see [training]", ""))
    eval: EvalSpec = attrs.field(factory=EvalSpec, metadata=_doc("see [eval]", ""))
    stage_params: Mapping[str, Mapping[str, Any]] = attrs.field(
        factory=dict, converter=_freeze_map, metadata=_doc(
            "stage parameters applied to every arm whose pipeline has that stage (the seed "
            "document's --gtpo-beta, --sepa-steps, ...)", "each stage's parameter class"))
    arms: tuple[ArmSpec, ...] = attrs.field(default=DEFAULT_ARMS, converter=tuple,
                                           validator=[_non_empty, _max_len(MAX_ARMS)],
                                           metadata=_doc(
        "the arms (default: baseline = grpo, candidate = full)", "see [[arms]]"))
    sweep: SweepSpec = attrs.field(factory=SweepSpec, metadata=_doc("see [sweep]", ""))
    analysis: AnalysisSpec = attrs.field(factory=AnalysisSpec,
                                         metadata=_doc("see [analysis]", ""))
    wandb: WandbSpec | None = attrs.field(default=None, metadata=_doc(
        "see [wandb]; omit the section to log nothing to W&B", ""))
    sequential: SequentialSpec | None = attrs.field(default=None, metadata=_doc(
        "see [sequential]; omit the section for a fixed design (every seed, one analysis)",
        ""))
    pool: PoolSpec | None = attrs.field(default=None, metadata=_doc(
        "see [pool]; kind = \"pool\" only (which then uses only kind, name, output, pool and "
        "analysis)", ""))

    # ------------------------------------------------------------------ derived values
    @property
    def baseline_arm(self) -> ArmSpec:
        if self.baseline is None:
            return self.arms[0]
        return next(a for a in self.arms if a.label == self.baseline)

    def output_dir(self) -> Path:
        return Path(self.output) if self.output else Path("results") / (self.name or "spec")

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec as plain data (None values dropped, as TOML has no null)."""
        return _drop_none(attrs.asdict(self))

    @classmethod
    def from_toml(cls, path: str | Path) -> Spec:
        """Load, validate and resolve a spec file; raise ``SpecError`` listing every problem."""
        p = Path(path)
        source = str(path)
        if not p.is_file():
            raise SpecError(source, [f"{source}: file not found"])
        raw = parse_toml(p.read_bytes(), source)
        if "name" not in raw:
            raw = {**raw, "name": _slug(p.stem)}
        return cls.from_dict(raw, source=source, base_dir=p.parent)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, source: str = "<spec>",
                  base_dir: Path | None = None) -> Spec:
        """Validate ``raw`` (a parsed TOML table) in all phases; raise ``SpecError``."""
        return load_spec(raw, source=source, base_dir=base_dir)


def parse_toml(data: bytes, source: str) -> dict[str, Any]:
    """Parse a spec file's bytes; ``SpecError`` (one line) for a file too large, a UTF-8
    byte-order mark, bytes that are not UTF-8, nesting deeper than ``MAX_NESTING`` or
    invalid TOML."""
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(source, [f"{source}: {len(data):,} bytes; allowed: a spec file of at "
                                 f"most {MAX_SPEC_BYTES:,} bytes"])
    if data.startswith(UTF8_BOM):
        raise SpecError(source, [f"{source}: starts with a UTF-8 byte-order mark (BOM, bytes "
                                 "EF BB BF), which TOML does not allow; save it as UTF-8 "
                                 "without BOM"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(source, [f"{source}: not UTF-8 (byte {exc.start}); allowed: a UTF-8 "
                                 "TOML file"]) from None
    depth = _bracket_depth(text)
    if depth > MAX_NESTING:
        raise SpecError(source, [f"{source}: arrays or inline tables nested {depth} deep; "
                                 f"allowed: at most {MAX_NESTING}"])
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(source, [f"{source}: not valid TOML: {exc}"]) from None
    except RecursionError:  # a backstop: brackets inside strings can hide nesting
        raise SpecError(source, [f"{source}: nested too deeply; allowed: at most "
                                 f"{MAX_NESTING} levels"]) from None


def _bracket_depth(text: str) -> int:
    """The nesting of arrays and inline tables, estimated as the deepest run of open
    ``[``/``{`` over close brackets (brackets inside strings and comments count too;
    vectorised: a cumulative sum over the bracket characters)."""
    import numpy as np

    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    steps = (np.isin(codes, (ord("["), ord("{"))).astype(np.int64)
             - np.isin(codes, (ord("]"), ord("}"))))
    return int(np.cumsum(steps).max(initial=0))


def _drop_none(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_drop_none(v) for v in value]
    return value


def load_spec(raw: Mapping[str, Any], *, source: str = "<spec>",
              base_dir: Path | None = None, resolve: bool = True) -> Spec:
    """Structure, validate and (optionally) resolve a raw spec table (see ``specload``)."""
    from textpolicy.runner.specload import load_spec as _load

    return _load(raw, source=source, base_dir=base_dir, resolve=resolve)


# --------------------------------------------------------------------------- pipelines
def load_pipeline_with(name: str, params: Mapping[str, Any]) -> Any:
    from textpolicy.pipeline import load_pipeline

    return load_pipeline(name, **{k: dict(v) for k, v in params.items()})


def pipeline_stages(name: str) -> tuple[str, ...]:
    """Stage names of a pipeline (``ConfigError`` for an unknown name)."""
    return tuple(load_pipeline_with(name, {}).stage_names)


def merged_stage_params(spec: Spec, arm: ArmSpec, stages: Sequence[str] | None = None
                        ) -> dict[str, dict[str, Any]]:
    """Stage parameters of one arm: ``stage_params`` for the arm's stages, then its own."""
    if stages is None:
        stages = pipeline_stages(arm.pipeline)
    merged: dict[str, dict[str, Any]] = {}
    for stage, params in spec.stage_params.items():
        if stage in stages or (stage == "planning" and _needs_vocab(arm.pipeline)):
            merged[stage] = dict(params)
    for stage, params in arm.params.items():
        merged.setdefault(stage, {}).update(params)
    return merged


def _needs_vocab(pipeline: str) -> bool:
    return bool(getattr(load_pipeline_with(pipeline, {}), "needs_vocab", False))
