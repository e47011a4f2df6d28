"""Built-in executors: ``local`` (this machine), ``ray`` and ``slurm`` (submitit).

Ray and submitit are optional (``pip install 'textpolicy[ray]'`` / ``'textpolicy[slurm]'``);
they are imported only when a plan runs on them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from textpolicy import records
from textpolicy.plugins import hookimpl


def _local(_params: Any, _root: Path) -> None:
    return None  # the runner's own threads / worker processes


def _ray(params: Any, root: Path) -> Any:
    from textpolicy.runner.ray_executor import RayExecutor

    return RayExecutor(params, root)


def _slurm(params: Any, root: Path) -> Any:
    from textpolicy.runner.slurm_executor import SlurmExecutor

    return SlurmExecutor(params, root)


def _needs(module: str, extra: str) -> Any:
    def check(_params: Any) -> None:
        from textpolicy.runner.executors import require

        require(module, extra)

    return check


@hookimpl
def textpolicy_register_executors() -> Iterable[records.ExecutorPlugin]:
    from textpolicy.runner.ray_executor import RayParams
    from textpolicy.runner.slurm_executor import SlurmParams

    return [
        records.ExecutorPlugin(
            name="local", factory=_local,
            doc="this machine: `parallel` threads (or --workers process) of tp"),
        records.ExecutorPlugin(
            name="ray", factory=_ray, params=RayParams, check=_needs("ray", "ray"),
            doc="one Ray task per run (address local | auto | HOST:PORT; num_cpus, num_gpus)"),
        records.ExecutorPlugin(
            name="slurm", factory=_slurm, params=SlurmParams,
            check=_needs("submitit", "slurm"),
            doc="one Slurm job per run via submitit (partition, gpus_per_node, timeout_min; "
                "cluster = local for submitit's local executor)"),
    ]
