"""``tp train``: train one run (one arm, one seed) into a run directory.

The flags are the seed document's ``train_math`` flags plus ``--engine``, ``--task``,
``--seed``, ``--eval-every``, ``--eval-samples`` and a few more. Settings left out take the
task's defaults (``textpolicy.training.defaults``). Re-running the same command resumes the run
from its last checkpoint. Heavy imports happen inside the command body.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

import click

from textpolicy.cli.params import FiniteFloat, finite, parse_key_values, set_option_from_flag
from textpolicy.errors import ConfigError
from textpolicy.training.defaults import STAGE_FLAGS
from textpolicy.training.seeds import MAX_SEED

LOSS_CHOICES = ("importance_sampling", "ppo", "cross_entropy")
AGGREGATION_CHOICES = ("token-sum", "token-mean", "seq-mean-token-mean",
                       "seq-mean-token-sum-norm")


class UsageLineError(click.ClickException):
    """A bad flag or value, shown as one ``Error: ...`` line (exit 2), no usage block."""

    exit_code = 2


class OneLineCommand(click.Command):
    """A command whose usage errors are one line: ``Error: Invalid value for '--lr': ...``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise UsageLineError(exc.format_message()) from None


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_settings(params: dict[str, Any]) -> dict[str, Any]:
    """The ``make_config`` settings of a ``tp train`` invocation (only what was given)."""
    if params["algorithm"] and params["pipeline"]:
        raise ConfigError("--algorithm and --pipeline are alternatives; give one of them")
    settings: dict[str, Any] = {
        "log_dir": params["log_dir"],
        "task": params["task"],
        "engine": params["engine"],
        "pipeline": params["algorithm"] or params["pipeline"] or "grpo",
        "seed": params["seed"],
    }
    engine_options = parse_key_values(params["engine_option"], "--engine-option")
    for flag in ("base_url", "trust_host"):
        if params[flag] is not None and params["engine"] == "local":
            raise ConfigError(f"{_flag(flag)} applies to remote engines (e.g. --engine "
                              "tinker); the local engine runs in this process")
    if params["base_url"] is not None:
        set_option_from_flag(engine_options, "base_url", "--base-url", params["base_url"])
    if params["trust_host"] is not None:
        set_option_from_flag(engine_options, "trusted_host", "--trust-host",
                             params["trust_host"])
    if engine_options:
        settings["engine_options"] = engine_options
    task_params = parse_key_values(params["task_option"], "--task-option")
    if task_params:
        settings["task_params"] = task_params
    for key in ("model", "lr", "max_steps", "batch_size", "group_size", "max_tokens",
                "temperature", "save_every", "eval_every", "eval_samples", "eval_prompts",
                "eval_temperature", "eval_split", "max_examples", "loss", "loss_aggregation",
                "condition"):
        if params[key] is not None:
            settings[key] = params[key]
    if params["lora_rank"] is not None:
        settings["lora_rank"] = params["lora_rank"] or None  # 0 = full fine-tune
    stage_params: dict[str, dict[str, Any]] = {}
    for key, (stage, name) in STAGE_FLAGS.items():
        if params[key] is not None:
            stage_params.setdefault(stage, {})[name] = params[key]
    for dotted, value in parse_key_values(params["stage_option"], "--stage-option").items():
        stage, dot, name = dotted.partition(".")
        if not dot or not stage or not name:
            raise ConfigError(f"--stage-option expects STAGE.KEY=VALUE (e.g. gtpo.beta=0.2, "
                              f"planning.grams=[\"let me think\"]), got {dotted!r}")
        if name in stage_params.get(stage, {}):
            raise ConfigError(f"--stage-option {dotted}: {stage}.{name} is already set by "
                              "another flag; give it once")
        stage_params.setdefault(stage, {})[name] = value
    if stage_params:
        settings["pipeline_params"] = stage_params
    return settings


