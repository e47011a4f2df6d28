"""The ``slurm`` executor: each run is one Slurm job submitted with submitit.

Options are submitit's generic ones (``timeout_min``, ``gpus_per_node``, ``cpus_per_task``,
``mem_gb``) plus ``partition``, ``account``, ``qos`` and ``constraint``. ``cluster = "local"``
runs the jobs as processes of this machine through submitit's local executor (tests, trying a
spec out). Job files and Slurm's stdout/stderr are in ``<run>/.executor/slurm/``. ``scancel``
of a job stops its run after the current step (SIGTERM), with a checkpoint; the next ``tp run``
resumes it.
"""

from __future__ import annotations

import concurrent.futures
import shutil
import threading
from pathlib import Path
from typing import Any

import attrs

from textpolicy.errors import ConfigError
from textpolicy.runner.executors import (
    RunJob,
    non_negative_int,
    optional_str,
    positive_int,
    positive_number,
    run_job,
    side_dir,
)

CLUSTERS = ("slurm", "local")


def _cluster(_i: object, a: attrs.Attribute[Any], v: Any) -> None:
    if v not in CLUSTERS:
        raise ValueError(f"{a.name} must be one of {', '.join(CLUSTERS)}")


def _optional_positive(i: object, a: attrs.Attribute[Any], v: Any) -> None:
    if v is not None:
        positive_number(i, a, v)


@attrs.frozen
class SlurmParams:
    """``[executor.options]`` of ``slurm``."""

    cluster: str = attrs.field(default="slurm", validator=_cluster)
    partition: str | None = attrs.field(default=None, validator=optional_str)
    account: str | None = attrs.field(default=None, validator=optional_str)
    qos: str | None = attrs.field(default=None, validator=optional_str)
    constraint: str | None = attrs.field(default=None, validator=optional_str)
    timeout_min: int = attrs.field(default=60, validator=positive_int)
    gpus_per_node: int = attrs.field(default=0, validator=non_negative_int)
    cpus_per_task: int = attrs.field(default=1, validator=positive_int)
    mem_gb: float | None = attrs.field(default=None, validator=_optional_positive)


class SlurmExecutor:
    def __init__(self, params: SlurmParams, root: Path) -> None:
        self.params = params
        self._jobs: dict[int, Any] = {}  # id(future) → submitit job
        self._closing = threading.Event()

    def where(self) -> str:
        p = self.params
        at = ("submitit's local executor" if p.cluster == "local"
              else f"Slurm partition {p.partition}" if p.partition else "Slurm")
        return (f"{at}, one job per run (gpus_per_node={p.gpus_per_node}, cpus_per_task="
                f"{p.cpus_per_task}, timeout_min={p.timeout_min})")

    def start(self) -> None:
        if self.params.cluster == "slurm" and shutil.which("sbatch") is None:
            raise ConfigError("executor slurm: sbatch not found on this machine; run tp on a "
                              "Slurm login node, or set executor option cluster = 'local'")

    def _parameters(self, job: RunJob) -> dict[str, Any]:
        p = self.params
        params: dict[str, Any] = {
            "name": f"tp-{job.key.replace('/', '-')}", "timeout_min": p.timeout_min,
            "gpus_per_node": p.gpus_per_node, "cpus_per_task": p.cpus_per_task,
            "mem_gb": p.mem_gb}
        if p.cluster == "slurm":
            params.update(slurm_partition=p.partition, slurm_account=p.account,
                          slurm_qos=p.qos, slurm_constraint=p.constraint)
        return {k: v for k, v in params.items() if v is not None}

    def submit(self, job: RunJob) -> concurrent.futures.Future[dict[str, Any]]:
        import submitit

        executor = submitit.AutoExecutor(folder=side_dir(job) / "slurm",
                                         cluster=self.params.cluster)
        executor.update_parameters(**self._parameters(job))
        submitted = executor.submit(run_job, job)
        future: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        self._jobs[id(future)] = submitted
        threading.Thread(target=self._wait, args=(submitted, future), daemon=True,
                         name=f"slurm {job.key}").start()
        return future

    def _wait(self, job: Any, future: concurrent.futures.Future[dict[str, Any]]) -> None:
        while not job.done():
            if self._closing.wait(0.5):
                return
        try:
            future.set_result(job.result())
        except Exception as exc:  # the job failed: that run's failure
            future.set_exception(exc)

    def cancel(self, future: concurrent.futures.Future[dict[str, Any]], force: bool) -> None:
        job = self._jobs.get(id(future))
        if job is None or job.done():
            return
        if force:
            process = getattr(job, "_process", None)  # submitit's local job
            if process is not None:
                process.kill()
            else:
                job.cancel(check=False)
        elif self.params.cluster == "slurm" and job.state in ("PENDING", "REQUEUED"):
            job.cancel(check=False)  # a queued job never starts; a running one stops itself

    def close(self) -> None:
        self._closing.set()
        self._jobs.clear()
