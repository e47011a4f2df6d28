"""The spec-file reference (docs/specs.md), generated from the spec classes so it cannot drift.

    python -m textpolicy.runner.reference > docs/specs.md
"""

from __future__ import annotations

import types
import typing
from typing import Any, Union

import attrs

from textpolicy.runner.spec import (
    AnalysisSpec,
    ArmSpec,
    EngineSpec,
    EvalSpec,
    ExecutorSpec,
    PoolSpec,
    SequentialSpec,
    Spec,
    SweepSpec,
    TaskSpec,
    TrainingSpec,
    WandbSpec,
)

SECTIONS: tuple[tuple[str, type], ...] = (
    ("top level", Spec),
    ("[engine]", EngineSpec),
    ("[task]", TaskSpec),
    ("[training]", TrainingSpec),
    ("[eval]", EvalSpec),
    ("[[arms]]", ArmSpec),
    ("[sweep]", SweepSpec),
    ("[analysis]", AnalysisSpec),
    ("[wandb]", WandbSpec),
    ("[sequential]", SequentialSpec),
    ("[executor]", ExecutorSpec),
    ("[pool]", PoolSpec),
)

INTRO = """\
# Spec files

A spec file is TOML. `kind` says what `tp run SPEC` does with it:

- `sweep` — probe every arm at every LR of `[sweep]` for `probe_steps` steps; print the
  results table, the best LR per arm and the recommended campaign; write
  `sweep_results.json`, `sweep_plot.png` and a ready-to-run `campaign.toml`. An arm without
  a successful probe has no LR: the sweep then recommends nothing (no `campaign.toml`; a plot
  only of the probes that have a value), names the failed probes and exits 1.
- `campaign` — run every arm × every seed (paired: seed s is the same init, data order and
  eval prompts in every arm), then the analysis. `tp run --dry-run` only writes
  `manifest.json` and `run_commands.sh`.

A dry run checks what the real runs need, as the real run does before anything starts: the
task's parameters and data files, the model (the local engine: the tiny model or a folder with
`config.json`) and the engine's options — a problem is one line, exit code 2, nothing written.
It then says, one `Not ready on this machine: ...` line each, what would stop the runs here
but perhaps not where they will run: no Tinker API key, a service that does not answer, task
data neither local nor in the cache (the Hugging Face hub is asked once, with one quick
connection), no W&B key. With `[wandb]` and no W&B key (or W&B unreachable), a real run says so
in one line and logs offline (`wandb sync` uploads it later); W&B logging that stops during a
run is reported when the run ends, training goes on.
- `experiment` — a sweep of the arms that set no `lr`, then a campaign at the tuned LRs, then
  the analysis: `<output>/sweep/`, `<output>/campaign/` (+ `analysis/`), `experiment.json`.
  Its `--dry-run` writes the sweep's plan; the campaign is planned once the sweep has chosen
  each arm's LR.
- `pool` — analyse finished campaigns of the same arms and settings as one, each campaign a
  look of a group-sequential design (docs/statistics.md, "Pooling campaigns"): what
  `tp analyze A B ... --spending S --out OUTPUT` writes (significance and sequential reports,
  every look and the design-adjusted p) plus a `manifest.json`. It uses only `kind`, `name`,
  `output`, `[pool]` and `[analysis]`; other keys are refused. The campaigns must exist and
  pool: settings that differ (model, task, max tokens, temperature, pipelines and their
  parameters, LRs, ...) and repeated seeds are refused one line each, exit 2, nothing
  written. **A campaign added after looking at an earlier result counts as a look**: list the
  campaigns in the order they were run. An `output` that is one of the campaigns, or holds
  the `manifest.json` of anything but an earlier pool, is refused (one line, exit 2).
  `--dry-run` checks all that and writes nothing.

  ```toml
  kind = "pool"
  output = "results/pooled"
  [pool]
  campaigns = ["results/run1/campaign", "results/run2/campaign"]
  spending = "obrien-fleming"   # or "pocock"
  [analysis]
  alpha = 0.05
  ```

Outputs are resumable: running a spec again skips finished runs and resumes interrupted ones
from their last checkpoint. Sweep probes live in `<arm>_lr<lr>/` (the seed document's
layout, e.g. `grpo_lr5e-05/`) when the sweep has one seed, and in `<arm>_lr<lr>/seed<s>/`
with several; campaign runs in `<arm>/seed<s>/`.

An arm's learning rate: its own `lr`, else the LR the sweep tuned for it (experiment), else
`training.lr`, else the task's default — the seed document's `--baseline-lr` /
`--candidate-lr` over `--lr`. Settings left out take the task's defaults, exactly as
`tp train` does.

**LR selection does not leak into the verdict.** Sweep probes are evaluated on the task's
validation split (`sweep.split`), campaign runs on its test split (the endpoint), and sweep
seeds (default `[1000]`) must be disjoint from the campaign seeds — a campaign run at a probe's
seed and LR would replay that probe step for step — unless `sweep.share_seeds = true`.
`sweep_results.json` records the `selection` (metric, split, seeds, the prompt ids evaluated);
the campaign manifest copies it as `lr_selection` (an experiment's own sweep, or the sweep a
campaign spec names with `lr_sweep`, which the sweep's `campaign.toml` sets), and
significance.md says which split and seeds chose the LRs and whether they overlap the
campaign's seeds or test prompts.

Every problem of a spec is reported at once, one line each —
`FILE: key.path: value: problem; allowed: ...` — with "did you mean" for misspelt keys and
names; the exit code is 2 and nothing is written. Plugin names (engine, task, pipeline,
stage, executor) and plugin parameters (`[task.params]`, `[stage_params.<stage>]`,
`[[arms]] params`, `[executor.options]`) are checked against the plugin registry and each
plugin's own parameter class. Secrets (API keys) are refused: set them in the environment.
`nan`, `inf` and `-inf` are refused everywhere (TOML allows them; no setting means one). Sizes
are bounded: a spec file of at most 1 MiB, UTF-8 without a byte-order mark, arrays and inline
tables nested at most 32 deep, at most 1000 seeds (each at most 2147483647), 64 arms, 64 sweep
LRs and 10,000,000 resamples, names of at most 100 characters; arm names must differ ignoring
case (they are directory names); long names and values are cut in messages.

Short forms: `engine = "local"` means `[engine] name = "local"`; `task = "math"` means
`[task] name = "math"`; `executor = "ray"` means `[executor] name = "ray"`
(docs/executors.md).

This reference is generated from the spec classes (`python -m textpolicy.runner.reference`);
a test keeps it current.
"""


