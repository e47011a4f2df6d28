"""``tp run SPEC``: run a spec file (sweep, campaign or experiment).

``tp run`` executes; ``--dry-run`` only writes the plan (manifest.json, run_commands.sh).
Also home of what ``tp sweep`` and ``tp campaign`` share: the execution options and turning
their flags into the same spec table a TOML file holds.
"""

from __future__ import annotations

import datetime as _dt
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click

from textpolicy.cli.params import finite, parse_key_values, set_option_from_flag
from textpolicy.errors import ConfigError
from textpolicy.training.defaults import STAGE_FLAGS

F = Callable[..., Any]


def parse_floats(text: str, flag: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag}: {text!r}: expected comma-separated numbers, e.g. "
                          "5e-5,2e-4") from None
    if not values:
        raise ConfigError(f"{flag}: {text!r}: expected at least one number")
    return values


def parse_seeds(text: str, flag: str = "--seeds") -> list[int]:
    """``0,1,2`` or a range ``0-7`` (inclusive), or a mix: ``0-3,8``."""
    from textpolicy.runner.spec import MAX_SEEDS

    seeds: list[int] = []
    shown = text if len(text) <= 60 else text[:57] + "..."
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                block = range(int(lo), int(hi) + 1)
            else:
                block = range(int(part), int(part) + 1)
            if len(seeds) + len(block) > MAX_SEEDS:  # checked before a range is expanded
                raise ConfigError(f"{flag}: {shown!r}: more than {MAX_SEEDS:,} seeds; allowed: "
                                  f"at most {MAX_SEEDS:,}")
            seeds.extend(block)
    except ValueError:
        raise ConfigError(f"{flag}: {shown!r}: expected seeds like 0,1,2 or 0-7") from None
    if not seeds:
        raise ConfigError(f"{flag}: {text!r}: expected at least one seed")
    return seeds


def timestamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d_%H%M%S")


def parse_executor_options(values: Sequence[str]) -> dict[str, Any]:
    """``--executor-option K=V`` (repeatable): V is read as a TOML value (``2``, ``0.5``,
    ``true``, ``"x"``), else taken as a string (``address=auto``)."""
    import tomllib

    options: dict[str, Any] = {}
    for item in values:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--executor-option: {item!r}: expected KEY=VALUE, e.g. "
                              "num_gpus=1")
        try:
            options[key] = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            options[key] = text.strip()
    return options


