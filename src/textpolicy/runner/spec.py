"""Spec files: TOML → frozen attrs classes, validated with every problem reported at once.

Three kinds of spec share one schema (``kind = "sweep" | "campaign" | "experiment"``)::

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

Loading happens in two phases so that *every* problem is found: cattrs structures the raw
table with ``forbid_extra_keys`` and strict scalar hooks (unknown keys and wrong types, all of
them), then each field's attrs validator runs separately (values out of range), then
``resolve`` checks names and parameters against the plugin registry (engine, task, pipeline,
stage parameter classes). Every problem becomes one line
``FILE: key.path: value: problem; allowed: ...`` and they are raised together as one
``SpecError`` (a ``ConfigError``: exit code 2).
"""

from __future__ import annotations

import copy
import inspect
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from textpolicy.errors import ConfigError, TextPolicyError
from textpolicy.plugins import did_you_mean
from textpolicy.training.config import TrainConfig

KINDS = ("sweep", "campaign", "experiment")
SELECT_METRICS = ("auto", "eval", "running_correct_rate")
LOSSES = ("importance_sampling", "ppo", "cross_entropy")
LOSS_AGGREGATIONS = ("token-sum", "token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
SECRET_KEY = re.compile(r"(api[_-]?key|secret|password|token$|^token)", re.IGNORECASE)
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
DEFAULT_LR_VALUES = (5e-5, 2e-4, 5e-4, 1e-3)


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


def _positive(_i: object, a: attrs.Attribute[Any], v: Any) -> None:
    if v is not None and v <= 0:
        raise ValueError("must be > 0")


def _non_negative(_i: object, a: attrs.Attribute[Any], v: Any) -> None:
    if v is not None and v < 0:
        raise ValueError("must be >= 0")


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
        "or a composition like maxrl>gtpo>hicra"))
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
        validator=[_non_empty, _unique, _each(_positive)],
        metadata=_doc("learning rates to probe", "unique values > 0"))
    probe_steps: int = attrs.field(default=20, validator=_positive,
                                   metadata=_doc("training steps per probe", "> 0"))
    seeds: tuple[int, ...] = attrs.field(default=(0,), converter=tuple,
                                         validator=[_non_empty, _unique, _each(_non_negative)],
                                         metadata=_doc("seeds of every probe", "unique, >= 0"))
    select: str = attrs.field(default="auto", validator=_one_of(*SELECT_METRICS), metadata=_doc(
        "metric that picks the best LR: held-out eval (mean over seeds) or the final running "
        "correct rate; auto = eval when [eval] every > 0", ", ".join(SELECT_METRICS)))
    plot: bool = attrs.field(default=True, metadata=_doc("write sweep_plot.png", "true, false"))


