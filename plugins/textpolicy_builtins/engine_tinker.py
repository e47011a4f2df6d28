"""Built-in ``tinker`` engine: the real tinker SDK (remote GPUs, or ``tp serve`` offline)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlparse

from textpolicy import records
from textpolicy.plugins import hookimpl


def _make_tinker_engine(base_url: str | None = None, max_recoveries: int = 3,
                        prefetch_sampler: bool = True, trusted_host: str | None = None,
                        unreachable_timeout_s: float = 120.0,
                        sample_seeds: str = "per_sample", max_concurrent: Any = None,
                        backoff_seed: Any = 0) -> Any:
    """TinkerEngine with explicit options, so unknown options fail with a clear message."""
    from textpolicy.engines.tinker_engine import TinkerEngine

    return TinkerEngine(base_url=base_url, max_recoveries=int(max_recoveries),
                        prefetch_sampler=str(prefetch_sampler).lower() not in
                        ("0", "false", "no", "off"),
                        trusted_host=None if trusted_host is None else str(trusted_host),
                        unreachable_timeout_s=unreachable_timeout_s,
                        sample_seeds=str(sample_seeds), max_concurrent=max_concurrent,
                        backoff_seed=backoff_seed)


def _check_tinker_engine(model: str, base_url: str | None = None, max_recoveries: int = 3,
                         prefetch_sampler: bool = True, trusted_host: str | None = None,
                         unreachable_timeout_s: float = 120.0,
                         sample_seeds: str = "per_sample", max_concurrent: Any = None,
                         backoff_seed: Any = 0) -> list[str]:
    """The dry run's check: option values and where the API key may go (``ConfigError`` for a
    host neither Tinker's nor this machine's unless trusted), then notes on the API key and
    the service."""
    from textpolicy.engines.tinker_engine import check_key_destination, readiness, service_url
    from textpolicy.engines.tinker_limits import parse_max_concurrent

    parse_max_concurrent(max_concurrent)

    # first (before readiness connects to it): refuses an untrusted foreign host; a trusted
    # one's warning is the engine's to print
    url = service_url(base_url)
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https") and parsed.hostname:  # else readiness says why
        check_key_destination(url, None if trusted_host is None else str(trusted_host))
    return readiness(base_url, max_recoveries, sample_seeds)


@hookimpl
def textpolicy_register_engines() -> Iterable[records.EnginePlugin]:
    return [records.EnginePlugin(
        name="tinker",
        factory=_make_tinker_engine,
        check=_check_tinker_engine,
        doc="The tinker SDK (pinned 0.38.0): LoRA training on Tinker, or on `tp serve`. "
            "Options: base_url, max_recoveries, prefetch_sampler, trusted_host (a base_url "
            "host that is neither Tinker nor this machine, trusted with the key), "
            "unreachable_timeout_s, sample_seeds (per_sample | none: how a group is sampled), "
            "max_concurrent (requests in flight at once per base URL and process), "
            "backoff_seed (seed of the retry jitter). "
            "API key from TINKER_API_KEY / SDK credentials.",
    )]
