"""Built-in ``tinker`` engine: the real tinker SDK (remote GPUs, or ``tp serve`` offline)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from textpolicy import records
from textpolicy.plugins import hookimpl


def _make_tinker_engine(base_url: str | None = None, max_recoveries: int = 3,
                        prefetch_sampler: bool = True,
                        unreachable_timeout_s: float = 120.0) -> Any:
    """TinkerEngine with explicit options, so unknown options fail with a clear message."""
    from textpolicy.engines.tinker_engine import TinkerEngine

    return TinkerEngine(base_url=base_url, max_recoveries=int(max_recoveries),
                        prefetch_sampler=str(prefetch_sampler).lower() not in
                        ("0", "false", "no", "off"),
                        unreachable_timeout_s=unreachable_timeout_s)


@hookimpl
def textpolicy_register_engines() -> Iterable[records.EnginePlugin]:
    return [records.EnginePlugin(
        name="tinker",
        factory=_make_tinker_engine,
        doc="The tinker SDK (pinned 0.38.0): LoRA training on Tinker, or on `tp serve`. "
            "Options: base_url, max_recoveries, prefetch_sampler, unreachable_timeout_s. "
            "API key from TINKER_API_KEY / SDK credentials.",
    )]
