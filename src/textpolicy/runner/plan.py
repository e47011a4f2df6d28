"""Plans: the runs of a sweep or a campaign, each a complete ``TrainConfig``.

* Sweep: every swept arm × every LR of ``sweep.lr_values`` × every sweep seed, at
  ``sweep.probe_steps``, evaluated on the task's ``sweep.split`` (validation by default, never
  the campaign's test prompts unless a spec asks for it). A probe lives in ``<arm>_lr<lr>/``
  (the seed document's layout, e.g. ``grpo_lr5e-05/``) when the sweep has one seed, and in
  ``<arm>_lr<lr>/seed<s>/`` when it has several.
* Campaign: every arm × every seed in ``<arm>/seed<s>/``. Seed s is the same ``TrainConfig.seed``
  in every arm — the same init, data order and eval prompts — so arms are paired by seed. Runs
  are ordered seed-major (seed 0 of every arm, then seed 1, ...) so a campaign stopped early
  still holds complete pairs.

An arm's learning rate: its own ``lr`` if set, else the LR a sweep tuned for it (experiments),
else ``training.lr`` — the seed document's ``--baseline-lr`` / ``--candidate-lr`` over ``--lr``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from textpolicy.runner.spec import ArmSpec, Spec, merged_stage_params
from textpolicy.training import make_config
from textpolicy.training.config import TrainConfig


@attrs.frozen
class PlannedRun:
    """One training run of a plan. ``key`` is its directory relative to the plan's root."""

    key: str
    arm: str
    pipeline: str
    seed: int
    lr: float
    config: TrainConfig


@attrs.frozen
class Plan:
    kind: str  # "sweep" | "campaign"
    root: Path
    runs: tuple[PlannedRun, ...]

    @property
    def total_steps(self) -> int:
        return sum(run.config.max_steps for run in self.runs)


def format_lr(lr: float) -> str:
    """Shortest exponent form that reads back as ``lr``: 5e-05, 2e-04, 2.5e-04."""
    for digits in range(0, 16):
        text = f"{lr:.{digits}e}"
        if float(text) == lr:
            return text
    return repr(lr)


def arm_lr(spec: Spec, arm: ArmSpec, tuned: Mapping[str, float] | None = None
           ) -> float | None:
    """The arm's LR: its own, else the tuned one, else ``training.lr`` (None: the task's
    default)."""
    if arm.lr is not None:
        return arm.lr
    if tuned and arm.label in tuned:
        return tuned[arm.label]
    return spec.training.lr


def swept_arms(spec: Spec) -> tuple[ArmSpec, ...]:
    """Arms a sweep probes: all of a sweep spec's; an experiment's arms without a fixed lr."""
    if spec.kind == "sweep":
        return spec.arms
    return tuple(arm for arm in spec.arms if arm.lr is None)


def train_config(spec: Spec, arm: ArmSpec, *, seed: int, lr: float | None, max_steps: int,
                 log_dir: Path, eval_split: str = "test") -> TrainConfig:
    """The complete configuration of one run (settings the spec leaves out take the task's
    defaults, as in ``tp train``)."""
    t, e = spec.training, spec.eval
    settings: dict[str, Any] = dict(
        log_dir=str(log_dir),
        task=spec.task.name,
        task_params=dict(spec.task.params),
        engine=spec.engine.name,
        engine_options=dict(spec.engine.options),
        model=spec.model,
        pipeline=arm.pipeline,
        pipeline_params=merged_stage_params(spec, arm),
        max_steps=max_steps,
        batch_size=t.batch_size,
        group_size=t.group_size,
        seed=seed,
        save_every=t.save_every,
        eval_samples=e.samples,
        eval_prompts=e.prompts,
        eval_temperature=e.temperature,
        eval_split=eval_split,
        max_examples=t.max_examples,
        loss=t.loss,
        loss_aggregation=t.loss_aggregation,
        condition=arm.label,
    )
    optional = {"lr": lr, "max_tokens": t.max_tokens, "temperature": t.temperature,
                "eval_every": e.every}
    settings.update({k: v for k, v in optional.items() if v is not None})
    if t.lora_rank is not None:
        settings["lora_rank"] = t.lora_rank or None
    return make_config(**settings)


def sweep_plan(spec: Spec, root: Path) -> Plan:
    arms = swept_arms(spec)
    seeds = spec.sweep.seeds
    runs = []
    for arm in arms:
        for lr in spec.sweep.lr_values:
            probe = f"{arm.label}_lr{format_lr(lr)}"
            for seed in seeds:
                key = probe if len(seeds) == 1 else f"{probe}/seed{seed}"
                runs.append(PlannedRun(
                    key=key, arm=arm.label, pipeline=arm.pipeline, seed=seed, lr=lr,
                    config=train_config(spec, arm, seed=seed, lr=lr,
                                        max_steps=spec.sweep.probe_steps, log_dir=root / key,
                                        eval_split=spec.sweep.split)))
    return Plan(kind="sweep", root=root, runs=tuple(runs))


def campaign_plan(spec: Spec, root: Path, tuned: Mapping[str, float] | None = None) -> Plan:
    runs = []
    for seed in spec.seeds:
        for arm in spec.arms:
            lr = arm_lr(spec, arm, tuned)
            key = f"{arm.label}/seed{seed}"
            config = train_config(spec, arm, seed=seed, lr=lr,
                                  max_steps=spec.training.max_steps, log_dir=root / key)
            runs.append(PlannedRun(key=key, arm=arm.label, pipeline=arm.pipeline, seed=seed,
                                   lr=config.lr, config=config))
    return Plan(kind="campaign", root=root, runs=tuple(runs))


def check_existing_runs(plan: Plan) -> None:
    """Refuse a plan whose run directories already hold runs made with other settings.

    Otherwise a changed spec pointed at an old output would skip the finished runs (or fail
    on the unfinished ones) after rewriting manifest.json and run_commands.sh with settings
    those runs never had. Raising ``max_steps`` (to extend runs) and the engine's
    ``base_url``/``device`` are allowed, as in ``tp train``.
    """
    from textpolicy.errors import ConfigError
    from textpolicy.training.run_record import (
        config_dict,
        config_differences,
        describe_differences,
    )
    from textpolicy.training.runfiles import RunFiles
    from textpolicy.wording import plural

    clashes: list[str] = []
    for run in plan.runs:
        files = RunFiles(run.config.log_dir)
        stored = files.read_config()
        if stored is None or not files.has_any_rows():
            continue
        recorded = stored.get("config")
        old: Mapping[str, Any] = recorded if isinstance(recorded, Mapping) else {}
        new = config_dict(run.config)
        diff = config_differences(old, new)
        if diff:
            changes = describe_differences(old, new, diff)
            clashes.append(f"{run.key} ({'; '.join(changes)})")
    if clashes:
        more = f" and {len(clashes) - 1} more" if len(clashes) > 1 else ""
        raise ConfigError(
            f"{plan.root}: {plural(len(clashes), 'existing run was', 'existing runs were')} "
            "made with other settings: "
            f"{clashes[0]}{more}; use another output directory, or the settings they were "
            f"made with")