def check_stage_flags(settings: dict[str, Any], given: Sequence[str]) -> None:
    """Stage flags are only valid for pipelines that contain the stage (ConfigError)."""
    if not settings.get("pipeline_params"):
        return
    from textpolicy.pipeline import load_pipeline

    pipeline = load_pipeline(settings["pipeline"])
    stages = pipeline.stage_names
    for key in given:
        stage, _name = STAGE_FLAGS[key]
        if stage not in stages:
            raise ConfigError(
                f"{_flag(key)} sets the {stage!r} stage, which pipeline "
                f"{settings['pipeline']!r} does not have (its stages: {', '.join(stages)}); "
                f"drop the flag or pick a pipeline with {stage!r}")


def _positive_float() -> FiniteFloat:
    return finite(min=0.0, min_open=True)


def abort_now() -> None:
    """End the process at once with exit 130 (a second Ctrl-C / SIGTERM). Every run file is
    as after a crash: whole fsynced rows up to the last step, at most a torn last line, which
    the next start repairs; a re-run resumes from the last checkpoint."""
    import os

    sys.stderr.write("aborted; run the same command again to resume from the last "
                     "checkpoint\n")
    sys.stderr.flush()
    os._exit(130)  # no cleanup: a dead service or a busy thread must not hold the exit


@click.command(cls=OneLineCommand, context_settings={"show_default": True})
@click.option("--log-dir", required=True,
              help="Run directory (re-running the same command resumes it).")
@click.option("--algorithm", type=click.Choice(["grpo", "full"]), default=None,
              help="Seed-document name of the advantage pipeline (default: grpo).")
@click.option("--pipeline", default=None,
              help="Any pipeline name, alias or composition such as maxrl,gtpo,hicra "
                   "(`tp pipelines`).")
@click.option("--task", default="arithmetic", help="Task (arithmetic | math | plugin).")
@click.option("--engine", default="local", help="Engine (local | tinker | plugin).")
@click.option("--model", default=None, help="Model name or path. [default: the task's model]")
@click.option("--base-url", default=None, help="Engine service URL (tinker engine).")
@click.option("--trust-host", default=None, metavar="HOST",
              help="Send the Tinker API key to HOST, the --base-url host, although it is "
                   "neither Tinker's service nor this machine (prints a warning).")
@click.option("--engine-option", multiple=True, metavar="KEY=VALUE",
              help="Extra engine option, e.g. device=cuda (repeatable).")
@click.option("--task-option", multiple=True, metavar="KEY=VALUE",
              help="Task parameter (repeatable).")
@click.option("--seed", type=click.IntRange(min=0, max=MAX_SEED), default=0,
              help="Seed of data order, init, sampling and eval seeds.")
@click.option("--lr", type=_positive_float(), default=None,
              help="Learning rate. [default: task default; math 4e-5, arithmetic 1e-3]")
@click.option("--max-steps", type=click.IntRange(min=1), default=None,
              help="Training steps. [default: 100]")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Prompts per step. [default: 4]")
@click.option("--group-size", type=click.IntRange(min=1), default=None,
              help="Completions per prompt. [default: 8]")
@click.option("--lora-rank", type=click.IntRange(min=0), default=None,
              help="LoRA rank, 0 = full fine-tune. [default: math 64, arithmetic 0]")
@click.option("--max-tokens", type=click.IntRange(min=1), default=None,
              help="Max completion tokens. [default: math 2048, arithmetic 4]")
@click.option("--temperature", type=_positive_float(), default=None,
              help="Sampling temperature. [default: math 0.7, arithmetic 1.0]")
@click.option("--save-every", type=click.IntRange(min=0), default=None,
              help="Checkpoint interval in steps (0: only at the end). [default: 20]")
@click.option("--eval-every", type=click.IntRange(min=0), default=None,
              help="Held-out eval interval (0: none). [default: math 0, arithmetic 10]")
@click.option("--eval-samples", type=click.IntRange(min=1), default=None,
              help="Samples per eval prompt. [default: 4]")
@click.option("--eval-prompts", type=click.IntRange(min=1), default=None,
              help="Use only the first N eval prompts. [default: all]")
@click.option("--eval-temperature", type=_positive_float(), default=None,
              help="Eval sampling temperature. [default: 1.0]")
@click.option("--eval-split", type=click.Choice(["test", "validation"]), default=None,
              help="Held-out split to evaluate (validation: what LR sweeps select on). "
                   "[default: test]")
