"""Spec files: parsing, defaults, and every category of bad spec (all problems reported, one
line each, exit code 2, nothing written)."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner

from textpolicy.cli import main
from textpolicy.runner.plan import campaign_plan, format_lr, sweep_plan
from textpolicy.runner.spec import DEFAULT_LR_VALUES, Spec, SpecError, load_spec
from textpolicy.runner.toml_out import dumps

GOOD = """
kind = "experiment"
name = "t"
engine = "local"
task = "arithmetic"
seeds = [0, 1]

[training]
max_steps = 7
batch_size = 2

[eval]
every = 5

[[arms]]
name = "base"
pipeline = "grpo"

[[arms]]
pipeline = "full"
params = { gtpo = { beta = 0.2 } }

[stage_params.sepa]
ramp_steps = 50

[sweep]
lr_values = [1e-4, 2.5e-4]
probe_steps = 3
"""


def write(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        Spec.from_toml(path)
    lines = list(info.value.problems)
    assert all(line.startswith(f"{path}: ") and "\n" not in line for line in lines)
    return [line[len(str(path)) + 2:] for line in lines]


def test_good_spec_parses_and_resolves(tmp_path: Path) -> None:
    spec = Spec.from_toml(write(tmp_path, GOOD))
    assert spec.kind == "experiment"
    assert [a.label for a in spec.arms] == ["base", "full"]
    assert spec.training.max_steps == 7
    assert spec.sweep.lr_values == (1e-4, 2.5e-4)
    assert isinstance(spec.seeds, tuple)


def test_defaults_follow_the_seed_document() -> None:
    spec = load_spec({"kind": "campaign"})
    assert [(a.label, a.pipeline) for a in spec.arms] == [("baseline", "grpo"),
                                                          ("candidate", "full")]
    assert spec.sweep.lr_values == DEFAULT_LR_VALUES == (5e-5, 2e-4, 5e-4, 1e-3)
    assert spec.sweep.probe_steps == 20
    assert spec.analysis.alpha == 0.05 and spec.analysis.resamples == 20000
    assert spec.baseline_arm.label == "baseline"


def test_plans_pair_seeds_and_merge_stage_params(tmp_path: Path) -> None:
    spec = Spec.from_toml(write(tmp_path, GOOD))
    plan = campaign_plan(spec, tmp_path / "c", tuned={"full": 2.5e-4})
    assert [r.key for r in plan.runs] == ["base/seed0", "full/seed0", "base/seed1",
                                          "full/seed1"]
    by_key = {r.key: r.config for r in plan.runs}
    assert by_key["base/seed1"].seed == by_key["full/seed1"].seed == 1
    assert by_key["full/seed0"].lr == 2.5e-4
    assert by_key["base/seed0"].lr == 1e-3  # arithmetic's task default
    # stage_params reach only arms whose pipeline has the stage; arm params on top
    assert by_key["full/seed0"].pipeline_params == {"sepa": {"ramp_steps": 50},
                                                    "gtpo": {"beta": 0.2}}
    assert by_key["base/seed0"].pipeline_params == {}
    assert by_key["full/seed0"].condition == "full"
    assert by_key["base/seed0"].batch_size == 2
    assert by_key["base/seed0"].eval_every == 5
    sweep = sweep_plan(spec, tmp_path / "s")
    assert [r.key for r in sweep.runs] == ["base_lr1e-04", "base_lr2.5e-04", "full_lr1e-04",
                                           "full_lr2.5e-04"]
    assert all(r.config.max_steps == 3 for r in sweep.runs)
    multi = sweep_plan(attrs.evolve(spec, sweep=attrs.evolve(spec.sweep, seeds=(0, 1))),
                       tmp_path / "s2")
    assert [r.key for r in multi.runs][:2] == ["base_lr1e-04/seed0", "base_lr1e-04/seed1"]


def test_single_seed_sweep_uses_the_seed_layout(tmp_path: Path) -> None:
    spec = load_spec({"kind": "sweep", "arms": [{"pipeline": "grpo"}, {"pipeline": "full"}],
                      "engine": "local", "task": "arithmetic"})
    keys = [r.key for r in sweep_plan(spec, tmp_path).runs]
    assert keys[:2] == ["grpo_lr5e-05", "grpo_lr2e-04"]
    assert keys[-1] == "full_lr1e-03"


def test_format_lr_reads_back() -> None:
    assert [format_lr(v) for v in (5e-5, 2e-4, 1e-3, 2.5e-4)] == [
        "5e-05", "2e-04", "1e-03", "2.5e-04"]


def test_lr_precedence_arm_over_tuned_over_training(tmp_path: Path) -> None:
    spec = load_spec({"kind": "campaign", "engine": "local", "task": "arithmetic",
                      "training": {"lr": 4e-5},
                      "arms": [{"name": "a", "pipeline": "grpo", "lr": 5e-4},
                               {"name": "b", "pipeline": "full"},
                               {"name": "c", "pipeline": "maxrl"}]})
    plan = campaign_plan(spec, tmp_path, tuned={"a": 1.0, "b": 5e-5})
    lrs = {r.arm: r.lr for r in plan.runs}
    assert lrs == {"a": 5e-4, "b": 5e-5, "c": 4e-5}


# --------------------------------------------------------------------------- bad specs
def test_unknown_keys_with_did_you_mean(tmp_path: Path) -> None:
    lines = problems(tmp_path, "trainig = 1\n" + GOOD.replace("probe_steps = 3", "probe_step = 3")
                     .replace("batch_size = 2", "bacth_size = 2"))
    assert "sweep.probe_step: unknown key (did you mean 'probe_steps'?); allowed: " \
           "lr_values, probe_steps, seeds, share_seeds, split, select, plot" in lines
    assert any(ln.startswith("training.bacth_size: unknown key (did you mean 'batch_size'?)")
               for ln in lines)
    assert any(ln.startswith("trainig: unknown key (did you mean 'training'?)")
               for ln in lines)
    assert len(lines) == 3


def test_an_engine_option_in_the_engine_table_points_to_its_options(tmp_path: Path) -> None:
    lines = problems(tmp_path, GOOD.replace('engine = "local"\n', "") + "\n[engine]\n"
                     'name = "local"\nmax_decode_batch = 4\n')
    assert lines == ["engine.max_decode_batch: unknown key; allowed: name, options (an option "
                     "of the engine goes under [engine.options])"]


def test_wrong_types_and_out_of_range_all_reported(tmp_path: Path) -> None:
    text = GOOD.replace("max_steps = 7", "max_steps = \"seven\"").replace(
        "batch_size = 2", "batch_size = -2").replace("seeds = [0, 1]", "seeds = [0, 0]").replace(
        "every = 5", "every = 2.5").replace("kind = \"experiment\"", "kind = \"experimnt\"")
    lines = problems(tmp_path, text + "\n[analysis]\nalpha = 1.5\n")
    assert "training.max_steps: 'seven': expected an integer" in lines
    assert "training.batch_size: -2: must be > 0" in lines
    assert "seeds: [0, 0]: values must be unique" in lines
    assert "eval.every: 2.5: expected an integer" in lines
    assert "analysis.alpha: 1.5: must be strictly between 0 and 1" in lines
    assert ("kind: 'experimnt': not allowed (did you mean 'experiment'?); allowed: sweep, "
            "campaign, experiment, pool") in lines


def test_unknown_plugin_names(tmp_path: Path) -> None:
    text = (GOOD.replace('pipeline = "full"', 'pipeline = "ful"')
            .replace('engine = "local"', 'engine = "locl"')
            .replace('task = "arithmetic"', 'task = "arithmetik"'))
    lines = problems(tmp_path, text)
    assert any(ln.startswith("engine: 'locl': unknown engine (did you mean 'local'?)")
               for ln in lines)
    assert any(ln.startswith("task: 'arithmetik': unknown task (did you mean 'arithmetic'?)")
               for ln in lines)
    assert any(ln.startswith("arms[1].pipeline: 'ful': unknown pipeline") and "full" in ln
               for ln in lines)


def test_plugin_parameters_checked_against_their_classes(tmp_path: Path) -> None:
    text = GOOD.replace("ramp_steps = 50", "ramp_step = 50").replace(
        "gtpo = { beta = 0.2 }", "gtpo = { beta = -1.0 }, hicra = { alfa = 1.0 }")
    text += "\n[stage_params.gtpoo]\nbeta = 0.1\n[task.params]\nnope = 1\n"
    text = text.replace('task = "arithmetic"\n', "")
    lines = problems(tmp_path, text)
    joined = "\n".join(lines)
    assert "stage_params.sepa.ramp_step: unknown key (did you mean 'ramp_steps'?)" in joined
    assert "stage_params.gtpoo: unknown stage (did you mean 'gtpo'?)" in joined
    assert "arms[1].params.gtpo" in joined and "beta" in joined
    assert "arms[1].params.hicra.alfa: unknown key (did you mean 'alpha'?)" in joined
    assert "task.params.nope: unknown key" in joined


def test_stage_not_in_the_arms_pipeline(tmp_path: Path) -> None:
    text = GOOD.replace('name = "base"\npipeline = "grpo"',
                        'name = "base"\npipeline = "grpo"\nparams = { hicra = { alpha = 0.1 } }')
    lines = problems(tmp_path, text)
    assert any(ln.startswith("arms[0].params.hicra: 'hicra' is not a stage of pipeline 'grpo'")
               for ln in lines)


def test_structural_rules(tmp_path: Path) -> None:
    lines = problems(tmp_path, """
