"""Loading spec files: every problem found, one line each.

Loading happens in phases so that *every* problem is reported: cattrs structures the raw table
with ``forbid_extra_keys`` and strict scalar hooks (unknown keys and wrong types, all of them;
what failed is then dropped and the rest structured again), each field's attrs validator runs
separately (values out of range), cross-field rules run, and ``_resolve`` checks names and
parameters against the plugin registry (engine, task, pipeline, each stage's parameter class).
Every problem becomes ``FILE: key.path: value: problem; allowed: ...`` and they are raised
together as one ``SpecError``.
"""

from __future__ import annotations

import copy
import inspect
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from textpolicy.errors import ConfigError, TextPolicyError
from textpolicy.plugins import did_you_mean
from textpolicy.runner.spec import (
    KINDS,
    POOL_KEYS,
    SECRET_KEY,
    SWEEP_SEED_BASE,
    ArmSpec,
    EngineSpec,
    ExecutorSpec,
    Spec,
    SpecError,
    TaskSpec,
    load_pipeline_with,
    merged_stage_params,
    pipeline_stages,
)


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

    base_executor = conv.get_structure_hook(ExecutorSpec)

    def executor_hook(value: Any, t: type) -> ExecutorSpec:
        if isinstance(value, str):
            return ExecutorSpec(name=value)
        if not isinstance(value, Mapping):
            raise TypeError("expected an executor name or a table")
        return base_executor(value, t)

    conv.register_structure_hook(ExecutorSpec, executor_hook)
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
        table = ".".join(str(p) for p in path)
        # [engine] / [executor]: their plugin's own keys go one table down
        hint = (f" (an option of the {path[-1]} goes under [{table}.options])"
                if "options" in allowed and path else "")
        for key in sorted(exc.extra_fields):
            yield _Problem((*path, key), f"unknown key{did_you_mean(key, allowed)}; allowed: "
                           + ", ".join(allowed) + hint, show_value=False)
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


