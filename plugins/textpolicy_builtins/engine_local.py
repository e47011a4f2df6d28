"""Built-in engine ``local``: torch + transformers (+ peft) in this process.

torch is imported only when an engine is made, so listing plugins stays fast.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from textpolicy import records
from textpolicy.errors import ConfigError
from textpolicy.plugins import hookimpl


def _check_names(options: dict[str, Any]) -> None:
    from textpolicy.engines.local.engine import LocalEngine

    allowed = [n for n in inspect.signature(LocalEngine.__init__).parameters if n != "self"]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"engine local: unknown option {unknown[0]!r}; allowed: "
                          f"{', '.join(allowed)}")


def make_local_engine(**options: Any) -> Any:
    from textpolicy.engines.local.engine import LocalEngine

    _check_names(options)
    return LocalEngine(**options)


def check_local_engine(model: str, **options: Any) -> list[str]:
    """The dry run's check: the model is the tiny model or a checkpoint folder, the option
    values are ones LocalEngine accepts (nothing is loaded)."""
    from textpolicy.engines.local.engine import check_model, check_options

    _check_names(options)
    check_model(model)
    check_options(**options)
    return []


@hookimpl
def textpolicy_register_engines() -> Iterable[records.EnginePlugin]:
    return [records.EnginePlugin(
        name="local", factory=make_local_engine, check=check_local_engine,
        doc="embedded torch + transformers engine (built-in tiny model, local HF checkpoints,"
            " CPU or CUDA)")]
