"""The ``ray`` executor: each run is one Ray task with ``num_cpus``/``num_gpus`` of its own.

``address``: ``"local"`` (default) starts a Ray instance on this machine for the plan (with
``local_cpus`` CPUs; omit: all) and shuts it down after; ``"auto"`` joins the cluster this
machine is a node of; ``"HOST:PORT"`` or ``"ray://HOST:PORT"`` connects to that cluster's head.
A head that does not answer is refused in one line before anything is written. Workers import
textpolicy (install it on every node) and must see the output directory (docs/executors.md).
"""

from __future__ import annotations

import concurrent.futures
import socket
from pathlib import Path
from typing import Any

import attrs

from textpolicy.errors import ConfigError
from textpolicy.runner.executors import (
    RunJob,
    non_negative_number,
    positive_int,
    run_job,
)


def _address(_i: object, a: attrs.Attribute[Any], v: Any) -> None:
    if not isinstance(v, str) or not v:
        raise TypeError(f"{a.name} must be 'local', 'auto' or HOST:PORT")


def _optional_positive_int(i: object, a: attrs.Attribute[Any], v: Any) -> None:
    if v is not None:
        positive_int(i, a, v)


@attrs.frozen
class RayParams:
    """``[executor.options]`` of ``ray``."""

    address: str = attrs.field(default="local", validator=_address)
    num_cpus: float = attrs.field(default=1, validator=non_negative_number)
    num_gpus: float = attrs.field(default=0, validator=non_negative_number)
    local_cpus: int | None = attrs.field(default=None, validator=_optional_positive_int)


class RayExecutor:
    def __init__(self, params: RayParams, root: Path) -> None:
        self.params = params
        self._owns = False
        self._remote: Any = None
        self._refs: dict[int, Any] = {}  # id(future) → ObjectRef

    def where(self) -> str:
        p = self.params
        at = ("a local Ray instance" if p.address == "local" else f"Ray at {p.address}")
        return f"{at}, one task per run (num_cpus={p.num_cpus:g}, num_gpus={p.num_gpus:g})"

    def start(self) -> None:
        import ray

        p = self.params
        if p.address not in ("local", "auto"):
            _check_reachable(p.address)
        if not ray.is_initialized():
            try:
                if p.address == "local":
                    ray.init(num_cpus=p.local_cpus, include_dashboard=False,
                             log_to_driver=False)
                else:
                    ray.init(address=p.address, log_to_driver=False)
            except Exception as exc:  # ConnectionError, RuntimeError, ...: one line
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise ConfigError(f"executor ray: address {p.address!r}: cannot connect "
                                  f"({type(exc).__name__}: {first})") from None
            self._owns = True
        self._remote = ray.remote(run_job).options(
            num_cpus=p.num_cpus, num_gpus=p.num_gpus, max_retries=0)

    def submit(self, job: RunJob) -> concurrent.futures.Future[dict[str, Any]]:
        ref = self._remote.remote(job)
        future: concurrent.futures.Future[dict[str, Any]] = ref.future()
        self._refs[id(future)] = ref
        return future

    def cancel(self, future: concurrent.futures.Future[dict[str, Any]], force: bool) -> None:
        import ray

        ref = self._refs.get(id(future))
        # a gentle cancel would raise KeyboardInterrupt inside a running step; a running run
        # stops by itself after request_stop, so only a forced cancel goes to Ray
        if ref is not None and force:
            ray.cancel(ref, force=True)

    def close(self) -> None:
        import ray

        self._refs.clear()
        if self._owns:
            ray.shutdown()
            self._owns = False


def _check_reachable(address: str) -> None:
    """A head that does not answer: one line, quickly (Ray itself retries for a minute)."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"executor ray: address {address!r}: expected 'local', 'auto', "
                          "HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as exc:
        raise ConfigError(f"executor ray: address {address!r} cannot be reached "
                          f"({exc.strerror or exc}); start the head with `ray start --head` "
                          "or use address = 'local'") from None