def type_name(tp: Any) -> str:
    if isinstance(tp, str):
        return tp
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        names = [type_name(a) for a in args if a is not type(None)]
        return " | ".join(names) + (" (optional)" if type(None) in args else "")
    if origin is tuple:
        return f"array of {type_name(args[0])}"
    if origin is not None and "Mapping" in str(origin):
        return "table"
    if attrs.has(tp):
        return "table"
    return {int: "integer", float: "number", str: "string", bool: "boolean"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def default_text(field: attrs.Attribute[Any]) -> str:
    default: Any = field.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        value = default.factory()
        if attrs.has(type(value)):
            return "(table defaults)"
        return "`{}`" if value == {} else f"`{value!r}`"
    if default is attrs.NOTHING:
        return "**required**"
    if default is None:
        return "(omitted)"
    if field.name == "arms":
        return "baseline = grpo, candidate = full"
    if isinstance(default, tuple):
        return "`[" + ", ".join(repr(v) for v in default) + "]`"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, str):
        return f'`"{default}"`'
    return f"`{default!r}`"


def render() -> str:
    hints_cache: dict[type, dict[str, Any]] = {}
    lines = [INTRO]
    for title, cls in SECTIONS:
        hints = hints_cache.setdefault(cls, typing.get_type_hints(cls))
        doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split()).replace("``", "`")
        lines += ["", f"## {title}", "", doc, "",
                  "| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
        for field in attrs.fields(cls):
            meta = field.metadata
            allowed = meta.get("allowed", "") or "any"
            lines.append(f"| `{field.name}` | {type_name(hints[field.name])} | "
                         f"{default_text(field)} | {allowed} | {meta.get('doc', '')} |")
    lines += ["", "## Stage parameters", "",
              "`[stage_params.<stage>]` and `[[arms]] params = { <stage> = {...} }` take the "
              "parameters of each stage, checked against the stage's parameter class "
              "(`tp pipelines` and docs/pipelines.md list them); `planning = { detector = "
              "\"strategic_grams\", ... }` configures the planning detector.", ""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