@click.option("--max-examples", type=click.IntRange(min=1), default=None,
              help="Limit the training set to N examples. [default: all]")
@click.option("--loss", type=click.Choice(LOSS_CHOICES), default=None,
              help="Engine loss. [default: importance_sampling]")
@click.option("--loss-aggregation", type=click.Choice(AGGREGATION_CHOICES), default=None,
              help="How token advantages are normalised. [default: token-sum]")
@click.option("--gtpo-beta", type=finite(min=0.0), default=None,
              help="GTPO entropy weighting (pipelines with gtpo). [default: 0.1]")
@click.option("--hicra-alpha", type=finite(min=0.0), default=None,
              help="HICRA amplification (pipelines with hicra). [default: 0.2]")
@click.option("--sepa-steps", type=click.IntRange(min=0), default=None,
              help="SEPA ramp steps (pipelines with sepa). [default: 100]")
@click.option("--sepa-schedule", type=click.Choice(["linear", "auto"]), default=None,
              help="SEPA schedule. [default: linear]")
@click.option("--sepa-delay-steps", type=click.IntRange(min=0), default=None,
              help="SEPA delay steps. [default: 10]")
@click.option("--sepa-correct-rate-gate", type=finite(min=0.0, max=1.0),
              default=None, help="Min correct rate before SEPA starts. [default: 0.1]")
@click.option("--stage-option", multiple=True, metavar="STAGE.KEY=VALUE",
              help="Any stage (or planning detector) parameter, VALUE as JSON, e.g. "
                   "clip.limit=2.0 (repeatable).")
@click.option("--condition", default=None,
              help="Label written into metrics rows. [default: the pipeline name]")
@click.option("--progress", type=click.Choice(["auto", "bar", "plain", "off"]),
              default="auto", help="Progress display on stderr.")
@click.option("--restart-from-step", type=click.IntRange(min=0), default=None, metavar="N",
              help="Roll the run back to its checkpoint at step N (0: start over), "
                   "discarding later rows and checkpoints; only when asked for.")
def train(**params: Any) -> None:
    """Train one run: sample, grade, compute advantages, update, log, checkpoint.

    \b
    Examples:
      tp train --log-dir results/arith_grpo --max-steps 40 --seed 1
      tp train --task math --engine tinker --algorithm full --lr 5e-5 \\
          --max-steps 100 --batch-size 4 --group-size 8 --lora-rank 64 \\
          --log-dir results/tinker_ab_v1/candidate
    """
    from textpolicy.runner.preflight import check_config
    from textpolicy.training import make_config, run_training
    from textpolicy.training.summary import effective_model, settings_lines

    settings = build_settings(params)
    check_stage_flags(settings, [k for k in STAGE_FLAGS if params[k] is not None])
    config = make_config(**settings)
    # what the run would refuse (engine, options, model, task files, where the key may go)
    # fails before anything is printed; environment notes are the run's own errors later
    check_config(config)
    lines = settings_lines(config, effective_model(config))

    def announce() -> None:  # once the run's lock and files passed their checks
        for line in lines:
            click.echo(line)

    stop = threading.Event()
    received: list[int] = []

    def handle(signum: int, _frame: Any) -> None:
        if received:  # a second signal: stop now, whatever the engine is waiting for
            abort_now()
        received.append(signum)
        stop.set()
        click.echo("stopping after the current step (again to abort)...", err=True)

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        outcome = run_training(config, stop=stop, progress=params["progress"],
                               restart_from=params["restart_from_step"], on_start=announce)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if outcome.note:
        click.echo(outcome.note, err=True)
    steps = "step" if config.max_steps == 1 else "steps"
    summary = (f"{outcome.status}: {outcome.steps_done}/{config.max_steps} {steps} in "
               f"{config.log_dir}")
    if outcome.final_eval:
        summary += "; final eval " + ", ".join(
            f"{k} {v:.3f}" for k, v in sorted(outcome.final_eval.items()))
    click.echo(summary)
    if outcome.status == "stopped":
        sys.exit(130)
