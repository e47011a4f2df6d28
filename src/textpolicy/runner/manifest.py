"""What a plan writes before anything runs: manifest.json and run_commands.sh.

``run_commands.sh`` holds one ``tp train`` command per run, with every setting explicit (stage
parameters without a seed-document flag as ``--stage-option STAGE.KEY=JSON``); it ``cd``s into
its own directory first, so its relative ``--log-dir`` paths reproduce the plan's layout
wherever the directory is moved. The manifest records the resolved config of every run, the
plugin distributions that provide its components, the versions of textpolicy, tinker, torch,
transformers and Python, the git commit of the textpolicy source when it is a checkout, the
task's data fingerprint, and the commands — never a secret (credential-like
option names are redacted; the spec refuses them in the first place).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from textpolicy import strictjson
from textpolicy.runner.plan import Plan, PlannedRun, format_lr
from textpolicy.training.config import TrainConfig
from textpolicy.training.defaults import STAGE_FLAGS as SEED_STAGE_FLAGS
from textpolicy.training.run_record import plugin_provenance, redact
from textpolicy.training.run_record import versions as versions  # re-exported for the runner
from textpolicy.urls import redact_url
from textpolicy.wording import plural

#: stage parameter → the seed document's `tp train` flag
STAGE_FLAGS: dict[tuple[str, str], str] = {
    target: "--" + option.replace("_", "-") for option, target in SEED_STAGE_FLAGS.items()}


def config_record(config: TrainConfig) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(config.to_dict(), default=str))
    out: dict[str, Any] = redact(data)
    return out


def _num(value: float) -> str:
    """A number as a short flag value that reads back exactly (0.7, 1, 5e-05)."""
    if isinstance(value, float):
        text = format(value, "g")
        return text if float(text) == value else repr(value)
    return str(value)


def train_command(config: TrainConfig, *, log_dir: str | None = None) -> list[str]:
    """The ``tp train`` argv that reproduces ``config`` (every setting explicit)."""
    argv = ["tp", "train", "--engine", config.engine, "--task", config.task]
    if config.model:
        argv += ["--model", config.model]
    for key, value in sorted(config.engine_options.items()):
        if key == "base_url":
            argv += ["--base-url", redact_url(str(value))]
        elif key == "trusted_host":
            argv += ["--trust-host", str(value)]
        else:
            argv += ["--engine-option", redact_url(f"{key}={_json(value)}")]
    for key, value in sorted(config.task_params.items()):
        argv += ["--task-option", f"{key}={_json(value)}"]
    argv += ["--pipeline", config.pipeline, "--lr", format_lr(config.lr),
             "--max-steps", str(config.max_steps), "--batch-size", str(config.batch_size),
             "--group-size", str(config.group_size),
             "--lora-rank", str(config.lora_rank or 0),
             "--max-tokens", str(config.max_tokens), "--temperature", _num(config.temperature),
             "--seed", str(config.seed), "--save-every", str(config.save_every),
             "--eval-every", str(config.eval_every), "--eval-samples", str(config.eval_samples)]
    defaults = TrainConfig(log_dir="x")
    if config.eval_prompts is not None:
        argv += ["--eval-prompts", str(config.eval_prompts)]
    if config.eval_temperature != defaults.eval_temperature:
        argv += ["--eval-temperature", _num(config.eval_temperature)]
    if config.eval_split != defaults.eval_split:
        argv += ["--eval-split", config.eval_split]
    if config.max_examples is not None:
        argv += ["--max-examples", str(config.max_examples)]
    if config.loss != defaults.loss:
        argv += ["--loss", config.loss]
    if config.loss_aggregation != defaults.loss_aggregation:
        argv += ["--loss-aggregation", config.loss_aggregation]
    for stage, params in sorted(config.pipeline_params.items()):
        for key, value in sorted(dict(params).items()):
            flag = STAGE_FLAGS.get((stage, key))
            if flag is not None:
                argv += [flag, _num(value) if not isinstance(value, str) else value]
            else:  # any other stage or planning parameter, as JSON (reads back exactly)
                argv += ["--stage-option", f"{stage}.{key}={_json(value)}"]
    if config.condition:
        argv += ["--condition", config.condition]
    argv += ["--log-dir", log_dir if log_dir is not None else config.log_dir]
    return argv


def _json(value: Any) -> str:
    """VALUE of a ``KEY=VALUE`` flag: tp train reads JSON when it parses, else a string."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return value
    return json.dumps(value)


