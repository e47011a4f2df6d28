"""Every training command says first what it will run (engine, task, model, sizes), and a
composition written with commas survives a shell (`tp train --pipeline maxrl,gtpo,hicra`)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from textpolicy.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--batch-size", "1", "--group-size", "2", "--eval-every", "0"]


def _first_lines(output: str, n: int) -> list[str]:
    return output.splitlines()[:n]


def test_train_prints_engine_task_model_and_sizes_first(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["train", "--log-dir", str(tmp_path / "run"),
                                       "--max-steps", "1", *TINY, "--progress", "off"])
    assert result.exit_code == 0, result.output
    assert _first_lines(result.stdout, 2) == [
        "Settings: engine local, task arithmetic, model textpolicy/tiny-arithmetic (the "
        "task's default); pipeline grpo, lr 0.001, seed 0",
        "Sizes: 1 step × 1 prompt × 2 completions, up to 4 tokens each at temperature 1; "
        "full fine-tune (no LoRA); no held-out eval"]


def test_campaign_defaults_to_tinker_and_math_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a dry run; nothing to fetch
    result = CliRunner().invoke(main, ["campaign", "--campaign-root", str(tmp_path / "c"),
                                       "--base-url", "https://user:pw@tinker.example:8443/x",
                                       "--trust-host", "tinker.example"])
    assert result.exit_code == 0, result.output
    lines = _first_lines(result.stdout, 3)
    assert lines[0].startswith("Campaign: 2 arms × 1 seed = 2 runs (200 steps)")
    assert lines[1] == ("Settings: engine tinker at https://tinker.example:8443/x, task math, "
                        "model Qwen/Qwen3-4B-Instruct-2507 (the task's default)")
    assert lines[2] == ("Sizes: 100 steps × 4 prompts × 8 completions, up to 2048 tokens each "
                        "at temperature 0.7; LoRA rank 64; no held-out eval")
    assert "pw" not in result.output  # credentials in a URL are never printed


def test_sweep_prints_its_sizes_and_sweeps_a_comma_composition(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    result = CliRunner().invoke(main, [
        "sweep", "--engine", "local", "--task", "arithmetic", "--sweep-root", str(root),
        "--algorithms", "grpo,maxrl,gtpo", "--lr-values", "1e-3", "--probe-steps", "1",
        *TINY, "--progress", "off"])
    assert result.exit_code == 0, result.output
    assert _first_lines(result.stdout, 3) == [
        f"LR sweep: 2 probes (2 steps) in {root}",
        "Settings: engine local, task arithmetic, model textpolicy/tiny-arithmetic (the "
        "task's default)",
        "Sizes: 1 step × 1 prompt × 2 completions, up to 4 tokens each at temperature 1; "
        "full fine-tune (no LoRA); no held-out eval"]
    assert "NOT comparable across pipelines" in result.stdout  # the table's legend
    results = json.loads((root / "sweep_results.json").read_text(encoding="utf-8"))
    assert [r["pipeline"] for r in results["results"]] == ["grpo", "maxrl,gtpo"]
    stored = json.loads((root / "maxrl_gtpo_lr1e-03" / "config.json").read_text(
        encoding="utf-8"))
    assert [s["name"] for s in stored["pipeline"]["stages"]] == ["maxrl", "gtpo"]


def test_run_dry_run_prints_the_quickstart_settings(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", str(ROOT / "examples" / "quickstart.toml"),
                                       "--dry-run", "--output", str(tmp_path / "q")])
    assert result.exit_code == 0, result.output
    assert _first_lines(result.stdout, 3)[1:] == [
        "Settings: engine local, task arithmetic, model textpolicy/tiny-arithmetic (the "
        "task's default)",
        "Sizes: 20 steps × 4 prompts × 8 completions, up to 4 tokens each at temperature 1; "
        "full fine-tune (no LoRA); held-out eval every 10 steps"]
    shown = (ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8").splitlines()
    assert all(line in shown for line in _first_lines(result.stdout, 3)[1:])  # as documented


def test_unquoted_comma_composition_survives_a_real_shell(tmp_path: Path) -> None:
    """`--pipeline maxrl>gtpo>hicra` unquoted is a redirect; the comma form is one word."""
    log_dir = tmp_path / "run"
    tp = shlex.join([sys.executable, "-c", "from textpolicy.cli import main; main()"])
    command = (f"{tp} train --log-dir {shlex.quote(str(log_dir))} --max-steps 1 "
               f"--batch-size 1 --group-size 2 --eval-every 0 --progress off "
               f"--pipeline maxrl,gtpo,hicra --gtpo-beta 0.3")
    done = subprocess.run(["sh", "-c", command], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pipeline maxrl,gtpo,hicra" in done.stdout.splitlines()[0]
    record = json.loads((log_dir / "config.json").read_text(encoding="utf-8"))
    assert [s["name"] for s in record["pipeline"]["stages"]] == ["maxrl", "gtpo", "hicra"]
    assert record["pipeline"]["name"] == "maxrl,gtpo,hicra"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no stray redirect file


def test_spec_arm_with_a_comma_composition_plans_shell_safe_commands(tmp_path: Path) -> None:
    spec = tmp_path / "c.toml"
    spec.write_text('kind = "campaign"\nengine = "local"\ntask = "arithmetic"\nseeds = [0]\n'
                    '[[arms]]\npipeline = "grpo"\n'
                    '[[arms]]\npipeline = "maxrl,gtpo,hicra"\nparams = {gtpo = {beta = 0.3}}\n'
                    '[[arms]]\npipeline = "maxrl>gtpo"\n', encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", str(spec), "--dry-run", "--output", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert "maxrl_gtpo_hicra" in json.dumps(manifest)
    commands = (out / "run_commands.sh").read_text(encoding="utf-8")
    assert "--pipeline maxrl,gtpo,hicra " in commands  # one shell word, no quoting needed
    assert "--pipeline 'maxrl>gtpo' " in commands      # '>' still works, quoted


@pytest.mark.parametrize("command", ["train", "sweep", "campaign"])
def test_base_url_flag_and_engine_option_that_disagree_are_refused(
        tmp_path: Path, command: str) -> None:
    """`--base-url A --engine-option base_url=B` sent every run to A without a word."""
    out = tmp_path / "out"
    where = {"train": ["--log-dir"], "sweep": ["--sweep-root"],
             "campaign": ["--campaign-root"]}[command]
    result = CliRunner().invoke(main, [
        command, "--engine", "tinker", "--task", "arithmetic", *where, str(out),
        "--base-url", "http://127.0.0.1:9",
        "--engine-option", "base_url=http://user:pw@127.0.0.1:8"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "--base-url" in lines[0] and "disagree" in lines[0], lines
    assert "127.0.0.1:8" in lines[0] and "pw" not in result.output
    assert not out.exists()


def test_campaign_takes_the_same_base_url_twice_and_plans_it_once(tmp_path: Path) -> None:
    root = tmp_path / "c"
    result = CliRunner().invoke(main, [
        "campaign", "--engine", "tinker", "--task", "arithmetic", "--campaign-root", str(root),
        "--base-url", "http://127.0.0.1:9", "--engine-option", "base_url=http://127.0.0.1:9",
        "--engine-option", "max_concurrent=2"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    run = manifest["arms"][0]["runs"][0]
    assert run["config"]["engine_options"] == {"base_url": "http://127.0.0.1:9",
                                               "max_concurrent": 2}
    argv = shlex.split(run["command"])
    assert argv.count("--base-url") == 1 and "max_concurrent=2" in argv


def test_an_unknown_engine_option_is_named_alone(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [
        "train", "--engine", "tinker", "--task", "arithmetic", "--log-dir", str(tmp_path / "r"),
        "--base-url", "http://127.0.0.1:9", "--engine-option", "nosuch=1"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "the options ['nosuch']; allowed: base_url," in lines[0], lines


def test_the_campaign_a_sweep_recommends_keeps_its_engine_options(tmp_path: Path) -> None:
    """`tp sweep --engine-option K=V` probes with K=V; the `tp campaign` command it recommends
    dropped every engine option but the URL and trusted host (a campaign without the sweep's
    max_concurrent, sample_seeds, ...)."""
    root = tmp_path / "sweep"
    result = CliRunner().invoke(main, [
        "sweep", "--engine", "local", "--task", "arithmetic", "--sweep-root", str(root),
        "--algorithms", "grpo,full", "--lr-values", "1e-3", "--probe-steps", "1", *TINY,
        "--engine-option", "max_decode_batch=3", "--progress", "off"])
    assert result.exit_code == 0, result.output
    results = json.loads((root / "sweep_results.json").read_text(encoding="utf-8"))
    argv = shlex.split(results["recommended_command"])
    assert argv[:2] == ["tp", "campaign"]
    assert "--engine-option" in argv and argv[argv.index("--engine-option") + 1] == (
        "max_decode_batch=3")
    planned = CliRunner().invoke(main, [*argv[1:], "--campaign-root", str(tmp_path / "c")])
    assert planned.exit_code == 0, planned.output
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["arms"][0]["runs"][0]["config"]["engine_options"] == {
        "max_decode_batch": 3}