@attrs.frozen
class AnalysisSpec:
    """The campaign's statistical analysis (run at the end of a campaign)."""

    enabled: bool = attrs.field(default=True, metadata=_doc(
        "run the analysis when every run has finished", "true, false"))
    alpha: float = attrs.field(default=0.05, validator=_open_unit,
                               metadata=_doc("significance level", "0 < alpha < 1"))
    resamples: int = attrs.field(default=20000, validator=_positive, metadata=_doc(
        "bootstrap / permutation resamples", "> 0"))
    seed: int = attrs.field(default=0, validator=_non_negative,
                            metadata=_doc("seed of the resampling", ">= 0"))
    mde: float | None = attrs.field(default=None, validator=_positive, metadata=_doc(
        "minimum detectable effect for the power estimate (omit: the observed effect)", "> 0"))


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
        "campaign at the tuned LRs, then the analysis", ", ".join(KINDS)))
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
        default=(0,), converter=tuple, validator=[_non_empty, _unique, _each(_non_negative)],
        metadata=_doc("campaign seeds; seed s is paired across arms (same init, data order, "
                      "eval prompts)", "unique, >= 0"))
    parallel: int = attrs.field(default=1, validator=_positive, metadata=_doc(
        "runs executed at the same time", "> 0"))
    continue_on_error: bool = attrs.field(default=False, metadata=_doc(
        "keep going when a run fails", "true, false"))
    baseline: str | None = attrs.field(default=None, metadata=_doc(
        "name of the baseline arm (omit: the first arm)", "an arm name"))
    training: TrainingSpec = attrs.field(factory=TrainingSpec,
                                         metadata=_doc("see [training]", ""))
    eval: EvalSpec = attrs.field(factory=EvalSpec, metadata=_doc("see [eval]", ""))
    stage_params: Mapping[str, Mapping[str, Any]] = attrs.field(
        factory=dict, converter=_freeze_map, metadata=_doc(
            "stage parameters applied to every arm whose pipeline has that stage (the seed "
            "document's --gtpo-beta, --sepa-steps, ...)", "each stage's parameter class"))
    arms: tuple[ArmSpec, ...] = attrs.field(default=DEFAULT_ARMS, converter=tuple,
                                           validator=_non_empty, metadata=_doc(
        "the arms (default: baseline = grpo, candidate = full)", "see [[arms]]"))
    sweep: SweepSpec = attrs.field(factory=SweepSpec, metadata=_doc("see [sweep]", ""))
    analysis: AnalysisSpec = attrs.field(factory=AnalysisSpec,
                                         metadata=_doc("see [analysis]", ""))
    wandb: WandbSpec | None = attrs.field(default=None, metadata=_doc(
        "see [wandb]; omit the section to log nothing to W&B", ""))

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
        return _drop_none(CONVERTER.unstructure(self))

    @classmethod
    def from_toml(cls, path: str | Path) -> Spec:
        """Load, validate and resolve a spec file; raise ``SpecError`` listing every problem."""
        p = Path(path)
        source = str(path)
        if not p.is_file():
            raise SpecError(source, [f"{source}: file not found"])
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SpecError(source, [f"{source}: not valid TOML: {exc}"]) from None
        if "name" not in raw:
            raw = {**raw, "name": _slug(p.stem)}
        return cls.from_dict(raw, source=source, base_dir=p.parent)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, source: str = "<spec>",
                  base_dir: Path | None = None) -> Spec:
        """Validate ``raw`` (a parsed TOML table) in all phases; raise ``SpecError``."""
        return load_spec(raw, source=source, base_dir=base_dir)


def _drop_none(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_drop_none(v) for v in value]
    return value


