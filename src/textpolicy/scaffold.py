"""``tp new-plugin``: write a ready-to-install plugin distribution.

The distribution holds a ``pyproject.toml`` (hatchling, the ``textpolicy`` entry point), one
token stage in ``src/<package>/plugin.py``, its test written with ``textpolicy.testing`` and a
README. It installs with pip and its test passes unchanged; the author then replaces the
stage's body with their method.
"""

from __future__ import annotations

import keyword
import os
import re
import shutil
import tempfile
from pathlib import Path

import attrs

from textpolicy.errors import ConfigError

_DIST_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")


@attrs.frozen
class PluginLayout:
    """The names a new plugin gets: distribution, import package (= entry-point name), stage."""

    distribution: str
    package: str
    stage: str


def plugin_layout(name: str, stage: str | None = None) -> PluginLayout:
    """Names derived from the distribution ``name`` (``my-stage`` → package ``my_stage``,
    stage ``my_stage``; a ``textpolicy-`` prefix is dropped from the stage name); one-line
    ``ConfigError`` for a name pip or Python cannot use, or a stage name already registered."""
    if not _DIST_NAME.match(name):
        raise ConfigError(f"plugin name {name!r}: use letters, digits, '-', '_' and '.', "
                          "starting and ending with a letter or digit (e.g. my-stage)")
    package = re.sub(r"[^0-9A-Za-z]+", "_", name).lower()
    if package[0].isdigit() or keyword.iskeyword(package):
        raise ConfigError(f"plugin name {name!r}: its package name {package!r} is not a "
                          "Python identifier; start the name with a letter")
    stage_name = stage if stage is not None else re.sub(r"^textpolicy_", "", package)
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", stage_name):
        raise ConfigError(f"--stage {stage_name!r}: use letters, digits and '_', starting "
                          "with a letter")
    from textpolicy.plugins import get_registry

    registry = get_registry()
    if stage_name in registry.stages or stage_name in registry.pipelines:
        owner = (registry.owners["stages"].get(stage_name)
                 or registry.owners["pipelines"].get(stage_name))
        raise ConfigError(f"stage name {stage_name!r} is already registered by {owner!r}; "
                          "choose another with --stage NAME")
    return PluginLayout(distribution=name, package=package, stage=stage_name)


def write_plugin(layout: PluginLayout, target: Path) -> list[Path]:
    """Write the distribution into ``target`` (which must not exist, or be an empty
    directory); all files appear at once or none. Returns the files written."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{target}: already exists and is not an empty directory; give "
                          "another --output")
    files = _files(layout)
    parent = target.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=parent))
    try:
        for rel, text in files.items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        if target.exists():
            target.rmdir()
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [target / rel for rel in files]


def _files(layout: PluginLayout) -> dict[str, str]:
    d, p, s = layout.distribution, layout.package, layout.stage
    return {
        "pyproject.toml": _PYPROJECT.format(dist=d, package=p, stage=s),
        "README.md": _README.format(dist=d, package=p, stage=s),
        f"src/{p}/__init__.py": f'"""The textpolicy plugin {d}."""\n',
        f"src/{p}/plugin.py": _PLUGIN.format(dist=d, package=p, stage=s),
        f"tests/test_{p}.py": _TEST.format(dist=d, package=p, stage=s),
    }


_PYPROJECT = '''\
[build-system]
requires = ["hatchling>=1.25"]
build-backend = "hatchling.build"

[project]
name = "{dist}"
version = "0.1.0"
description = "A textpolicy plugin: the advantage stage {stage}."
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["textpolicy"]

[project.optional-dependencies]
test = ["pytest>=8"]

# textpolicy finds the plugin through this entry point (name = import path of its hooks)
[project.entry-points.textpolicy]
{package} = "{package}.plugin"

[tool.hatch.build.targets.wheel]
packages = ["src/{package}"]

# `pip install -e .` puts src/ on the path (no extra build dependency)
[tool.hatch.build]
dev-mode-dirs = ["src"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

_README = '''\
# {dist}

A [textpolicy](https://github.com/teilomillet/textpolicy) plugin with one token-level
advantage stage, `{stage}`: it multiplies every token advantage by `factor` (default 1.0).
Replace the body of `{stage}_stage` in `src/{package}/plugin.py` with your method; the contract
(what a stage receives and must return) is textpolicy's docs/plugins.md.

    pip install -e .          # offline: pip install --no-build-isolation -e .
    pytest                    # the stage's invariants, via textpolicy.testing
    tp plugins                # lists {package} and the stage {stage}

Use it in a pipeline after an episode stage:

    tp train --pipeline "maxrl>{stage}" --stage-option {stage}.factor=0.5 --log-dir runs/a

or in a spec arm: `pipeline = "maxrl>{stage}"` with `[arms.params.{stage}] factor = 0.5`.
'''

_PLUGIN = '''\
"""The token stage ``{stage}`` (plugin {dist}).

``{stage}`` multiplies every token advantage by ``factor``. Replace the body of
``{stage}_stage`` with your method: it gets the token credit (advantages and signal, float64
[N, T], 0 on padding) and returns a new one; it may combine tokens of one completion only.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
from textpolicy import hookimpl
from textpolicy.pipeline import StepContext, TokenCredit, number_field
from textpolicy.records import AdvantageStage
from textpolicy.rollouts import Rollouts


@attrs.frozen
class Params:
    """``factor``: what every token advantage is multiplied by."""

    factor: float = number_field(1.0, gt=0.0)


def {stage}_stage(
    credit: TokenCredit, rollouts: Rollouts, ctx: StepContext, params: Params
) -> TokenCredit:
    return attrs.evolve(credit, advantages=credit.advantages * params.factor)


@hookimpl
def textpolicy_register_stages() -> Iterable[AdvantageStage]:
    return [AdvantageStage(
        name="{stage}", level="token", fn={stage}_stage, params=Params,
        doc="multiply token advantages by factor")]
'''

_TEST = '''\
"""Tests of the stage ``{stage}``, written with textpolicy.testing (run: pytest)."""

from __future__ import annotations

import numpy as np
from textpolicy.plugins import Registry, build_registry
from textpolicy.testing import check_stage, make_rollouts

from {package} import plugin


def _registry() -> Registry:  # this plugin only, whether or not it is installed
    return build_registry(extra_plugins=[("{package}-under-test", plugin)],
                          load_entry_points=False)


def test_{stage}_keeps_the_invariants() -> None:
    rollouts = make_rollouts(rewards=[1, 0, 0, 0, 1, 1, 0, 0], group_size=4, length=6)
    same = check_stage("{stage}", rollouts, registry=_registry())
    half = check_stage("{stage}", rollouts, params={{"factor": 0.5}}, registry=_registry())
    np.testing.assert_allclose(half.token_advantages, 0.5 * same.token_advantages)
'''

