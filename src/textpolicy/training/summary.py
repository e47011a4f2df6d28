"""What a run will do, in two lines: engine, task, model, then the sizes.

Every ``tp`` command that trains prints these first, so a default is never a surprise:
``tp train`` defaults to the local engine and the arithmetic task, ``tp sweep`` and
``tp campaign`` to Tinker and MATH (the seed document's values), and the sweep samples 16
completions per prompt where the campaign samples 8.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from textpolicy.plugins import Registry
from textpolicy.training.config import TrainConfig
from textpolicy.wording import plural


def effective_model(config: TrainConfig, registry: Registry | None = None) -> str:
    """The model the run trains: ``config.model``, else its task's default model."""
    if config.model:
        return config.model
    from textpolicy.training.session import make_task

    return str(make_task(config, registry).default_model)


def _service(config: TrainConfig) -> str:
    url = config.engine_options.get("base_url")
    if not url:
        return ""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host  # never user:password@
    return f" at {urlunsplit((parts.scheme, netloc, parts.path, '', ''))}"


def settings_lines(config: TrainConfig, model: str, *, run: bool = True) -> list[str]:
    """``Settings: ...`` (engine, task, model) and ``Sizes: ...`` of ``config``.

    ``run``: also the pipeline, LR and seed (one run); a sweep or campaign, whose runs differ
    in those, leaves them to its own lines."""
    default = "" if config.model else " (the task's default)"
    first = (f"Settings: engine {config.engine}{_service(config)}, task {config.task}, "
             f"model {model}{default}")
    if run:
        first += f"; pipeline {config.pipeline}, lr {config.lr:g}, seed {config.seed}"
    weights = (f"LoRA rank {config.lora_rank}" if config.lora_rank
               else "full fine-tune (no LoRA)")
    evals = (f"held-out eval every {plural(config.eval_every, 'step')}" if config.eval_every
             else "no held-out eval")
    sizes = (f"Sizes: {plural(config.max_steps, 'step')} × "
             f"{plural(config.batch_size, 'prompt')} × "
             f"{plural(config.group_size, 'completion')}, up to "
             f"{plural(config.max_tokens, 'token')} each at temperature "
             f"{config.temperature:g}; {weights}; {evals}")
    return [first, sizes]