def _clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was (a 10 MB name must not
    become a 10 MB error line)."""
    if len(text) <= limit:
        return text
    return f"{text[: limit - 30]}... ({len(text):,} characters)"


def _render(source: str, raw: Mapping[str, Any], problems: Sequence[_Problem]) -> list[str]:
    lines = []
    for problem in problems:
        found, value = _lookup(raw, problem.path)
        value_text = f"{_fmt_value(value)}: " if (problem.show_value and found) else ""
        path = _clip(_fmt_path(problem.path), 120)
        line = f"{_clip(source, 200)}: {path}: {value_text}{_clip(problem.message, MAX_LINE)}"
        if line not in lines:
            lines.append(line)
    return lines


#: the longest problem message shown (names and values inside it are cut)
MAX_LINE = 800


def _non_finite(raw: Any, path: tuple[str | int, ...] = ()) -> Iterator[_Problem]:
    """Every ``nan``, ``inf`` and ``-inf`` anywhere in the raw table (TOML allows them; no
    setting of textpolicy means one)."""
    if isinstance(raw, float) and not math.isfinite(raw):
        yield _Problem(path, "not a finite number; allowed: a finite number")
    elif isinstance(raw, Mapping):
        for key, value in raw.items():
            yield from _non_finite(value, (*path, key))
    elif isinstance(raw, list):
        for i, value in enumerate(raw):
            yield from _non_finite(value, (*path, i))


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
    non_finite = list(_non_finite(raw))
    if non_finite:  # reported once each, and dropped so no other check sees them
        problems.extend(non_finite)
        raw_for_structure = copy.deepcopy(raw_for_structure)
        for problem in non_finite:
            _drop(raw_for_structure, problem.path)
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
        if resolve and spec.kind != "pool":  # names and plugin parameters too, at once
            seen = {problem.path for problem in problems}
            problems.extend(p for p in _resolve(spec, raw, base_dir) if p.path not in seen)
    if problems:
        flagged = {problem.path for problem in non_finite}
        problems = non_finite + [p for p in problems[len(non_finite):] if p.path not in flagged]
        raise SpecError(source, _render(source, raw, problems))
    assert spec is not None
    return spec


def _drop(raw: Any, path: Sequence[str | int]) -> None:
    """Remove the value at ``path`` (an array keeps its other items)."""
    *parents, last = path or ("",)
    found, parent = _lookup(raw, parents)
    if found and isinstance(parent, dict) and last in parent:
        del parent[last]
    elif found and isinstance(parent, list) and isinstance(last, int):
        parent[last] = None


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
    if spec.kind == "pool" or spec.pool is not None:
        yield from _pool_problems(spec, raw)
        return
    labels = [arm.label for arm in spec.arms]
    folded = [label.casefold() for label in labels]  # directories: X and x collide on macOS
    for i, label in enumerate(labels):
        first = folded.index(folded[i])
        if first != i:
            same = "" if labels[first] == label else f" (same as {labels[first]!r} ignoring case)"
            yield _Problem(("arms", i, "name"), f"duplicate arm name {label!r}{same}; give each "
                           "arm a unique name (arm names are compared ignoring case: they are "
                           "directory names)")
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
    shared = sorted(set(spec.sweep.seeds) & set(spec.seeds))
    if spec.kind == "experiment" and shared and not spec.sweep.share_seeds:
        yield _Problem(("sweep", "seeds"), f"{', '.join(map(str, shared))} "
                       f"{'is' if len(shared) == 1 else 'are'} also campaign "
                       f"seed{'s' if len(shared) > 1 else ''}: a campaign run would replay a "
                       "probe and the LR choice would leak into the verdict; allowed: seeds "
                       f"disjoint from seeds (default [{SWEEP_SEED_BASE}]), or "
                       "sweep.share_seeds = true to reuse them knowingly")
    if spec.lr_sweep is not None and spec.kind != "campaign":
        yield _Problem(("lr_sweep",), "only used by kind 'campaign' (an experiment records its "
                       "own sweep)", show_value=False)
    elif spec.lr_sweep is not None and not _sweep_results_path(spec.lr_sweep).is_file():
        yield _Problem(("lr_sweep",), "no sweep_results.json there; allowed: the "
                       "sweep_results.json (or directory) of the sweep that chose the LRs")
    if spec.sweep.select == "eval" and spec.eval.every == 0 and spec.kind != "campaign":
        yield _Problem(("sweep", "select"), "needs held-out eval; allowed: set eval.every > 0, "
                       "or select = 'running_correct_rate'")
    from textpolicy.runner.sequential import spec_problems

    for where, message in spec_problems(spec, raw):
        yield _Problem(where, message, show_value=where[-1] == "looks")
    for path, table in _secret_tables(spec):
        for key in table:
            if SECRET_KEY.search(key):
                yield _Problem((*path, key), "secrets do not belong in specs or flags (plans "
                               "and run files record them); allowed: set them in the "
                               "environment (e.g. TINKER_API_KEY)",
                               show_value=False)


def _pool_problems(spec: Spec, raw: Mapping[str, Any]) -> Iterator[_Problem]:
    """``kind = "pool"``: only its keys, the [pool] table, existing campaign directories
    that can be pooled (``analysis.pooling``'s check, one line per mismatch)."""
    if spec.kind != "pool":
        yield _Problem(("pool",), f"not used by kind {spec.kind!r}; allowed: kind = 'pool'",
                       show_value=False)
        return
    for key in raw:
        if key not in POOL_KEYS:
            yield _Problem((key,), "not used by kind 'pool' (it trains nothing: the "
                           "campaigns' own settings are pooled); allowed: "
                           + ", ".join(POOL_KEYS), show_value=False)
    if spec.pool is None:
        if "pool" not in raw:
            yield _Problem(("pool",), "required for kind 'pool'; allowed: a [pool] table with "
                           "campaigns = [\"DIR\", \"DIR\", ...]", show_value=False)
        return
    if isinstance(raw.get("analysis"), Mapping) and raw["analysis"].get("enabled") is False:
        yield _Problem(("analysis", "enabled"), "a pool spec is its analysis; allowed: true")
    missing = False
    for i, campaign in enumerate(spec.pool.campaigns):
        if not Path(campaign).is_dir():
            missing = True
            yield _Problem(("pool", "campaigns", i), "no such directory (relative to the "
                           "current directory); allowed: a campaign directory")
    if missing or len(spec.pool.campaigns) < 2 or len(set(spec.pool.campaigns)) != len(
            spec.pool.campaigns):
        return
    from textpolicy.analysis.pooling import pool_campaigns

    try:
        pool_campaigns(spec.pool.campaigns)
    except TextPolicyError as exc:
        lines = str(exc).splitlines()
        for line in lines[1:] if len(lines) > 1 else lines:
            yield _Problem(("pool", "campaigns"), line, show_value=False)


def _sweep_results_path(value: str) -> Path:
    path = Path(value)
    return path / "sweep_results.json" if path.is_dir() else path


def _secret_tables(spec: Spec) -> Iterator[tuple[tuple[str | int, ...], Mapping[str, Any]]]:
    yield ("engine", "options"), spec.engine.options
    yield ("executor", "options"), spec.executor.options
    yield ("task", "params"), spec.task.params


# --------------------------------------------------------------------------- resolution
def _resolve(spec: Spec, raw: Mapping[str, Any], base_dir: Path | None
             ) -> Iterator[_Problem]:
    """Check names and plugin parameters against the registry."""
    from textpolicy.plugins import get_registry

    registry = get_registry()
    engines = registry.engines
    if spec.engine.name not in engines:
        path: tuple[str | int, ...] = (
            ("engine",) if isinstance(raw.get("engine"), str) else ("engine", "name"))
        yield _unknown(path, "engine", spec.engine.name, engines.names(), engines.failed)
    else:
        factory = engines.get(spec.engine.name).factory
        yield from _check_kwargs(factory, spec.engine.options, ("engine", "options"))
    yield from executor_problems(spec.executor, raw)
    tasks = registry.tasks
    if spec.task.name not in tasks:
        path = ("task",) if isinstance(raw.get("task"), str) else ("task", "name")
        yield _unknown(path, "task", spec.task.name, tasks.names(), tasks.failed)
    else:
        yield from _param_problems(tasks.get(spec.task.name).params, spec.task.params,
                                   ("task", "params"))
    if spec.model and _looks_like_path(spec.model) and spec.engine.name == "local":
        model_path = Path(spec.model)
        if not model_path.is_absolute() and base_dir is not None and not model_path.exists():
            model_path = base_dir / model_path
        if not model_path.exists():
            yield _Problem(("model",), "file or directory not found; allowed: a registered "
                           "model name or an existing checkpoint directory")
    stage_names = set(registry.stages.names())
    bad_shared: set[str] = set()  # stage_params tables already reported
    for stage, params in spec.stage_params.items():
        for problem in _check_stage_params(registry, stage, params, ("stage_params", stage),
                                           stage_names):
            bad_shared.add(stage)
            yield problem
    for i, arm in enumerate(spec.arms):
        stages = yield from _check_pipeline(arm.pipeline, ("arms", i, "pipeline"))
        if stages is None:
            continue
        reported = bool(bad_shared & {*stages, "planning"})
        for stage, params in arm.params.items():
            if stage != "planning" and stage not in stages:
                reported = True
                yield _Problem(("arms", i, "params", stage), f"{stage!r} is not a stage of "
                               f"pipeline {arm.pipeline!r}; allowed: "
                               + ", ".join([*sorted(stages), "planning"]), show_value=False)
                continue
            for problem in _check_stage_params(registry, stage, params,
                                               ("arms", i, "params", stage), stage_names):
                reported = True
                yield problem
        if reported:  # the pipeline would only repeat a problem already reported
            continue
        merged = merged_stage_params(spec, arm, stages)
        try:
            load_pipeline_with(arm.pipeline, merged)
        except TextPolicyError as exc:
            yield _Problem(("arms", i), f"pipeline {arm.pipeline!r} rejects its parameters: "
                           f"{exc}", show_value=False)


def executor_problems(executor: ExecutorSpec, raw: Mapping[str, Any]) -> Iterator[_Problem]:
    """An unknown executor, options its parameter class rejects, its package missing."""
    from textpolicy.plugins import get_registry, structure_params

    executors = get_registry().executors
    name_path: tuple[str | int, ...] = (
        ("executor",) if isinstance(raw.get("executor"), str) else ("executor", "name"))
    if executor.name not in executors:
        yield _unknown(name_path, "executor", executor.name, executors.names(),
                       executors.failed)
        return
    record = executors.get(executor.name)
    bad = list(_param_problems(record.params, executor.options, ("executor", "options")))
    yield from bad
    if bad or record.check is None:
        return
    try:
        record.check(structure_params(record.params, executor.options, where="x"))
    except ConfigError as exc:
        yield _Problem(name_path, str(exc))


def check_executor(executor: ExecutorSpec, source: str) -> None:
    """``SpecError`` for what :func:`executor_problems` finds (an executor set by flags)."""
    raw = {"executor": {"name": executor.name, "options": dict(executor.options)}}
    problems = list(executor_problems(executor, raw))
    if problems:
        raise SpecError(source, _render(source, raw, problems))


def _looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or Path(model).exists()


def _unknown(path: tuple[str | int, ...], human: str, name: str,
             known: Sequence[str], failed: Sequence[str] = ()) -> _Problem:
    """An unknown name; ``failed`` ("plugin: error" of plugins that failed to load, whose
    components are missing) is named too."""
    broken = (f"; plugins that failed to load: {'; '.join(failed)} (see tp plugins)"
              if failed else "")
    return _Problem(path, f"unknown {human}{did_you_mean(name, known)}; allowed: "
                    + ", ".join(known) + broken)


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
    if stage == "planning":
        detector = params.get("detector")
        known = registry.planning_detectors.names()
        if detector is not None and detector not in registry.planning_detectors:
            yield _unknown((*path, "detector"), "planning detector", str(detector), known,
                           registry.planning_detectors.failed)
        return
    if stage not in stage_names:
        yield _Problem(path, f"unknown stage{did_you_mean(stage, stage_names)}; allowed: "
                       + ", ".join([*sorted(stage_names), "planning"]), show_value=False)
        return
    yield from _param_problems(registry.stages.get(stage).params, params, path)


def _param_problems(params_cls: type, params: Mapping[str, Any],
                    path: tuple[str | int, ...]) -> Iterator[_Problem]:
    """Every bad key of a plugin's parameter table: each key is checked alone (a second bad
    key is reported too), then, when all pass, the table as a whole (rules between keys)."""
    from textpolicy.plugins import structure_params

    bad = False
    for key, value in params.items():
        try:
            structure_params(params_cls, {key: value}, where="x")
        except ConfigError as exc:
            bad = True
            yield _param_problem(path, exc)
    if not bad:
        try:
            structure_params(params_cls, params, where="x")
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
