"""Frozen records that plugins register through the hooks of ``textpolicy.hookspecs``.

Every component kind has one record type. A record carries the component's name, the callable
(or factory) that implements it, the frozen attrs class of its parameters, and a one-line doc.
Parameter classes are plain ``@attrs.frozen`` classes whose fields all have defaults; specs and
``load_pipeline(**params)`` are validated against them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import attrs

StageLevel = Literal["episode", "token"]


@attrs.frozen
class NoParams:
    """Parameter class of components that take no parameters."""


def _str_tuple(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _check_name(_inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value or not all(c.isalnum() or c in "_-.+" for c in value):
        raise ValueError(f"invalid component name {value!r} for {attribute.name}")


#: what a stage may list in ``AdvantageStage.needs``
STAGE_NEEDS = ("planning_mask", "sepa_lambda", "signal")
#: what a token stage may list in ``AdvantageStage.writes``
STAGE_WRITES = ("advantages", "signal")


def _one_of(allowed: tuple[str, ...]) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def check(_inst: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
        import difflib

        for item in value:
            if item not in allowed:
                close = difflib.get_close_matches(item, allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"{attribute.name}: {item!r} is not one of "
                                 f"{', '.join(allowed)}{hint}")

    return check


@attrs.frozen
class AdvantageStage:
    """An advantage stage.

    ``level == "episode"``: ``fn(rollouts, ctx, params) -> ndarray[N]`` scalar advantages per
    completion, computed strictly within each group (``rollouts.group_ids``).

    ``level == "token"``: ``fn(credit, rollouts, ctx, params) -> TokenCredit`` transforms the
    token-level credit (advantages ``[N, T]`` and signal ``[N, T]``) of each completion.

    ``needs`` lists what the stage reads besides the advantages: ``"planning_mask"`` and
    ``"sepa_lambda"`` from the step context (they make a pipeline build its planning detector
    and scheduler), ``"signal"`` from the credit (``credit.signal``).

    ``writes`` lists what a token stage changes: ``"advantages"`` (default) and/or
    ``"signal"``. A stage that writes only the signal acts only through a later stage that
    needs it, so a pipeline without one is rejected (``maxrl>gtpo>sepa``).
    """

    name: str = attrs.field(validator=_check_name)
    level: StageLevel
    fn: Callable[..., Any]
    params: type = NoParams
    doc: str = ""
    needs: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple,
                                         validator=_one_of(STAGE_NEEDS))
    writes: tuple[str, ...] = attrs.field(default=("advantages",), converter=_str_tuple,
                                          validator=_one_of(STAGE_WRITES))


@attrs.frozen
class PlanningDetector:
    """``fn(tokens[N, T], lengths[N], vocab, params) -> bool[N, T]`` planning-token mask."""

    name: str = attrs.field(validator=_check_name)
    fn: Callable[..., Any]
    params: type = NoParams
    doc: str = ""


@attrs.frozen
class Scheduler:
    """``factory(params) -> object`` with ``observe(obs)``, ``value(step)``, ``state_dict()``,
    ``load_state_dict(state)`` (see ``textpolicy.pipeline.SchedulerProtocol``)."""

    name: str = attrs.field(validator=_check_name)
    factory: Callable[..., Any]
    params: type = NoParams
    doc: str = ""


@attrs.frozen
class RewardFunction:
    """``fn(completion: str, example, params) -> textpolicy.tasks.base.Grade``."""

    name: str = attrs.field(validator=_check_name)
    fn: Callable[..., Any]
    params: type = NoParams
    doc: str = ""


@attrs.frozen
class SignificanceTest:
    """``fn(data: textpolicy.analysis.records.AnalysisInput, params) -> TestResult``.

    ``tp analyze`` runs every registered test on every comparison and reports it; the
    recommendation comes from the design's primary test (``paired_seeds``, ``welch_runs`` or
    ``prompt_paired``), never from a plugin. ``role`` (``"primary"``, ``"secondary"``,
    ``"generation_level"`` for pseudo-replicated tests) orders the report's rows. The full
    contract (units, ``data.rng``, ``not_applicable``) is in docs/plugins.md.
    """

    name: str = attrs.field(validator=_check_name)
    fn: Callable[..., Any]
    params: type = NoParams
    role: Literal["primary", "secondary", "generation_level"] = "secondary"
    doc: str = ""


def _sorted_items(values: Any) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(dict(values).items()))


@attrs.frozen
class StageRef:
    """One stage of a pipeline with its parameter overrides (validated at load time)."""

    stage: str
    params: tuple[tuple[str, Any], ...] = attrs.field(default=(), converter=_sorted_items)

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)


def _stage_tuple(values: Iterable[StageRef]) -> tuple[StageRef, ...]:
    return tuple(values)


@attrs.frozen
class NamedPipeline:
    """An ordered list of stages with default parameters: exactly one episode-level stage
    first, then zero or more token-level stages. ``aliases`` are extra names (the seed
    document's ``--algorithm full`` maps onto ``maxrl+gtpo_sepa_hicra``)."""

    name: str = attrs.field(validator=_check_name)
    stages: tuple[StageRef, ...] = attrs.field(converter=_stage_tuple)
    doc: str = ""
    aliases: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)


@attrs.frozen
class EnginePlugin:
    """``factory(**options) -> textpolicy.engines.base.Engine``.

    ``check(model, **options) -> notes`` (optional) is what a dry run asks before anything
    runs: quick, it makes and loads nothing; it raises ``ConfigError`` for what the factory or
    ``create_training_client(model, ...)`` would refuse (a model path, an option value) and
    returns one-line notes on this machine's environment that would stop a run here (no
    credentials, a service that does not answer)."""

    name: str = attrs.field(validator=_check_name)
    factory: Callable[..., Any]
    doc: str = ""
    check: Callable[..., Sequence[str]] | None = None


@attrs.frozen
class TaskPlugin:
    """``factory(params) -> textpolicy.tasks.base.Task``."""

    name: str = attrs.field(validator=_check_name)
    factory: Callable[..., Any]
    params: type = NoParams
    doc: str = ""


@attrs.frozen
class ExecutorPlugin:
    """Where the runs of a sweep or campaign execute (``local``, ``ray``, ``slurm``, ...).

    ``factory(params, root) -> textpolicy.runner.executors.RunExecutor | None``: ``params``
    is an instance of ``params`` (the spec's ``[executor.options]``, validated like stage
    parameters), ``root`` the plan's output directory. ``None`` means the runner's own slots
    (threads or worker processes of this machine); only ``local`` returns it. The factory
    makes and connects nothing: ``RunExecutor.start()`` does, so a dry run can describe an
    executor without reaching it.

    ``check(params) -> None`` (optional) raises ``ConfigError`` with one line naming the
    install command when a package the executor needs is missing; a spec naming the executor
    is refused with it before anything is written."""

    name: str = attrs.field(validator=_check_name)
    factory: Callable[..., Any]
    params: type = NoParams
    doc: str = ""
    check: Callable[..., None] | None = None