def run_commands_script(plan: Plan, header: Sequence[str] = ()) -> str:
    lines = ["#!/usr/bin/env bash",
             f"# {plan.kind}: {plural(len(plan.runs), 'run')}; re-running a command "
             "resumes its run.",
             *[f"# {h}" for h in header],
             "set -euo pipefail",
             'cd "$(dirname "$0")"', ""]
    for run in plan.runs:
        lines.append(shlex.join(train_command(run.config, log_dir=run.key)))
    return "\n".join(lines) + "\n"


def write_run_commands(plan: Plan, header: Sequence[str] = ()) -> Path:
    path = plan.root / "run_commands.sh"
    path.write_text(run_commands_script(plan, header), encoding="utf-8")
    path.chmod(0o755)
    return path


# --------------------------------------------------------------------------- provenance
def git_commit() -> dict[str, Any] | None:
    """Commit of the textpolicy source checkout (None when it is not a git checkout)."""
    import textpolicy

    where = Path(textpolicy.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=where, capture_output=True, text=True, timeout=10,
                               check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)} if commit else None


_FINGERPRINTS: dict[str, tuple[threading.Thread, dict[str, Any]]] = {}


def task_fingerprint(task_name: str, task_params: Mapping[str, Any], *,
                     timeout: float = 20.0) -> dict[str, Any]:
    """The task's ``describe()`` and data ``fingerprint()`` (an error note if unavailable).

    A task may need to fetch its data to fingerprint it; a plan must not hang on that (no
    network, a slow hub), so after ``timeout`` seconds the manifest records a note instead.
    The manifest is rewritten after the runs, when the data is local.
    """
    box: dict[str, Any] = {}

    def work() -> None:
        from textpolicy.plugins import get_registry, structure_params

        try:
            record = get_registry().tasks.get(task_name)
            params = structure_params(record.params, task_params, where=f"task {task_name!r}")
            task = record.factory(params)
            box["value"] = {"name": task_name, "describe": redact(dict(task.describe())),
                            "fingerprint": dict(task.fingerprint())}
        except Exception as exc:  # provenance must never stop a plan from being written
            box["value"] = {"name": task_name, "fingerprint": None,
                            "fingerprint_error": f"{type(exc).__name__}: {exc}"}

    key = json.dumps([task_name, dict(task_params)], sort_keys=True, default=str)
    if key in _FINGERPRINTS:  # one lookup per process and task (it may still be running)
        thread, box = _FINGERPRINTS[key]
    else:
        thread = threading.Thread(target=work, daemon=True, name="task fingerprint")
        _FINGERPRINTS[key] = (thread, box)
        thread.start()
    thread.join(timeout)
    if "value" not in box:
        return {"name": task_name, "fingerprint": None,
                "fingerprint_error": f"not available within {timeout:.0f} s (data not local?)"}
    result: dict[str, Any] = box["value"]
    return result


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def run_entry(run: PlannedRun) -> dict[str, Any]:
    return {"seed": run.seed, "log_dir": run.key, "lr": run.lr,
            "command": shlex.join(train_command(run.config, log_dir=run.key)),
            "config": config_record(run.config),
            "plugins": run_plugins(run.config)}


def run_plugins(config: TrainConfig) -> list[dict[str, Any]]:
    """The plugin distributions that provide the components of ``config``'s run."""
    from textpolicy.pipeline import load_pipeline

    pipeline = load_pipeline(config.pipeline, **dict(config.pipeline_params)).describe()
    return plugin_provenance(config, pipeline)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(strictjson.dumps(redact(data), indent=2, default=str) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)
