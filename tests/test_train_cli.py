"""`tp train`: flags, one-line errors, the documented example."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from textpolicy.cli import main

DOCS = Path(__file__).resolve().parents[1] / "docs" / "training.md"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, ["train", *args])


@pytest.mark.parametrize(("args", "needle"), [
    (["--lr", "0"], "'--lr': 0.0 is not in the range x>0"),
    (["--lr", "fast"], "'--lr': 'fast' is not a valid float"),
    (["--algorithm", "ppo"], "'--algorithm': 'ppo' is not one of 'grpo', 'full'"),
    (["--sepa-schedule", "cosine", "--algorithm", "full"],
     "'--sepa-schedule': 'cosine' is not one of 'linear', 'auto'"),
    (["--max-steps", "0"], "'--max-steps': 0 is not in the range x>=1"),
    (["--sepa-correct-rate-gate", "1.5", "--algorithm", "full"],
     "'--sepa-correct-rate-gate': 1.5 is not in the range 0.0<=x<=1.0"),
    (["--lrr", "1"], "No such option '--lrr'"),
    (["--gtpo-beta", "0.2"], "--gtpo-beta sets the 'gtpo' stage, which pipeline 'grpo' does "
                             "not have"),
    (["--algorithm", "grpo", "--hicra-alpha", "0.3"], "--hicra-alpha sets the 'hicra' stage"),
    (["--algorithm", "full", "--pipeline", "grpo"], "--algorithm and --pipeline are "
                                                    "alternatives"),
    (["--base-url", "http://127.0.0.1:1"], "--base-url applies to remote engines"),
    (["--engine-option", "device"], "--engine-option expects KEY=VALUE, got 'device'"),
    (["--engine-option", "colour=red"], "unknown option 'colour'"),
    (["--engine", "warp"], "unknown engine 'warp'"),
    (["--task", "chess"], "unknown task 'chess'"),
    (["--pipeline", "grpoo"], "did you mean 'grpo'"),
    (["--loss", "mse"], "'--loss': 'mse' is not one of"),
])
def test_bad_flags_give_one_line_errors_and_write_nothing(
        tmp_path: Path, args: list[str], needle: str) -> None:
    log_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--log-dir", str(log_dir), *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert needle in lines[0]
    assert "Traceback" not in result.output
    assert not log_dir.exists()


def test_missing_log_dir_is_one_line() -> None:
    result = CliRunner().invoke(main, ["train", "--max-steps", "2"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: Missing option '--log-dir'."


def test_help_lists_the_seed_flags() -> None:
    result = CliRunner().invoke(main, ["train", "--help"])
    assert result.exit_code == 0
    for flag in ("--algorithm", "--pipeline", "--lr", "--max-steps", "--batch-size",
                 "--group-size", "--lora-rank", "--max-tokens", "--temperature", "--log-dir",
                 "--model", "--base-url", "--gtpo-beta", "--hicra-alpha", "--sepa-steps",
                 "--sepa-schedule", "--sepa-delay-steps", "--sepa-correct-rate-gate",
                 "--save-every", "--engine", "--task", "--seed", "--eval-every",
                 "--eval-samples", "--eval-prompts", "--max-examples"):
        assert flag in result.output


def test_flags_reach_config_json(tmp_path: Path) -> None:
    log_dir = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "train", "--log-dir", str(log_dir), "--algorithm", "full", "--lr", "5e-4",
        "--max-steps", "2", "--batch-size", "2", "--group-size", "3", "--seed", "7",
        "--gtpo-beta", "0.3", "--hicra-alpha", "0.25", "--sepa-steps", "5",
        "--sepa-schedule", "auto", "--sepa-delay-steps", "1", "--sepa-correct-rate-gate", "0",
        "--save-every", "1", "--eval-every", "1", "--eval-samples", "2", "--eval-prompts", "3",
        "--max-examples", "10", "--lora-rank", "0", "--condition", "candidate",
        "--progress", "off"])
    assert result.exit_code == 0, result.output
    assert "finished: 2/2 steps" in result.stdout
    record = json.loads((log_dir / "config.json").read_text())
    cfg = record["config"]
    assert cfg["pipeline"] == "full" and cfg["lr"] == 5e-4 and cfg["seed"] == 7
    assert cfg["pipeline_params"] == {
        "gtpo": {"beta": 0.3}, "hicra": {"alpha": 0.25},
        "sepa": {"ramp_steps": 5, "schedule": "auto", "delay_steps": 1,
                 "correct_rate_gate": 0.0}}
    assert cfg["lora_rank"] is None and cfg["max_tokens"] == 4  # arithmetic defaults
    assert (cfg["eval_samples"], cfg["eval_prompts"], cfg["max_examples"]) == (2, 3, 10)
    stages = {s["name"]: s["params"] for s in record["pipeline"]["stages"]}
    assert stages["gtpo"]["beta"] == 0.3 and stages["hicra"]["alpha"] == 0.25
    metrics = [json.loads(line) for line in
               (log_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["condition"] for m in metrics] == ["candidate", "candidate"]
    evals = [json.loads(line) for line in (log_dir / "eval.jsonl").read_text().splitlines()]
    assert len(evals) == 3 * 3 * 2  # steps 0, 1, 2 x 3 prompts x 2 samples


def test_changed_flags_on_resume_name_the_keys(tmp_path: Path) -> None:
    log_dir = str(tmp_path / "run")
    first = invoke("--log-dir", log_dir, "--max-steps", "3", "--save-every", "1",
                   "--progress", "off")
    assert first.exit_code == 0
    again = invoke("--log-dir", log_dir, "--max-steps", "3", "--save-every", "1",
                   "--progress", "off")
    assert again.exit_code == 0
    assert "already complete" in again.stderr
    longer = invoke("--log-dir", log_dir, "--max-steps", "5", "--save-every", "1",
                    "--batch-size", "2", "--progress", "off")
    assert longer.exit_code == 2
    assert "batch_size: 4 -> 2" in longer.stderr


def _doc_commands() -> list[list[str]]:
    text = DOCS.read_text(encoding="utf-8")
    block = re.search(r"<!-- tested by [^>]*-->\s*```console\n(.*?)```", text, re.S)
    assert block, "docs/training.md lost its tested example"
    return [shlex.split(line[2:]) for line in block.group(1).splitlines()
            if line.startswith("$ ")]


def test_docs_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    commands = _doc_commands()
    assert len(commands) == 3 and all(c[:2] == ["tp", "train"] for c in commands)
    outputs = []
    for command in commands:
        result = CliRunner().invoke(main, command[1:])
        assert result.exit_code == 0, result.output
        outputs.append(result)
    assert "finished: 20/20 steps in results/arith_grpo; final eval pass@1" in outputs[0].stdout
    shown = re.search(r"It first prints what it will run.*?```text\n(.*?)```",
                      DOCS.read_text(encoding="utf-8"), re.S)
    assert shown, "docs/training.md lost the settings lines tp train prints first"
    assert outputs[0].stdout.splitlines()[:2] == shown.group(1).splitlines()
    assert "already complete" in outputs[1].stderr
    assert "finished: 20/20 steps in results/arith_full" in outputs[2].stdout
    grpo = [json.loads(line) for line in
            Path("results/arith_grpo/eval.jsonl").read_text().splitlines()]
    full = [json.loads(line) for line in
            Path("results/arith_full/eval.jsonl").read_text().splitlines()]
    assert [r for r in grpo if r["step"] == 0] == [r for r in full if r["step"] == 0]