def executor_table(params: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``[executor]`` table the --executor flags give (None: no flag given)."""
    name, values = params.get("executor"), params.get("executor_option") or ()
    if name is None and not values:
        return None
    table: dict[str, Any] = {"name": name} if name else {}
    if values:
        table["options"] = parse_executor_options(values)
    return table


def execution_options(f: F) -> F:
    """--parallel, --continue-on-error, --workers, --executor, --executor-option, --progress
    (shared by run/sweep/campaign)."""
    f = click.option("--executor-option", "executor_option", multiple=True, metavar="K=V",
                     help="An option of the executor (repeatable), e.g. address=auto, "
                          "num_gpus=1, partition=gpu; see docs/executors.md.")(f)
    f = click.option("--executor", default=None, metavar="NAME",
                     help="Where runs execute: local, ray, slurm or a plugin's. [default: "
                          "the spec's, local]")(f)
    f = click.option("--progress", type=click.Choice(["auto", "rich", "plain", "off"]),
                     default="auto",
                     help="Progress display on stderr (auto: rich on a terminal, else plain "
                          "lines).")(f)
    f = click.option("--workers", type=click.Choice(["auto", "thread", "process"]),
                     default="auto",
                     help="How parallel runs execute: threads of this process (auto) or "
                          "worker processes.")(f)
    f = click.option("--continue-on-error", is_flag=True, default=None,
                     help="Keep running the other runs when one fails.")(f)
    f = click.option("--parallel", type=click.IntRange(min=1), default=None,
                     help="Runs executed at the same time, each on its own engine client. "
                          "[default: the spec's, 1]")(f)
    return f


def stage_options(f: F, *, gtpo_hicra: bool = True) -> F:
    """The seed document's stage flags; given flags apply to every arm with that stage."""
    f = click.option("--sepa-correct-rate-gate", type=finite(), default=None,
                     help="Min correct rate for SEPA. [default: 0.1]")(f)
    f = click.option("--sepa-delay-steps", type=int, default=None,
                     help="SEPA delay. [default: 10]")(f)
    f = click.option("--sepa-schedule", type=click.Choice(["linear", "auto"]), default=None,
                     help="SEPA schedule. [default: linear]")(f)
    f = click.option("--sepa-steps", type=int, default=None,
                     help="SEPA ramp steps. [default: 100]")(f)
    if gtpo_hicra:
        f = click.option("--hicra-alpha", type=finite(), default=None,
                         help="HICRA amplification. [default: 0.2]")(f)
        f = click.option("--gtpo-beta", type=finite(), default=None,
                         help="GTPO entropy weighting. [default: 0.1]")(f)
    return f




#: spec key paths set by the flags common_table reads (for error messages)
COMMON_FLAGS: dict[str, str] = {
    "engine.name": "--engine", "engine": "--engine", "task": "--task", "model": "--model",
    "engine.options.base_url": "--base-url", "engine.options.trusted_host": "--trust-host",
    "parallel": "--parallel",
    "continue_on_error": "--continue-on-error",
    "executor": "--executor", "executor.name": "--executor",
    "executor.options": "--executor-option",
    **{f"training.{key}": "--" + key.replace("_", "-")
       for key in ("batch_size", "group_size", "max_tokens", "temperature", "lora_rank",
                   "max_steps", "save_every", "max_examples", "lr")},
    **{f"eval.{key}": f"--eval-{key}" for key in ("every", "samples", "prompts")},
    **{f"stage_params.{stage}.{key}": "--" + flag.replace("_", "-")
       for flag, (stage, key) in STAGE_FLAGS.items()},
}


def flag_problems(problems: Sequence[str], source: str, flags: Mapping[str, str]
                  ) -> list[str]:
    """Spec problem lines (``SOURCE: key.path: ...``) with each key path that a flag set
    replaced by that flag; other lines keep their key path."""
    out = []
    for line in problems:
        text = line.removeprefix(f"{source}: ")
        path = text.split(": ", 1)[0]
        if path.startswith("engine.options.") and path not in flags:
            out.append(f"--engine-option {path.removeprefix('engine.options.')}"
                       + text[len(path):])
            continue
        if path.startswith("executor.options."):
            out.append(f"--executor-option {path.removeprefix('executor.options.')}"
                       + text[len(path):])
            continue
        out.append(flags[path] + text[len(path):] if path in flags else text)
    return out


def common_table(params: dict[str, Any]) -> dict[str, Any]:
    """Spec keys shared by ``tp sweep`` and ``tp campaign`` flags (only what was given)."""
    raw: dict[str, Any] = {"engine": {"name": params["engine"]}, "task": params["task"]}
    options = parse_key_values(params.get("engine_option") or (), "--engine-option")
    if params.get("base_url"):
        set_option_from_flag(options, "base_url", "--base-url", params["base_url"])
    if params.get("trust_host"):
        set_option_from_flag(options, "trusted_host", "--trust-host", params["trust_host"])
    if options:
        raw["engine"]["options"] = options
    if params.get("model"):
        raw["model"] = params["model"]
    training: dict[str, Any] = {}
    for key in ("batch_size", "group_size", "max_tokens", "temperature", "lora_rank",
                "max_steps", "save_every", "max_examples", "lr"):
        if params.get(key) is not None:
            training[key] = params[key]
    raw["training"] = training
    evals = {k: params[f"eval_{k}"] for k in ("every", "samples", "prompts")
             if params.get(f"eval_{k}") is not None}
    if evals:
        raw["eval"] = evals
    stage_params: dict[str, dict[str, Any]] = {}
    for flag, (stage, key) in STAGE_FLAGS.items():
        if params.get(flag) is not None:
            stage_params.setdefault(stage, {})[key] = params[flag]
    if stage_params:
        raw["stage_params"] = stage_params
    for key in ("parallel", "continue_on_error"):
        if params.get(key) is not None:
            raw[key] = params[key]
    executor = executor_table(params)
    if executor is not None:
        raw["executor"] = {"name": "local", **executor}
    return raw


def engine_options(f: F) -> F:
    """Where runs happen: engine, task, model, service URL, LoRA rank (the seed's defaults)."""
    f = click.option("--lora-rank", type=click.IntRange(min=0), default=None,
                     help="LoRA rank (0: all weights). [default: the task's; math: 64]")(f)
    f = click.option("--engine-option", "engine_option", multiple=True, metavar="KEY=VALUE",
                     help="An option of the engine (repeatable), e.g. device=cuda, "
                          "max_concurrent=4; see docs/engines.md.")(f)
    f = click.option("--trust-host", default=None, metavar="HOST",
                     help="Send the Tinker API key to HOST, the --base-url host, although it "
                          "is neither Tinker's service nor this machine (prints a warning).")(f)
    f = click.option("--base-url", default=None,
                     help="Tinker service URL. [default: production]")(f)
    f = click.option("--model", default=None, help="Model ID. [default: the task's; math: "
                     "Qwen/Qwen3-4B-Instruct-2507]")(f)
    f = click.option("--task", default="math", help="Task (math | arithmetic | plugin).")(f)
    f = click.option("--engine", default="tinker", help="Engine (tinker | local | plugin).")(f)
    return f


def sampling_options(*, group_size: int) -> Callable[[F], F]:
    """Prompts × completions per step and how they are sampled (the seed's group size
    default differs: 16 for the sweep, 8 for the campaign)."""
    def decorate(f: F) -> F:
        f = click.option("--temperature", type=finite(), default=None,
                         help="Sampling temperature. [default: the task's; math: 0.7]")(f)
        f = click.option("--max-tokens", type=click.IntRange(min=1), default=None,
                         help="Max completion length. [default: the task's; math: 2048]")(f)
        f = click.option("--group-size", type=click.IntRange(min=1), default=group_size,
                         help="Completions per prompt.")(f)
        f = click.option("--batch-size", type=click.IntRange(min=1), default=4,
                         help="Prompts per step.")(f)
        return f
    return decorate


def eval_options(f: F) -> F:
    f = click.option("--eval-prompts", type=click.IntRange(min=1), default=None,
                     help="Held-out prompts per eval. [default: all]")(f)
    f = click.option("--eval-samples", type=click.IntRange(min=1), default=None,
                     help="Samples per held-out prompt. [default: 4]")(f)
    f = click.option("--eval-every", type=click.IntRange(min=0), default=None,
                     help="Held-out eval every N steps and at the end (0: off). "
                          "[default: the task's; math 0, arithmetic 10]")(f)
    return f


def execute_spec(raw: dict[str, Any], *, source: str, params: dict[str, Any],
                 execute: bool, flags: Mapping[str, str] | None = None) -> None:
    """Validate a spec table built from flags and run it (exit with the outcome's code).

    Problems are reported on one line, each naming the flag that set the key (``flags``:
    extra spec key path → flag, over ``COMMON_FLAGS``)."""
    from textpolicy.runner import Options, Spec, run_spec
    from textpolicy.runner.spec import SpecError

    try:
        spec = Spec.from_dict(raw, source=source)
    except SpecError as exc:
        named = flag_problems(exc.problems, source, {**COMMON_FLAGS, **(flags or {})})
        raise ConfigError("; ".join(named)) from None
    opts = Options(execute=execute, workers=params["workers"], progress=params["progress"])
    outcome = run_spec(spec, opts, echo=click.echo)
    if outcome.exit_code:
        sys.exit(outcome.exit_code)


@click.command(context_settings={"show_default": True})
@click.argument("spec_file", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True,
              help="Only write the plan (manifest.json, run_commands.sh); run nothing.")
@click.option("--output", default=None,
              help="Output directory. [default: the spec's `output`, else results/<name>]")
@execution_options
def run(spec_file: str, dry_run: bool, output: str | None, **params: Any) -> None:
    """Run a spec file: a sweep, a campaign, an experiment or a pool.

    An experiment is an LR sweep, then a campaign at the tuned LRs, then the analysis. A pool
    analyses finished campaigns as one, each campaign a look (a campaign added after looking
    at an earlier result counts as a look).

    Re-running the same spec resumes: finished runs are skipped and interrupted runs continue
    from their last checkpoint. Ctrl-C stops every run cleanly after its current step.

    \b
    Examples:
      tp run examples/quickstart.toml
      tp run examples/tinker_math.toml --dry-run
      tp run examples/ablation.toml --parallel 4
    """
    import attrs

    from textpolicy.runner import Options, Spec, run_spec

    spec = Spec.from_toml(spec_file)
    if output is not None:
        spec = attrs.evolve(spec, output=output)
    executor = executor_table(params)
    if executor is not None:
        spec = _with_executor(spec, executor, source=spec_file)
    opts = Options(execute=not dry_run, parallel=params["parallel"],
                   continue_on_error=params["continue_on_error"], workers=params["workers"],
                   progress=params["progress"], execute_hint="run it without --dry-run")
    outcome = run_spec(spec, opts, echo=click.echo)
    if outcome.exit_code:
        sys.exit(outcome.exit_code)


def _with_executor(spec: Any, table: dict[str, Any], *, source: str) -> Any:
    """``spec`` with the executor the flags name (a flag's option over the spec's when the
    flags keep its executor), checked as the spec's would be; problems name the flag."""
    import attrs

    from textpolicy.runner.spec import ExecutorSpec, SpecError
    from textpolicy.runner.specload import check_executor

    name = table.get("name", spec.executor.name)
    options = dict(table.get("options", {}))
    if name == spec.executor.name:
        options = {**spec.executor.options, **options}
    executor = ExecutorSpec(name=name, options=options)
    try:
        check_executor(executor, source)
    except SpecError as exc:
        raise ConfigError("; ".join(flag_problems(exc.problems, source, COMMON_FLAGS))
                          ) from None
    return attrs.evolve(spec, executor=executor)


#: width of the help text in docs/cli.md (so the page does not depend on a terminal)
CLI_REFERENCE_WIDTH = 100


def render_cli_reference() -> str:
    """docs/cli.md: the ``--help`` of ``tp`` and of every command, each made with the
    command's own context settings (``show_default`` ...), exactly as ``tp NAME --help``
    prints it at ``CLI_REFERENCE_WIDTH`` columns. ``python -c "from textpolicy.cli.run_cmd
    import render_cli_reference as r; print(r(), end='')" > docs/cli.md``"""
    from textpolicy.cli import main

    width = CLI_REFERENCE_WIDTH
    root = click.Context(main, info_name="tp", terminal_width=width, max_content_width=width,
                         **main.context_settings)
    parts = ["# Command-line reference", "",
             "Generated from `--help` of every command (a test compares it with what "
             "`tp NAME --help` prints).", "",
             "## tp", "", "```text", main.get_help(root), "```"]
    for name in main.list_commands(root):
        command = main.get_command(root, name)
        if command is None:
            continue
        ctx = click.Context(command, info_name=name, parent=root, terminal_width=width,
                            max_content_width=width, **command.context_settings)
        parts += ["", f"## tp {name}", "", "```text", command.get_help(ctx), "```"]
    return "\n".join(parts) + "\n"
