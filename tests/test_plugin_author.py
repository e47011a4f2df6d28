"""The plugin author's path: stage contract checks, exact zeros, provenance, reproducible
commands, load-failure hints, and the `tp new-plugin` scaffold."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
from click.testing import CliRunner
from textpolicy_builtins.advantages import grpo_advantages, maxrl_advantages

from textpolicy import hookimpl, plugins
from textpolicy.cli import main
from textpolicy.errors import StageError
from textpolicy.pipeline import StepContext, TokenCredit, build_pipeline
from textpolicy.plugins import build_registry
from textpolicy.records import AdvantageStage
from textpolicy.rollouts import Rollouts
from textpolicy.testing import make_rollouts, word_vocab

# ---- throw-away stages that break the contract ------------------------------------------------

@attrs.frozen
class _BadParams:
    step: int = 0  # first training step at which the stage misbehaves


def _nan_episode(rollouts: Rollouts, ctx: StepContext, params: _BadParams) -> Any:
    adv = rollouts.rewards - rollouts.rewards.mean()
    return adv * np.nan if ctx.step >= params.step else adv


def _inf_token(credit: TokenCredit, rollouts: Rollouts, ctx: StepContext,
               params: _BadParams) -> TokenCredit:
    adv = credit.advantages.copy()
    if ctx.step >= params.step:
        adv[0, 0] = np.inf
    return attrs.evolve(credit, advantages=adv)


def _nan_signal(credit: TokenCredit, rollouts: Rollouts, ctx: StepContext,
                params: _BadParams) -> TokenCredit:
    return attrs.evolve(credit, signal=credit.signal * np.nan)


def _ndarray_token(credit: TokenCredit, rollouts: Rollouts, ctx: StepContext,
                   params: _BadParams) -> Any:
    return credit.advantages * 2.0 if ctx.step >= params.step else credit


class BadStages:
    @staticmethod
    @hookimpl
    def textpolicy_register_stages() -> Iterable[AdvantageStage]:
        return [
            AdvantageStage(name="nan_episode", level="episode", fn=_nan_episode,
                           params=_BadParams),
            AdvantageStage(name="inf_token", level="token", fn=_inf_token, params=_BadParams),
            AdvantageStage(name="nan_signal", level="token", fn=_nan_signal,
                           params=_BadParams),
            AdvantageStage(name="array_token", level="token", fn=_ndarray_token,
                           params=_BadParams),
        ]


def _bad_registry() -> plugins.Registry:
    return build_registry(extra_plugins=[("bad-stages", BadStages())], load_entry_points=False)


@pytest.mark.parametrize(("name", "needle"), [
    ("nan_episode", "stage 'nan_episode' returned a non-finite episode advantage (nan for "
                    "completion 0)"),
    ("grpo>inf_token", "stage 'inf_token' returned a non-finite token advantage (inf at "
                       "completion 0 token 0)"),
    ("grpo>nan_signal", "stage 'nan_signal' returned a non-finite token signal"),
    ("grpo>array_token", "token stage 'array_token' returned ndarray, not a TokenCredit"),
])
def test_a_stage_breaking_the_contract_is_named(name: str, needle: str) -> None:
    r = make_rollouts(rewards=[1, 0, 0, 0, 1, 1, 0, 0], group_size=4)
    with pytest.raises(StageError) as info:
        build_pipeline(name, registry=_bad_registry())(r, step=3)
    message = str(info.value)
    assert message.startswith("step 3: ") and needle in message, message
    assert "\n" not in message


@pytest.mark.parametrize("pipeline", ["nan_episode", "grpo>inf_token", "grpo>array_token"])
def test_tp_train_fails_at_the_step_a_stage_goes_non_finite(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pipeline: str) -> None:
    monkeypatch.setattr(plugins, "_REGISTRY", _bad_registry())
    stage = pipeline.split(">")[-1]
    log_dir = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "train", "--pipeline", pipeline, "--max-steps", "4", "--eval-every", "0",
        "--stage-option", f"{stage}.step=2", "--progress", "off", "--log-dir", str(log_dir)])
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: step 2: ") and repr(stage) in lines[-1], result.stderr
    assert "Traceback" not in result.output
    # steps 0 and 1 trained and were written; step 2 was not
    steps = [json.loads(x)["step"] for x in
             (log_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1]


def test_a_campaign_arm_whose_stage_goes_nan_fails_and_is_not_analysed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugins, "_REGISTRY", _bad_registry())
    spec = tmp_path / "c.toml"
    spec.write_text('kind = "campaign"\nengine = "local"\ntask = "arithmetic"\nseeds = [0]\n'
                    '[training]\nmax_steps = 2\nbatch_size = 2\ngroup_size = 2\n'
                    '[eval]\nevery = 0\n[[arms]]\nname = "grpo"\npipeline = "grpo"\n'
                    '[[arms]]\nname = "bad"\npipeline = "nan_episode"\n'
                    '[arms.params.nan_episode]\nstep = 1\n', encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", str(spec), "--output", str(out),
                                       "--progress", "off"])
    assert result.exit_code == 1, result.output
    assert ("FAILED bad/seed0: step 1: stage 'nan_episode' returned a non-finite episode "
            "advantage") in result.output
    assert not (out / "analysis").exists()


def test_a_scheduler_returning_nan_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from textpolicy.records import Scheduler

    class NanScheduler:
        gate_open = True

        def __init__(self, params: object) -> None:
            pass

        def observe(self, obs: object) -> None:
            pass

        def value(self, step: int) -> float:
            return float("nan")

        def state_dict(self) -> dict[str, Any]:
            return {}

        def load_state_dict(self, state: object) -> None:
            pass

    class Plugin:
        @staticmethod
        @hookimpl
        def textpolicy_register_schedulers() -> Iterable[Scheduler]:
            return [Scheduler(name="nan_lambda", factory=NanScheduler)]

    registry = build_registry(extra_plugins=[("nan-plugin", Plugin())], load_entry_points=False)
    pipe = build_pipeline("full", {"sepa": {"schedule": "nan_lambda"}}, registry=registry)
    with pytest.raises(StageError, match=r"^step 4: scheduler 'nan_lambda' returned λ = nan"):
        pipe(make_rollouts(rewards=[1, 0, 0, 0]), step=4, vocab=word_vocab())


# ---- exact zeros ------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [grpo_advantages, maxrl_advantages])
def test_equal_non_binary_rewards_give_exact_zeros(fn: Any) -> None:
    rewards = np.array([0.3, 0.3, 0.3, 0.7, 0.7, 0.7, 0.1, 0.2, 0.3])
    groups = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    adv = fn(rewards, groups)
    assert np.all(adv[:6] == 0.0)           # equal rewards: exactly 0, not ±1e-16
    assert adv[7] == 0.0                    # the reward equal to its group's mean
    assert adv[6] < 0 < adv[8]
    assert np.all(grpo_advantages(rewards, groups, scale="std")[:6] == 0.0)


def test_equal_rewards_make_no_trainable_datums() -> None:
    r = make_rollouts(rewards=[0.3] * 4 + [0.6] * 4, group_size=4)
    for name in ("grpo", "maxrl", "full"):
        out = build_pipeline(name)(r, step=50, vocab=word_vocab())
        assert not np.any(out.token_advantages), name


# ---- what a run records: max_tokens, plugin provenance, commands that reproduce it ------------

class ScaleStage:
    """A token stage with a parameter no seed-document flag sets."""

    @staticmethod
    @hookimpl
    def textpolicy_register_stages() -> Iterable[AdvantageStage]:
        return [AdvantageStage(name="scale", level="token", fn=_scale, params=_ScaleParams)]


@attrs.frozen
class _ScaleParams:
    factor: float = 1.0


def _scale(credit: TokenCredit, rollouts: Rollouts, ctx: StepContext,
           params: _ScaleParams) -> TokenCredit:
    return attrs.evolve(credit, advantages=credit.advantages * params.factor)


def test_redaction_keeps_max_tokens_and_hides_credentials() -> None:
    from textpolicy.training.run_record import REDACTED, redact

    data = {"max_tokens": 2048, "tokenizer": "gpt2", "max_new_tokens": 8,
            "nested": [{"api_key": "k", "hfToken": "t", "client_secret": "s"}],
            "auth": "a", "password": "p", "monkey": 1}
    assert redact(data) == {
        "max_tokens": 2048, "tokenizer": "gpt2", "max_new_tokens": 8,
        "nested": [{"api_key": REDACTED, "hfToken": REDACTED, "client_secret": REDACTED}],
        "auth": REDACTED, "password": REDACTED, "monkey": 1}


def test_config_json_records_max_tokens_and_the_plugins_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = build_registry(extra_plugins=[("scale-plugin", ScaleStage())],
                              load_entry_points=False)
    monkeypatch.setattr(plugins, "_REGISTRY", registry)
    log_dir = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "train", "--pipeline", "maxrl>gtpo>scale", "--stage-option", "scale.factor=0.5",
        "--max-steps", "1", "--eval-every", "0", "--max-tokens", "3", "--progress", "off",
        "--log-dir", str(log_dir)])
    assert result.exit_code == 0, result.output
    record = json.loads((log_dir / "config.json").read_text())
    assert record["config"]["max_tokens"] == 3
    assert record["config"]["pipeline_params"] == {"scale": {"factor": 0.5}}
    by_plugin = {p["plugin"]: p for p in record["plugins"]}
    assert by_plugin["scale-plugin"]["components"] == {"stages": ["scale"]}
    assert by_plugin["scale-plugin"]["source"] == "extra"
    builtins = by_plugin["textpolicy_builtins.advantages"]
    assert builtins["distribution"] == "textpolicy"
    assert builtins["components"] == {"stages": ["gtpo", "maxrl"]}
    assert by_plugin["textpolicy_builtins.task_arithmetic"]["components"] == {
        "tasks": ["arithmetic"]}
    assert by_plugin["textpolicy_builtins.engine_local"]["components"] == {
        "engines": ["local"]}


def test_run_commands_reproduce_every_setting_exactly(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import shlex

    from textpolicy.cli.train_cmd import build_settings, train
    from textpolicy.runner.manifest import train_command
    from textpolicy.training import make_config

    monkeypatch.setattr(plugins, "_REGISTRY", build_registry(
        extra_plugins=[("scale-plugin", ScaleStage())], load_entry_points=False))
    config = make_config(
        log_dir="runs/a", task="arithmetic", pipeline="maxrl>sepa>gtpo>hicra>scale",
        pipeline_params={
            "scale": {"factor": 0.1 + 0.2},            # 0.30000000000000004 exactly
            "gtpo": {"beta": 0.25, "signal": "entropy"},
            "sepa": {"ramp_steps": 7, "schedule": "auto", "auto_warmup": 3},
            "planning": {"detector": "strategic_grams", "grams": ["let me think", "it's"]}},
        lr=1.2345678901234e-3, max_tokens=3, seed=5, task_params={"max_operand": 7})
    argv = train_command(config)
    assert "not expressible" not in shlex.join(argv)
    ctx = train.make_context("train", shlex.split(shlex.join(argv))[2:])
    assert make_config(**build_settings(dict(ctx.params))) == config
    # and the pipeline it names loads with those parameters
    from textpolicy.pipeline import load_pipeline

    load_pipeline(config.pipeline, **dict(config.pipeline_params))


@pytest.mark.parametrize(("args", "needle"), [
    (["--stage-option", "gtpo.beta"], "--stage-option expects KEY=VALUE, got 'gtpo.beta'"),
    (["--stage-option", "beta=0.2"], "--stage-option expects STAGE.KEY=VALUE"),
    (["--pipeline", "maxrl>gtpo", "--gtpo-beta", "0.2", "--stage-option", "gtpo.beta=0.3"],
     "gtpo.beta is already set by another flag"),
    (["--stage-option", "clip.limit=2"], "parameters for 'clip', which is not one of its "
                                         "stages (grpo)"),
    (["--pipeline", "maxrl>gtpo", "--stage-option", "gtpo.betta=2"],
     "unknown parameter 'betta' (did you mean 'beta'?)"),
    (["--pipeline", "maxrl>gtpo>sepa"], "stage 'sepa' changes only the token signal"),
])
def test_bad_stage_options_are_one_line_and_write_nothing(tmp_path: Path, args: list[str],
                                                          needle: str) -> None:
    log_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--log-dir", str(log_dir), *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], lines
    assert not log_dir.exists()


def test_manifest_keeps_max_tokens_and_records_plugins(tmp_path: Path) -> None:
    spec = tmp_path / "c.toml"
    spec.write_text('kind = "campaign"\nseeds = [0]\nengine = "local"\ntask = "arithmetic"\n'
                    '[training]\nmax_steps = 1\nmax_tokens = 3\n[eval]\nevery = 0\n'
                    '[analysis]\nenabled = false\n', encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", str(spec), "--output", str(out), "--dry-run"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert "<redacted>" not in json.dumps(manifest)
    runs = [r for arm in manifest["arms"] for r in arm["runs"]]
    assert runs and all(r["config"]["max_tokens"] == 3 for r in runs)
    for r in runs:
        stages = {name for p in r["plugins"] for name in p["components"].get("stages", ())}
        assert stages and all(p["distribution"] == "textpolicy" for p in r["plugins"])


# ---- pipelines where a stage cannot act; names ------------------------------------------------

@pytest.mark.parametrize(("name", "hint"), [
    ("maxrl>gtpo>sepa", "; put it before 'gtpo': 'maxrl,sepa,gtpo'"),
    ("grpo,gtpo,sepa,hicra", "; put it before 'gtpo': 'grpo,sepa,gtpo,hicra'"),
    ("maxrl>sepa", ""),
])
def test_a_stage_that_cannot_act_is_rejected(name: str, hint: str) -> None:
    from textpolicy.errors import ConfigError
    from textpolicy.pipeline import load_pipeline

    with pytest.raises(ConfigError) as info:
        load_pipeline(name)
    shown = name.replace(">", ",")  # a composition is named in its comma form
    assert str(info.value) == (
        f"pipeline {shown!r}: stage 'sepa' changes only the token signal and no later stage "
        f"reads it, so it would do nothing{hint}")
    load_pipeline("maxrl>sepa>gtpo")  # the order in which SEPA acts


def test_stage_needs_and_writes_are_checked() -> None:
    with pytest.raises(ValueError, match=r"'planing_mask' is not one of .*did you mean "
                                          r"'planning_mask'"):
        AdvantageStage(name="x", level="token", fn=_scale, needs=("planing_mask",))
    with pytest.raises(ValueError, match="writes: 'signals' is not one of"):
        AdvantageStage(name="x", level="token", fn=_scale, writes=("signals",))


def test_single_stage_names_get_did_you_mean() -> None:
    from textpolicy.errors import UnknownComponentError
    from textpolicy.pipeline import load_pipeline

    with pytest.raises(UnknownComponentError, match=r"unknown pipeline 'hicr' \(did you mean "
                                                    r"'hicra'\?\).*advantage stages: grpo"):
        load_pipeline("hicr")


def test_spec_problems_are_each_reported_once(tmp_path: Path) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text(
        'kind = "campaign"\nengine = "local"\nseeds = [0]\n'
        '[task]\nname = "arithmetic"\nparams = {max_tokenz = 3, eos = "x"}\n'
        '[[arms]]\nname = "grpo"\npipeline = "grpo"\n'
        '[[arms]]\nname = "full"\npipeline = "full"\n'
        '[arms.params.gtpo]\nbetaa = 1\ngamma = 2\n'
        '[stage_params.sepa]\nramp_steps = -1\ndelay_steps = "x"\nrampsteps = 3\n',
        encoding="utf-8")
    result = CliRunner().invoke(main, ["run", str(spec), "--dry-run",
                                       "--output", str(tmp_path / "o")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"Error: invalid spec {spec} (7 problems):"
    where = [line.split(": ")[1] for line in lines[1:]]
    assert where == ["task.params.max_tokenz", "task.params.eos",
                     "stage_params.sepa.ramp_steps", "stage_params.sepa.delay_steps",
                     "stage_params.sepa.rampsteps", "arms[1].params.gtpo.betaa",
                     "arms[1].params.gtpo.gamma"]


# ---- a broken plugin outside `tp plugins`; tracing hooks --------------------------------------

def _install_on_path(root: Path, dist: str, module: str, source: str) -> None:
    """A real installed distribution (module + dist-info with a textpolicy entry point)."""
    (root / f"{module}.py").write_text(source, encoding="utf-8")
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n",
                                   encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[textpolicy]\n{module} = {module}\n",
                                           encoding="utf-8")


MISSPELT = '''
from textpolicy import hookimpl

@hookimpl
def textpolicy_register_stage():
    return []
'''


def test_misspelt_hook_is_reported_by_every_command(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _install_on_path(tmp_path, "tp-misspelt", "tp_misspelt", MISSPELT)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("TEXTPOLICY_DISABLE_PLUGINS", raising=False)
    result = CliRunner().invoke(main, ["pipelines"])
    assert result.exit_code == 0
    warning = result.stderr.strip().splitlines()[0]
    assert warning.startswith("textpolicy: warning: plugin tp_misspelt: PluginError: ")
    assert "did you mean 'textpolicy_register_stages'?" in warning
    plugins.reset_registry()
    spec = tmp_path / "s.toml"
    spec.write_text('kind = "campaign"\nengine = "local"\ntask = "arithmetic_v2"\n'
                    'seeds = [0]\n[[arms]]\nname = "a"\npipeline = "grpo"\n'
                    '[[arms]]\nname = "b"\npipeline = "maxrl+mine"\n', encoding="utf-8")
    bad = CliRunner().invoke(main, ["run", str(spec), "--dry-run", "--output",
                                    str(tmp_path / "o")])
    assert bad.exit_code == 2
    problems = bad.stderr.strip().splitlines()[-2:]
    assert problems[0].startswith(f"{spec}: task: 'arithmetic_v2': unknown task")
    assert problems[1].startswith(f"{spec}: arms[1].pipeline: 'maxrl+mine': unknown pipeline")
    for line in problems:
        assert "tp_misspelt: PluginError: plugin 'tp_misspelt': 'textpolicy_register_stage' "\
               "is not a textpolicy hook (did you mean 'textpolicy_register_stages'?)" in line
    plugins.reset_registry()
    listed = CliRunner().invoke(main, ["plugins"])
    assert listed.exit_code == 1
    assert listed.stderr.strip().splitlines()[-1] == (
        "Error: 1 plugin failed to load: tp_misspelt")


def test_trace_hooks_prints_every_hook_call(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TEXTPOLICY_TRACE_HOOKS", "1")
    build_registry(extra_plugins=[("scale-plugin", ScaleStage())], load_entry_points=False)
    err = capsys.readouterr().err.splitlines()
    assert ("[textpolicy] textpolicy_register_stages of 'scale-plugin' -> scale") in err
    assert ("[textpolicy] textpolicy_register_stages of 'textpolicy_builtins.advantages' -> "
            "grpo, maxrl, sepa, gtpo, hicra") in err
    assert len([e for e in err if e.startswith("[textpolicy] textpolicy_register_")]) >= 8


# ---- docs/plugins.md: every example runs as printed -------------------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def _docs_blocks(lang: str) -> list[str]:
    import re

    return re.findall(rf"```{lang}\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.S)


def test_docs_plugin_examples_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    blocks = _docs_blocks("python")
    assert len(blocks) == 9  # episode, token + pipeline, detector, scheduler, reward + task,
    #                          engine, executor, significance test, a test with check_stage
    kinds = set()
    for i, code in enumerate(blocks):
        module = types.ModuleType(f"docs_plugins_example_{i}")
        monkeypatch.setitem(sys.modules, module.__name__, module)
        exec(compile(code, f"docs/plugins.md example {i + 1}", "exec"), module.__dict__)
        registry = module.__dict__.get("registry")
        if registry is not None:
            kinds |= {k for p in registry.plugins if p.name.endswith("-plugin")
                      for k, _names in p.registers}
    # every plugin kind has an example
    assert kinds | {"stages"} == set(plugins.KINDS)


def test_docs_spec_arm_uses_the_plugin_pipeline(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    token_example = next(b for b in _docs_blocks("python") if "maxrl+clip" in b)
    module = types.ModuleType("docs_plugins_clip")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(token_example, "docs/plugins.md", "exec"), module.__dict__)
    monkeypatch.setattr(plugins, "_REGISTRY", module.registry)
    (arms,) = _docs_blocks("toml")
    spec = tmp_path / "s.toml"
    spec.write_text('kind = "campaign"\nengine = "local"\ntask = "arithmetic"\nseeds = [0]\n'
                    '[training]\nmax_steps = 1\n[analysis]\nenabled = false\n' + arms,
                    encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", str(spec), "--output", str(out), "--dry-run"])
    assert result.exit_code == 0, result.output
    commands = (out / "run_commands.sh").read_text(encoding="utf-8")
    assert "--pipeline maxrl+clip" in commands and "--stage-option clip.limit=2.0" in commands
