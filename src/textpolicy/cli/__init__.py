"""The ``tp`` command line. Click lives only here; each command is its own module.

Commands are imported lazily so ``tp --help`` stays instant (numpy, torch, scipy, wandb and
tinker are imported inside command bodies). Every ``TextPolicyError`` raised by library code is
turned into a one-line ``Error: ...`` message and its exit code here, never a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

import click

from textpolicy import __version__
from textpolicy.errors import Aborted, TextPolicyError

# command name -> "module:attribute" (module relative to textpolicy.cli)
COMMANDS: dict[str, str] = {
    "run": "run_cmd:run",
    "sweep": "sweep_cmd:sweep",
    "campaign": "campaign_cmd:campaign",
    "train": "train_cmd:train",
    "analyze": "analyze_cmd:analyze",
    "power": "power_cmd:power",
    "follow": "follow_cmd:follow",
    "serve": "serve_cmd:serve",
    "plugins": "plugins_cmd:plugins",
    "pipelines": "plugins_cmd:pipelines",
    "mine-grams": "mine_grams_cmd:mine_grams",
    "new-plugin": "new_plugin_cmd:new_plugin",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when invoked (or listed in help)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._available(name)]

    def _available(self, name: str) -> bool:
        module_name = COMMANDS[name].split(":")[0]
        return importlib.util.find_spec(f"textpolicy.cli.{module_name}") is not None

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None or not self._available(cmd_name):
            return None
        module_name, attr = target.split(":")
        module = importlib.import_module(f"textpolicy.cli.{module_name}")
        command: click.Command = getattr(module, attr)
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            import difflib

            close = difflib.get_close_matches(args[0], self.list_commands(ctx), n=1)
            if close and "No such command" in str(exc):
                raise click.UsageError(
                    f"No such command {args[0]!r}; did you mean {close[0]!r}?", ctx) from None
            raise

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (Aborted, KeyboardInterrupt) as exc:
            import os  # os._exit: no interpreter shutdown, threads may still be mid-step

            if isinstance(exc, KeyboardInterrupt):
                exc = Aborted("aborted; run the same command again to resume")
            click.echo(f"Error: {exc}", err=True)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(exc.exit_code)
        except TextPolicyError as exc:
            from textpolicy.urls import redact_url

            click.echo(f"Error: {clip_lines(redact_url(str(exc)))}", err=True)
            sys.exit(exc.exit_code)
        except click.UsageError as exc:  # a subcommand's bad flag or value
            raise _one_line(exc) from None
        except BrokenPipeError:  # `tp plugins | head`: the reader left; exit quietly
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)  # 128 + SIGPIPE, as a shell reports a command killed by it
        except OSError as exc:  # an unusable path (a file where a directory goes, ...)
            click.echo(f"Error: {clip_lines(_os_error_line(exc))}", err=True)
            sys.exit(2 if isinstance(exc, _BAD_PATH_ERRORS) else 1)


#: the longest line of an error message (a 10 MB name must not become a 10 MB line)
MAX_ERROR_LINE = 1000


def clip_lines(text: str, limit: int = MAX_ERROR_LINE) -> str:
    """Every line of ``text`` cut to ``limit`` characters, saying how long it was."""
    return "\n".join(line if len(line) <= limit
                     else f"{line[: limit - 30]}... ({len(line):,} characters)"
                     for line in text.split("\n"))


_BAD_PATH_ERRORS = (FileExistsError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
                    PermissionError)


def _os_error_line(exc: OSError) -> str:
    import os

    name = exc.filename
    if isinstance(exc, FileExistsError) and name is not None and not os.path.isdir(name):
        reason = "exists and is not a directory; give a directory path"
    else:
        reason = exc.strerror or str(exc)
    return f"{name}: {reason}" if name is not None else reason


class OneLineUsageError(click.ClickException):
    """A bad command, flag or value as one ``Error: ...`` line (exit 2), no usage block."""

    exit_code = 2


def _one_line(exc: click.UsageError) -> click.ClickException:
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        return exc  # `tp` alone prints the help
    message = clip_lines(exc.format_message())
    if exc.ctx is not None:
        message += f" See '{exc.ctx.command_path} --help'."
    return OneLineUsageError(message)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tp")
def main() -> None:
    """textpolicy: fair, reproducible A/B experiments between RL advantage pipelines.

    \b
    Typical use:
      tp run examples/quickstart.toml      # sweep -> campaign -> analysis
      tp analyze results/my_campaign       # significance report of finished runs
    """
