"""Dry runs of every example spec: plan files, manifest contents, commands that reproduce the
planned configs through `tp train`'s own parser, no secrets."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import attrs
import click
import pytest
from click.testing import CliRunner

from textpolicy.cli import main
from textpolicy.runner.manifest import STAGE_FLAGS
from textpolicy.runner.plan import campaign_plan, sweep_plan
from textpolicy.runner.spec import Spec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SPECS = sorted(EXAMPLES.glob("*.toml"))


def test_every_example_is_there() -> None:
    assert {p.name for p in SPECS} >= {"quickstart.toml", "tinker_math.toml", "ablation.toml"}


def _parse_train(argv: list[str]) -> dict[str, object]:
    """The TrainConfig `tp train` builds from ``argv`` (its own parser and builder)."""
    from textpolicy.cli import train_cmd
    from textpolicy.training import make_config

    assert argv[:2] == ["tp", "train"]
    # parent context as `tp` makes it (click caches a command's help option per command)
    root = click.Context(main, info_name="tp", help_option_names=["-h", "--help"])
    ctx = train_cmd.train.make_context("train", argv[2:], parent=root)
    settings = train_cmd.build_settings(dict(ctx.params))
    return make_config(**settings).to_dict()


def _wants_missing_cuda(path: Path) -> bool:
    import torch

    device = str(Spec.from_toml(path).engine.options.get("device", ""))
    return device.startswith("cuda") and not torch.cuda.is_available()


def test_the_smollm_cuda_spec_is_the_cpu_spec_on_cuda() -> None:
    """smollm_math_cuda.toml is smollm_math.toml with device = "cuda" and its own output."""
    cpu, cuda = Spec.from_toml(EXAMPLES / "smollm_math.toml"), Spec.from_toml(
        EXAMPLES / "smollm_math_cuda.toml")
    assert cuda.engine.options == {"device": "cuda"} and not cpu.engine.options
    differ = {"name", "output", "engine"}
    assert {k: v for k, v in attrs.asdict(cpu).items() if k not in differ} == {
        k: v for k, v in attrs.asdict(cuda).items() if k not in differ}
    assert cuda.output != cpu.output


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_dry_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINKER_API_KEY", "tml-secret-value-123")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", str(path), "--dry-run", "--output", str(out)])
    if _wants_missing_cuda(path):  # a GPU spec on a CPU-only machine: one line, nothing written
        assert result.exit_code == 2, result.output
        assert result.output.strip().splitlines() == [
            "Error: engine option device='cuda': CUDA is not available here"]
        assert not out.exists()
        return
    assert result.exit_code == 0, result.output + result.stderr
    spec = Spec.from_toml(path)
    root = out / "sweep" if spec.kind == "experiment" else out
    manifest = json.loads((root / "manifest.json").read_text())
    script = (root / "run_commands.sh").read_text()
    everything = "".join(p.read_text() for p in out.rglob("*") if p.is_file())
    assert "tml-secret-value-123" not in everything
    assert script.startswith("#!/usr/bin/env bash\n")
    assert (root / "run_commands.sh").stat().st_mode & 0o111
    assert manifest["versions"]["textpolicy"] and "torch" in manifest["versions"]
    assert "tinker" in manifest["versions"]
    assert "task" in manifest and manifest["task"]["name"] == spec.task.name
    # no training happened
    assert not list(out.rglob("metrics.jsonl"))

    plan = sweep_plan(spec, root) if spec.kind != "campaign" else campaign_plan(spec, root)
    commands = [ln for ln in script.splitlines() if ln.startswith("tp train")]
    assert len(commands) == len(plan.runs) == len(manifest["commands"])
    for run, line in zip(plan.runs, commands, strict=True):
        parsed = _parse_train(shlex.split(line))
        expected = run.config.to_dict()
        assert parsed.pop("log_dir") == run.key
        expected.pop("log_dir")
        assert parsed == expected  # the command reproduces the planned run exactly
    if spec.kind == "campaign":
        assert manifest["kind"] == "campaign"


def test_campaign_manifest_contract(tmp_path: Path) -> None:
    root = tmp_path / "ab"
    result = CliRunner().invoke(main, [
        "campaign", "--engine", "local", "--task", "arithmetic", "--campaign-root", str(root),
        "--seeds", "0-2", "--lr", "4e-5", "--baseline-lr", "5e-4", "--max-steps", "5",
        "--gtpo-beta", "0.3"])
    assert result.exit_code == 0, result.stderr
    assert "add --execute" in result.output
    m = json.loads((root / "manifest.json").read_text())
    assert m["kind"] == "campaign" and m["baseline"] == "baseline"
    assert m["alpha"] == 0.05 and m["resamples"] == 20000 and m["analysis_seed"] == 0
    arms = {a["name"]: a for a in m["arms"]}
    assert arms["baseline"]["role"] == "baseline" and arms["candidate"]["role"] == "candidate"
    assert arms["baseline"]["lr"] == 5e-4 and arms["candidate"]["lr"] == 4e-5  # precedence
    assert [r["log_dir"] for r in arms["candidate"]["runs"]] == [
        "candidate/seed0", "candidate/seed1", "candidate/seed2"]
    assert [r["seed"] for r in arms["baseline"]["runs"]] == [0, 1, 2]
    cand = arms["candidate"]["runs"][0]["config"]
    assert cand["pipeline_params"]["gtpo"] == {"beta": 0.3}
    assert "gtpo" not in arms["baseline"]["runs"][0]["config"]["pipeline_params"]
    assert len(m["commands"]) == 6
    assert m["status"] == "planned"


def test_stage_flags_match_tp_train() -> None:
    from textpolicy.cli import train_cmd

    assert {v: "--" + k.replace("_", "-") for k, v in train_cmd.STAGE_FLAGS.items()} == \
        STAGE_FLAGS


def test_stage_flag_defaults_are_the_seed_documents() -> None:
    """`tp campaign --help` shows the seed's defaults; they must be the stages' defaults."""
    from textpolicy.plugins import get_registry

    stages = get_registry().stages
    expected = {("gtpo", "beta"): 0.1, ("hicra", "alpha"): 0.2, ("sepa", "ramp_steps"): 100,
                ("sepa", "schedule"): "linear", ("sepa", "delay_steps"): 10,
                ("sepa", "correct_rate_gate"): 0.1}
    for (stage, key), value in expected.items():
        assert getattr(stages.get(stage).params(), key) == value