kind = "campaign"
baseline = "nobody"
[[arms]]
name = "x"
pipeline = "grpo"
[[arms]]
name = "x"
pipeline = "full"
[sweep]
probe_steps = 3
[engine]
name = "local"
[engine.options]
api_key = "sk-123"
""")
    assert any(ln.startswith("arms[1].name: 'x': duplicate arm name 'x'") for ln in lines)
    assert any(ln.startswith("baseline: 'nobody': no arm has this name") for ln in lines)
    assert any(ln.startswith("sweep: not used by kind 'campaign'") for ln in lines)
    assert any(ln.startswith("engine.options.api_key: secrets do not belong in specs or flags")
               for ln in lines)
    assert not any("sk-123" in ln for ln in lines)  # the secret is never echoed


def test_missing_required_and_missing_files(tmp_path: Path) -> None:
    lines = problems(tmp_path, '[[arms]]\nname = "a"\n')
    assert any(ln.startswith("kind: required key is missing") for ln in lines)
    assert "arms[0].pipeline: required key is missing" in lines
    lines = problems(tmp_path, GOOD.replace('engine = "local"',
                                            'engine = "local"\nmodel = "./no/such/ckpt"'))
    assert any(ln.startswith("model: './no/such/ckpt': file or directory not found")
               for ln in lines)
    with pytest.raises(SpecError, match="file not found"):
        Spec.from_toml(tmp_path / "absent.toml")


def test_invalid_toml(tmp_path: Path) -> None:
    lines = problems(tmp_path, "kind = \n")
    assert lines[0].startswith("not valid TOML")


@pytest.mark.parametrize("text", [
    GOOD.replace("max_steps = 7", "max_steps = 0"),
    GOOD.replace('pipeline = "full"', 'pipeline = "nope"'),
    GOOD + "\nunknown = 3\n",
])
def test_cli_exit_2_one_line_per_problem_nothing_written(tmp_path: Path, text: str) -> None:
    out = tmp_path / "out"
    path = write(tmp_path, text.replace('name = "t"', f'name = "t"\noutput = "{out}"'))
    for args in (["run", str(path)], ["run", str(path), "--dry-run"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        assert result.stderr.startswith("Error: invalid spec")
        assert all(ln.startswith(str(path)) for ln in result.stderr.splitlines()[1:])
    assert not out.exists()


def test_cli_flags_go_through_the_same_validation(tmp_path: Path) -> None:
    root = tmp_path / "c"
    result = CliRunner().invoke(main, [
        "campaign", "--engine", "local", "--task", "arithmetic", "--campaign-root", str(root),
        "--candidate", "ful"])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: --candidate: 'ful': unknown pipeline 'ful' (did "
                                    "you mean 'full'?)"), result.stderr
    assert not root.exists()


def test_written_toml_reads_back_as_the_same_spec(tmp_path: Path) -> None:
    spec = Spec.from_toml(write(tmp_path, GOOD))
    again = Spec.from_toml(write(tmp_path, dumps(spec.to_dict()), "again.toml"))
    assert again == spec
