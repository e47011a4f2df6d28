"""``tp plugins`` and ``tp pipelines``: what is installed and what the named pipelines do."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from textpolicy.wording import plural


def plugins_report() -> list[dict[str, Any]]:
    """Every loaded (or failed) plugin: name, source, version, registers, error."""
    from textpolicy.plugins import build_registry

    registry = build_registry(strict=False)
    return [
        {
            "name": info.name,
            "source": info.source,
            "version": info.version,
            "registers": {kind: list(names) for kind, names in info.registers},
            "error": info.error,
            "distribution": info.distribution,
            "entry_point": info.entry_point,
        }
        for info in registry.plugins
    ]


def pipelines_report() -> list[dict[str, Any]]:
    """Every named pipeline: aliases, stages in order with their default parameters."""
    import attrs

    from textpolicy.plugins import get_registry, structure_params

    registry = get_registry()
    out = []
    for named in registry.pipelines.values():
        stages = []
        for ref in named.stages:
            entry: dict[str, Any] = {"name": ref.stage, "level": None, "params": None}
            if ref.stage in registry.stages:
                rec = registry.stages.get(ref.stage)
                params = structure_params(rec.params, ref.param_dict,
                                          where=f"pipeline {named.name!r} stage {ref.stage!r}")
                entry["level"] = rec.level
                entry["params"] = {k: list(v) if isinstance(v, tuple) else v
                                   for k, v in attrs.asdict(params, recurse=False).items()}
            else:
                entry["error"] = f"unknown stage {ref.stage!r}"
            stages.append(entry)
        out.append({"name": named.name, "aliases": list(named.aliases), "doc": named.doc,
                    "plugin": registry.owners["pipelines"].get(named.name),
                    "stages": stages})
    return out


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins(as_json: bool) -> None:
    """List plugins, their versions, what each registers, and load errors.

    \b
    Example:
      tp plugins
      TEXTPOLICY_DISABLE_PLUGINS=1 tp plugins --json   # built-ins only
    """
    report = plugins_report()
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for p in report:
            version = p["version"] or "-"
            origin = f", {p['distribution']}" if p["distribution"] not in (None, "textpolicy") \
                else ""
            click.echo(f"{p['name']} ({p['source']}{origin}, {version})")
            for kind, names in p["registers"].items():
                click.echo(f"    {kind}: {', '.join(names)}")
            if p["error"]:
                click.echo(f"    ERROR: {p['error']}")
    errors = [p for p in report if p["error"]]
    if errors:  # a failed plugin fails the command (CI and scripts see it)
        click.echo(f"Error: {plural(len(errors), 'plugin')} failed to load: "
                   f"{', '.join(p['name'] for p in errors)}", err=True)
        sys.exit(1)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def pipelines(as_json: bool) -> None:
    """List named pipelines with their stages in order and default parameters.

    \b
    Example:
      tp pipelines
      tp pipelines --json
    Compose your own: --pipeline maxrl,gtpo,hicra, or in code
    tp.load_pipeline("maxrl,gtpo,hicra", gtpo={"beta": 0.2}).
    """
    report = pipelines_report()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for p in report:
        aliases = f" (alias: {', '.join(p['aliases'])})" if p["aliases"] else ""
        click.echo(f"{p['name']}{aliases}: {' > '.join(s['name'] for s in p['stages'])}")
        if p["doc"]:
            click.echo(f"    {p['doc']}")
        for stage in p["stages"]:
            params = stage.get("params") or {}
            shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
            if shown:
                click.echo(f"    {stage['name']}: {shown}")
