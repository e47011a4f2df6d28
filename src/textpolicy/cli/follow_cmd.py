"""``tp follow``: stream a run's metrics.jsonl to Weights & Biases (the seed document's
``scripts/tinker_wandb_follow.py``)."""

from __future__ import annotations

from typing import Any

import click

from textpolicy.cli.params import finite


@click.command(context_settings={"show_default": True})
@click.option("--metrics-path", required=True, type=click.Path(dir_okay=False),
              help="Path to metrics.jsonl (it may appear later).")
@click.option("--project", default="textpolicy-tinker", help="W&B project name.")
@click.option("--entity", default=None, help="W&B entity. [default: your default entity]")
@click.option("--run-name", default=None, help="W&B run name. [default: auto]")
@click.option("--group", default=None, help="W&B run group. [default: none]")
@click.option("--poll-seconds", type=finite(min=0.0, min_open=True), default=5.0,
              help="Polling interval.")
@click.option("--idle-timeout-seconds", type=finite(min=0.0), default=600.0,
              help="Exit after this many idle seconds.")
@click.option("--no-follow", is_flag=True, help="Backfill once and exit.")
def follow(metrics_path: str, project: str, entity: str | None, run_name: str | None,
           group: str | None, poll_seconds: float, idle_timeout_seconds: float,
           no_follow: bool) -> None:
    """Stream a run's metrics.jsonl to W&B: backfill, then tail it.

    Never logs a step twice, also across restarts: the W&B run id and the last logged step
    are kept in wandb_follow.json next to the metrics file, and a restarted follower resumes
    that W&B run. Ctrl-C ends it cleanly. W&B's own files (offline runs included) go into
    wandb/ next to the metrics file, never into the current directory, unless WANDB_DIR is
    set.

    \b
    Examples:
      tp follow --metrics-path results/tinker_ab_v1/candidate/seed0/metrics.jsonl \\
          --run-name candidate-full --group ab_v1
      WANDB_MODE=offline tp follow --metrics-path run/metrics.jsonl --no-follow
    """
    from pathlib import Path

    from textpolicy.errors import ConfigError, TextPolicyError
    from textpolicy.runner.follow import Follower, describe_error, wandb_problem

    problem = wandb_problem()
    if problem is not None:
        raise ConfigError(f"{problem}; or log without uploading: WANDB_MODE=offline tp follow "
                          "... (then `wandb sync`)")
    path = Path(metrics_path)
    if not path.exists():
        if no_follow:
            raise ConfigError(f"{metrics_path}: does not exist, nothing to log (without "
                              "--no-follow, tp follow waits for it to appear)")
        click.echo(f"waiting for {metrics_path} to appear (giving up after "
                   f"{idle_timeout_seconds:g} s; --idle-timeout-seconds)", err=True)
    follower = Follower(metrics_path, project=project, entity=entity, run_name=run_name,
                        group=group, poll_seconds=poll_seconds,
                        idle_timeout_seconds=idle_timeout_seconds, follow=not no_follow)
    result: Any = None
    try:
        result = follower.run()
    except KeyboardInterrupt:
        follower.stop.set()
        follower.close()
        click.echo("stopped", err=True)
        return
    except Exception as exc:  # wandb's own errors (login, network, quota) as one line
        raise TextPolicyError(f"W&B: {describe_error(exc)}; "
                              f"{path.parent / 'wandb_follow.json'} keeps what was logged, "
                              "run the same command again to go on") from None
    if not path.exists():
        raise TextPolicyError(f"{metrics_path}: still does not exist after waiting "
                              f"{idle_timeout_seconds:g} s (--idle-timeout-seconds)")
    if result.steps_logged:
        n = result.steps_logged
        run = (f"{result.run_name} ({result.run_id})" if result.run_name
               else str(result.run_id))
        click.echo(f"logged {n} {'step' if n == 1 else 'steps'} ({result.first_step}.."
                   f"{result.last_step}) from {path.parent} to W&B run {run} in project "
                   f"{project}")
    else:
        click.echo(f"nothing new to log from {metrics_path}")
