"""``tp new-plugin NAME``: write a ready-to-install plugin distribution."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("new-plugin", context_settings={"show_default": True})
@click.argument("name")
@click.option("--stage", default=None,
              help="Name of the stage it registers. [default: NAME as an identifier]")
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="Directory to write (must not exist or be empty). [default: ./NAME]")
def new_plugin(name: str, stage: str | None, output: Path | None) -> None:
    """Write a ready-to-install plugin distribution NAME with one advantage stage.

    It holds pyproject.toml with the textpolicy entry point, one token stage, its test
    (textpolicy.testing) and a README; it installs with pip and its test passes unchanged.
    Then replace the stage's body with your method (docs/plugins.md).

    \b
    Example:
      tp new-plugin my-stage && pip install -e ./my-stage && pytest my-stage
    """
    from textpolicy.scaffold import plugin_layout, write_plugin

    layout = plugin_layout(name, stage)
    target = output if output is not None else Path(name)
    files = write_plugin(layout, target)
    click.echo(f"wrote {target}/ ({len(files)} files): distribution {layout.distribution}, "
               f"package {layout.package}, stage {layout.stage!r}")
    click.echo(f"next: pip install -e {target} && pytest {target} && tp plugins")
