"""Exception types raised by textpolicy.

Library code raises these; the CLI edge (``textpolicy.cli``) turns every
``TextPolicyError`` into a one-line message and a non-zero exit code, never a traceback.
"""

from __future__ import annotations


class TextPolicyError(Exception):
    """Base class of every error textpolicy raises on purpose."""

    exit_code: int = 1


class ConfigError(TextPolicyError):
    """A user-supplied value (flag, spec key, parameter) is invalid. Exit code 2."""

    exit_code = 2


class PluginError(TextPolicyError):
    """A plugin could not be loaded or registers something invalid."""


class UnknownComponentError(ConfigError):
    """A component name (stage, pipeline, task, ...) is not registered."""


class RolloutError(TextPolicyError):
    """Rollout arrays are inconsistent or hold values a stage cannot accept."""


class EngineError(TextPolicyError):
    """An engine (local, tinker) failed to perform a primitive."""


class TaskError(TextPolicyError):
    """A task could not load or grade its data."""


class AnalysisError(TextPolicyError):
    """Run directories cannot be analysed as requested."""


class StageError(RolloutError):
    """An advantage stage broke its contract: wrong return type or shape, or non-finite
    values. The message names the stage and the training step."""


class IncompleteRunsError(AnalysisError):
    """Some runs cannot be measured at the planned endpoint (one line per run). Exit code 3."""

    exit_code = 3


class LockedError(TextPolicyError):
    """Another process (or run of this one) is writing the directory: one writer at a time."""


class RunDamagedError(ConfigError):
    """A run directory's files do not match its checkpoints (refused; nothing was changed)."""


class ServiceUnreachable(EngineError):
    """An engine's service (Tinker, `tp serve`) stayed unreachable for longer than its retry
    budget; the run stops (a re-run resumes from the last checkpoint)."""


class Aborted(TextPolicyError):
    """A second interrupt (Ctrl-C, SIGTERM) ended the command at once. Exit code 130; the CLI
    exits without waiting for threads (every run file is as after a crash, and a re-run
    resumes)."""

    exit_code = 130