# --------------------------------------------------------------------------- converter
def _strict_int(value: Any, _t: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("expected an integer")
    return value


def _strict_float(value: Any, _t: type) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("expected a number")
    return float(value)


def _strict_str(value: Any, _t: type) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _strict_bool(value: Any, _t: type) -> bool:
    if not isinstance(value, bool):
        raise TypeError("expected true or false")
    return value


def _table(value: Any, _t: type) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError("expected a table")
    return dict(value)


def _table_of_tables(value: Any, _t: type) -> dict[str, Any]:
    table = _table(value, _t)
    for key, inner in table.items():
        if not isinstance(inner, Mapping):
            raise _NestedTypeError(key, inner, "expected a table of parameters")
    return table


class _NestedTypeError(TypeError):
    def __init__(self, key: str, value: Any, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.value = value


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(float, _strict_float)
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook(bool, _strict_bool)
    conv.register_structure_hook_func(lambda t: t == Mapping[str, Any], _table)
    conv.register_structure_hook_func(lambda t: t == Mapping[str, Mapping[str, Any]],
                                      _table_of_tables)
    base_engine = conv.get_structure_hook(EngineSpec)
    base_task = conv.get_structure_hook(TaskSpec)

    def engine_hook(value: Any, t: type) -> EngineSpec:
        if isinstance(value, str):
            return EngineSpec(name=value)
        if not isinstance(value, Mapping):
            raise TypeError("expected an engine name or a table")
        return base_engine(value, t)

    def task_hook(value: Any, t: type) -> TaskSpec:
        if isinstance(value, str):
            return TaskSpec(name=value)
        if not isinstance(value, Mapping):
            raise TypeError("expected a task name or a table")
        return base_task(value, t)

    conv.register_structure_hook(EngineSpec, engine_hook)
    conv.register_structure_hook(TaskSpec, task_hook)
    for t in (tuple[int, ...], tuple[float, ...], tuple[ArmSpec, ...]):
        base = conv.get_structure_hook(t)
        conv.register_structure_hook_func(_is_type(t), _list_only(base))
    return conv


def _is_type(target: Any) -> Callable[[Any], bool]:
    def check(t: Any) -> bool:
        return bool(t == target)

    return check


def _list_only(base: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def hook(value: Any, t: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise TypeError("expected an array")
        return base(value, t)

    return hook


CONVERTER = _make_converter()


# --------------------------------------------------------------------------- error walking
@attrs.frozen
class _Problem:
    path: tuple[str | int, ...]
    message: str
    show_value: bool = True


def _fmt_path(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def _lookup(raw: Any, path: Sequence[str | int]) -> tuple[bool, Any]:
    node = raw
    for part in path:
        in_list = isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node)
        in_table = isinstance(part, str) and isinstance(node, Mapping) and part in node
        if not (in_list or in_table):
            return False, None
        node = node[part]
    return True, node


def _fmt_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _walk(exc: BaseException, path: tuple[str | int, ...]) -> Iterator[_Problem]:
    if isinstance(exc, ForbiddenExtraKeysError):
        allowed = [f.name for f in attrs.fields(exc.cl)]
        for key in sorted(exc.extra_fields):
            yield _Problem((*path, key), f"unknown key{did_you_mean(key, allowed)}; allowed: "
                           + ", ".join(allowed), show_value=False)
        return
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        for sub in exc.exceptions:
            sub_path = path
            for note in getattr(sub, "__notes__", ()):
                if hasattr(note, "name") and isinstance(getattr(note, "name", None), str):
                    sub_path = (*path, note.name)
                elif hasattr(note, "index"):
                    sub_path = (*path, int(note.index))
            yield from _walk(sub, sub_path)
        return
    if isinstance(exc, _NestedTypeError):
        yield _Problem((*path, exc.key), str(exc))
        return
    if isinstance(exc, KeyError):
        yield _Problem(path, "required key is missing", show_value=False)
        return
    message = str(exc)
    if isinstance(exc, TypeError) and "missing" in message and "required" in message:
        missing = re.findall(r"'(\w+)'", message)
        for name in missing or ["?"]:
            yield _Problem((*path, name), "required key is missing", show_value=False)
        return
    yield _Problem(path, message)


def _run_validators(obj: Any, path: tuple[str | int, ...]) -> Iterator[_Problem]:
    """Run every attrs validator of ``obj`` (recursively), collecting each failure."""
    for field in attrs.fields(type(obj)):
        value = getattr(obj, field.name)
        here = (*path, field.name)
        if field.validator is not None:
            try:
                field.validator(obj, field, value)
            except (ValueError, TypeError) as exc:
                yield _Problem(here, str(exc))
        if attrs.has(type(value)):
            yield from _run_validators(value, here)
        elif isinstance(value, tuple):
            for i, item in enumerate(value):
                if attrs.has(type(item)):
                    yield from _run_validators(item, (*here, i))


def _render(source: str, raw: Mapping[str, Any], problems: Sequence[_Problem]) -> list[str]:
    lines = []
    for problem in problems:
        found, value = _lookup(raw, problem.path)
        value_text = f"{_fmt_value(value)}: " if (problem.show_value and found) else ""
        line = f"{source}: {_fmt_path(problem.path)}: {value_text}{problem.message}"
        if line not in lines:
            lines.append(line)
    return lines


# --------------------------------------------------------------------------- loading
def load_spec(raw: Mapping[str, Any], *, source: str = "<spec>",
              base_dir: Path | None = None, resolve: bool = True) -> Spec:
    """Structure, validate and (optionally) resolve a raw spec table."""
    problems: list[_Problem] = []
    raw = dict(raw)
    if "kind" not in raw:
        problems.append(_Problem(("kind",), "required key is missing; allowed: "
                                 + ", ".join(KINDS), show_value=False))
        raw_for_structure = {**raw, "kind": "campaign"}
    else:
        raw_for_structure = raw
    spec: Spec | None = None
    with attrs.validators.disabled():
        try:
            spec = CONVERTER.structure(raw_for_structure, Spec)
        except (ClassValidationError, IterableValidationError, ForbiddenExtraKeysError) as exc:
            found = list(_walk(exc, ()))
            problems.extend(found)
            # Structure what is left (bad keys dropped) so the value checks still run.
            pruned = copy.deepcopy(raw_for_structure)
            for problem in found:
                _prune(pruned, problem)
            try:
                spec = CONVERTER.structure(pruned, Spec)
            except Exception:
                spec = None
        except (TypeError, ValueError) as exc:  # the top level is not a table
            problems.append(_Problem((), str(exc)))
    if spec is not None:
        problems.extend(_run_validators(spec, ()))
        problems.extend(_check_structure(spec, raw))
        if resolve and not problems:
            problems.extend(_resolve(spec, raw, base_dir))
    if problems:
        raise SpecError(source, _render(source, raw, problems))
    assert spec is not None
    return spec


def _prune(raw: Any, problem: _Problem) -> None:
    """Drop the value at a problem's path (fill a missing required key with a placeholder)."""
    *parents, last = problem.path or ("",)
    found, parent = _lookup(raw, parents)
    if not found:
        return
    if problem.message.startswith("required key"):
        if isinstance(parent, dict):
            parent[last] = "placeholder"
    elif isinstance(parent, dict) and last in parent:
        del parent[last]


def _check_structure(spec: Spec, raw: Mapping[str, Any]) -> Iterator[_Problem]:
    """Cross-field rules that need no registry."""
    labels = [arm.label for arm in spec.arms]
    for i, label in enumerate(labels):
        if labels.index(label) != i:
            yield _Problem(("arms", i, "name"), f"duplicate arm name {label!r}; give each arm "
                           "a unique name")
    if spec.baseline is not None and spec.baseline not in labels:
        names = list(dict.fromkeys(labels))
        yield _Problem(("baseline",), f"no arm has this name{did_you_mean(spec.baseline, names)}"
                       f"; allowed: {', '.join(names)}")
    if spec.kind in ("campaign", "experiment") and len(spec.arms) < 2:
        yield _Problem(("arms",), f"a {spec.kind} needs at least two arms", show_value=False)
    if spec.kind == "campaign" and "sweep" in raw:
        yield _Problem(("sweep",), "not used by kind 'campaign'; allowed: kind = 'sweep' or "
                       "'experiment'", show_value=False)
    if spec.kind == "sweep":
        for key in ("seeds", "baseline", "analysis"):
            if key in raw:
                yield _Problem((key,), "not used by kind 'sweep'" + (
                    "; use sweep.seeds" if key == "seeds" else ""), show_value=False)
    if spec.kind == "experiment" and not any(arm.lr is None for arm in spec.arms):
        yield _Problem(("arms",), "every arm sets lr, so an experiment has nothing to sweep; "
                       "allowed: kind = 'campaign', or omit lr of the arms to tune",
                       show_value=False)
    if spec.sweep.select == "eval" and spec.eval.every == 0 and spec.kind != "campaign":
        yield _Problem(("sweep", "select"), "needs held-out eval; allowed: set eval.every > 0, "
                       "or select = 'running_correct_rate'")
    for path, table in _secret_tables(spec):
        for key in table:
            if SECRET_KEY.search(key):
                yield _Problem((*path, key), "secrets do not belong in spec files; allowed: "
                               "set them in the environment (e.g. TINKER_API_KEY)",
                               show_value=False)


def _secret_tables(spec: Spec) -> Iterator[tuple[tuple[str | int, ...], Mapping[str, Any]]]:
    yield ("engine", "options"), spec.engine.options
    yield ("task", "params"), spec.task.params


# --------------------------------------------------------------------------- resolution
def _resolve(spec: Spec, raw: Mapping[str, Any], base_dir: Path | None
             ) -> Iterator[_Problem]:
    """Check names and plugin parameters against the registry."""
    from textpolicy.plugins import get_registry, structure_params

    registry = get_registry()
    engines = registry.engines
    if spec.engine.name not in engines:
        path: tuple[str | int, ...] = (
            ("engine",) if isinstance(raw.get("engine"), str) else ("engine", "name"))
        yield _unknown(path, "engine", spec.engine.name, engines.names())
    else:
        factory = engines.get(spec.engine.name).factory
        yield from _check_kwargs(factory, spec.engine.options, ("engine", "options"))
    tasks = registry.tasks
    if spec.task.name not in tasks:
        path = ("task",) if isinstance(raw.get("task"), str) else ("task", "name")
        yield _unknown(path, "task", spec.task.name, tasks.names())
    else:
        task_record = tasks.get(spec.task.name)
        try:
            structure_params(task_record.params, spec.task.params, where="x")
        except ConfigError as exc:
            yield _param_problem(("task", "params"), exc)
    if spec.model and _looks_like_path(spec.model) and spec.engine.name == "local":
        model_path = Path(spec.model)
        if not model_path.is_absolute() and base_dir is not None and not model_path.exists():
            model_path = base_dir / model_path
        if not model_path.exists():
            yield _Problem(("model",), "file or directory not found; allowed: a registered "
                           "model name or an existing checkpoint directory")
    stage_names = set(registry.stages.names())
    for stage, params in spec.stage_params.items():
        yield from _check_stage_params(registry, stage, params, ("stage_params", stage),
                                       stage_names)
    for i, arm in enumerate(spec.arms):
        stages = yield from _check_pipeline(arm.pipeline, ("arms", i, "pipeline"))
        if stages is None:
            continue
        for stage, params in arm.params.items():
            if stage != "planning" and stage not in stages:
                yield _Problem(("arms", i, "params", stage), f"{stage!r} is not a stage of "
                               f"pipeline {arm.pipeline!r}; allowed: "
                               + ", ".join([*sorted(stages), "planning"]), show_value=False)
                continue
            yield from _check_stage_params(registry, stage, params, ("arms", i, "params", stage),
                                           stage_names)
        merged = merged_stage_params(spec, arm, stages)
        try:
            _load_pipeline(arm.pipeline, merged)
        except TextPolicyError as exc:
            yield _Problem(("arms", i), f"pipeline {arm.pipeline!r} rejects its parameters: "
                           f"{exc}", show_value=False)


def _looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or Path(model).exists()


def _unknown(path: tuple[str | int, ...], human: str, name: str,
             known: Sequence[str]) -> _Problem:
    return _Problem(path, f"unknown {human}{did_you_mean(name, known)}; allowed: "
                    + ", ".join(known))


def _param_problem(path: tuple[str | int, ...], exc: ConfigError) -> _Problem:
    message = str(exc)
    if message.startswith("x: "):
        message = message[3:]
    m = re.match(r"unknown parameter '([^']+)'(.*)", message)
    if m:
        return _Problem((*path, m.group(1)), "unknown key" + m.group(2), show_value=False)
    m = re.match(r"(\w+) (must .*|.*)", message)
    if m and m.group(1).isidentifier():
        return _Problem((*path, m.group(1)), m.group(2))
    return _Problem(path, message, show_value=False)


def _check_kwargs(factory: Callable[..., Any], options: Mapping[str, Any],
                  path: tuple[str | int, ...]) -> Iterator[_Problem]:
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    allowed = [n for n, p in params.items() if p.kind in kinds]
    for key in options:
        if key not in allowed:
            yield _Problem((*path, key), f"unknown key{did_you_mean(key, allowed)}; allowed: "
                           + (", ".join(allowed) or "(none)"), show_value=False)


def _check_stage_params(registry: Any, stage: str, params: Mapping[str, Any],
                        path: tuple[str | int, ...], stage_names: set[str]) -> Iterator[_Problem]:
    from textpolicy.plugins import structure_params

    if stage == "planning":
        detector = params.get("detector")
        known = registry.planning_detectors.names()
        if detector is not None and detector not in registry.planning_detectors:
            yield _unknown((*path, "detector"), "planning detector", str(detector), known)
        return
    if stage not in stage_names:
        yield _Problem(path, f"unknown stage{did_you_mean(stage, stage_names)}; allowed: "
                       + ", ".join([*sorted(stage_names), "planning"]), show_value=False)
        return
    try:
        structure_params(registry.stages.get(stage).params, params, where="x")
    except ConfigError as exc:
        yield _param_problem(path, exc)


def _check_pipeline(name: str, path: tuple[str | int, ...]
                    ) -> Any:  # generator returning the stage names (or None)
    try:
        stages = pipeline_stages(name)
    except TextPolicyError as exc:
        yield _Problem(path, str(exc))
        return None
    return stages


def _load_pipeline(name: str, params: Mapping[str, Any]) -> Any:
    from textpolicy.pipeline import load_pipeline

    return load_pipeline(name, **{k: dict(v) for k, v in params.items()})


def pipeline_stages(name: str) -> tuple[str, ...]:
    """Stage names of a pipeline (``ConfigError`` for an unknown name)."""
    return tuple(_load_pipeline(name, {}).stage_names)


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
    return bool(getattr(_load_pipeline(pipeline, {}), "needs_vocab", False))
