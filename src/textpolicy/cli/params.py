"""Click parameter types shared by the commands: finite floats only, and ``KEY=VALUE`` pairs.

click's ``float`` and ``FloatRange`` accept ``nan``, ``inf`` and ``-inf`` (``nan`` even passes
every range check, since every comparison with it is false); no option of ``tp`` means any
of them, so every float option uses :class:`FiniteFloat` and a non-finite value is a usage
error (exit 2) before anything is written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import click

from textpolicy.errors import ConfigError


def parse_key_values(pairs: Sequence[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs of a repeatable option (``--engine-option``, ``--task-option``);
    values are JSON when they parse as JSON (``4``, ``true``, ``"x"``), else strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} expects KEY=VALUE, got {pair!r}")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        out[key.strip()] = value
    return out


def set_option_from_flag(options: dict[str, Any], key: str, flag: str, value: Any) -> None:
    """``options[key] = value`` for a flag that spells an engine option (``--base-url`` is
    ``base_url``): a ``--engine-option`` that gives the same key another value is a
    ``ConfigError`` instead of being dropped in silence."""
    if key in options and options[key] != value:
        from textpolicy.urls import redact_url

        raise ConfigError(redact_url(
            f"{flag} {value!r} and --engine-option {key}={options[key]!r} disagree; give one "
            "of them"))
    options[key] = value


class FiniteFloat(click.FloatRange):
    """A ``FloatRange`` (no bounds by default) that also rejects ``nan`` and ``±inf``."""

    def __init__(self, min: float | None = None, max: float | None = None,
                 min_open: bool = False, max_open: bool = False) -> None:
        super().__init__(min=min, max=max, min_open=min_open, max_open=max_open)
        self.name = "float" if min is None and max is None else "float range"

    def _describe_range(self) -> str:
        return "" if self.min is None and self.max is None else super()._describe_range()

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


def finite(min: float | None = None, max: float | None = None, *,
           min_open: bool = False, max_open: bool = False) -> FiniteFloat:
    """A finite float option type, optionally bounded like ``click.FloatRange``."""
    return FiniteFloat(min=min, max=max, min_open=min_open, max_open=max_open)
