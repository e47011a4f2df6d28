"""The textpolicy plugin contract: every hook a plugin may implement.

A plugin is a module or object with functions decorated by ``textpolicy.hookimpl`` whose names
match the specs below. Each hook returns an iterable of frozen records (``textpolicy.records``);
the plugin manager collects them from every plugin into one registry per kind. A component name
registered twice is an error, and so is a hook implementation whose name matches no spec.

Third-party plugins declare an entry point in the ``textpolicy`` group::

    [project.entry-points.textpolicy]
    my_plugin = "my_package.plugin"

Set ``TEXTPOLICY_DISABLE_PLUGINS=1`` to load only the built-ins, or a comma-separated list of
entry-point names to skip just those. ``TEXTPOLICY_TRACE_HOOKS=1`` prints every hook call
(plugin and the names it returned) on stderr.

Every hook is called once, when the registry is first built; none is ``firstresult``.
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from textpolicy import records

hookspec = pluggy.HookspecMarker("textpolicy")


@hookspec
def textpolicy_register_stages() -> Iterable[records.AdvantageStage]:
    """Return advantage stages (episode-level or token-level).

    Called once when the registry is built. Stages are pure functions over padded numpy
    arrays and must keep groups separate: an episode stage may only combine rewards that
    share a group id; a token stage may only combine tokens of one completion. A pipeline is
    one episode stage first, then token stages; it fails the training step with a
    ``StageError`` naming the stage when one returns the wrong type or shape or a non-finite
    value. Contract and examples: docs/plugins.md.
    """
    raise NotImplementedError


@hookspec
def textpolicy_register_planning_detectors() -> Iterable[records.PlanningDetector]:
    """Return planning-token detectors (token ids → boolean mask of planning tokens).

    Called once when the registry is built.
    """
    raise NotImplementedError


@hookspec
def textpolicy_register_schedulers() -> Iterable[records.Scheduler]:
    """Return schedulers: stateful per-step values (e.g. SEPA's λ) with state_dict support.

    Called once when the registry is built. A scheduler instance is observed exactly once per
    training step and its state is saved with every checkpoint.
    """
    raise NotImplementedError


@hookspec
def textpolicy_register_rewards() -> Iterable[records.RewardFunction]:
    """Return reward functions (completion text + example → reward and correctness).

    Called once when the registry is built.
    """
    raise NotImplementedError


@hookspec
def textpolicy_register_significance_tests() -> Iterable[records.SignificanceTest]:
    """Return significance tests run by ``tp analyze``.

    Called once when the registry is built. Tests read an ``AnalysisInput`` and return a
    ``TestResult``; they must not loop over resamples in Python.
    """
    raise NotImplementedError


@hookspec
def textpolicy_register_pipelines() -> Iterable[records.NamedPipeline]:
    """Return named pipelines: an episode stage followed by token stages, with defaults.

    Called once when the registry is built. Stage names are resolved (and parameters
    validated) when a pipeline is loaded, so a pipeline may use stages of other plugins.
    """
    raise NotImplementedError


@hookspec
def textpolicy_register_engines() -> Iterable[records.EnginePlugin]:
    """Return training/sampling engines (``local``, ``tinker``, ...).

    Called once when the registry is built.
    """
    raise NotImplementedError


@hookspec
def textpolicy_register_tasks() -> Iterable[records.TaskPlugin]:
    """Return tasks (prompt sources with graders: ``arithmetic``, ``math``, ...).

    Called once when the registry is built.
    """
    raise NotImplementedError


@hookspec
def textpolicy_register_executors() -> Iterable[records.ExecutorPlugin]:
    """Return executors: where the planned runs of a sweep or campaign execute.

    Called once when the registry is built. An executor takes planned runs and returns
    futures (``concurrent.futures.Future``) of their results, one remote task or job per run
    (:class:`textpolicy.runner.executors.RunExecutor`); the runner keeps the rest —
    skip-if-done, resume, the manifest, ``--continue-on-error``, Ctrl-C — the same for every
    executor. Built-ins: ``local`` (this machine's threads or processes, the default),
    ``ray`` and ``slurm`` (submitit). Workers must see the output directory (a shared
    filesystem). Contract and examples: docs/executors.md.
    """
    raise NotImplementedError
