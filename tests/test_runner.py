"""The runner end to end on the real local engine: the quickstart at reduced size (sweep →
campaign → analysis, parallel worker processes, W&B offline logging), Ctrl-C and resume."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from textpolicy.runner.results import iter_jsonl
from textpolicy.runner.sweep import ProbeRow, format_table
from textpolicy.runner.toml_out import dumps

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def reduced_quickstart(out: Path) -> dict[str, Any]:
    raw = tomllib.loads((EXAMPLES / "quickstart.toml").read_text())
    raw["output"] = str(out)
    raw["seeds"] = [0, 1]
    raw["training"].update(max_steps=4)
    raw["eval"] = {"every": 2, "samples": 2, "prompts": 6}
    raw["sweep"].update(lr_values=[1e-3, 3e-3], probe_steps=3, seeds=[1000])
    raw["analysis"] = {"resamples": 2000}
    return raw


TP = [sys.executable, "-c", "from textpolicy.cli import main; main()"]


def _tp(args: list[str], env: dict[str, str], cwd: Path, **kw: Any) -> Any:
    return subprocess.run([*TP, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=600, **kw)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    wandb_dir = tmp_path / "wandb_out"
    wandb_dir.mkdir()
    return {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(wandb_dir),
            "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}


def test_quickstart_reduced_end_to_end(tmp_path: Path, env: dict[str, str]) -> None:
    out = tmp_path / "qs"
    raw = reduced_quickstart(out)
    raw["wandb"] = {"project": "tp-test", "mode": "offline"}
    spec_path = tmp_path / "quick.toml"
    spec_path.write_text(dumps(raw))
    result = _tp(["run", str(spec_path), "--progress", "plain"], env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    stdout = result.stdout
    assert "LEARNING RATE SWEEP RESULTS" in stdout
    assert " Algorithm         LR  Steps  Datums  Correct%  Running%   MeanLoss    Eval%" \
           "   Status" in stdout
    assert "chosen by validation accuracy at step 3" in stdout
    assert "tp run " in stdout and "campaign.toml" in stdout
    # sweep files
    sweep = out / "sweep"
    results = json.loads((sweep / "sweep_results.json").read_text())
    assert set(results["best_lr"]) == {"grpo", "full"}
    assert results["selection_metric"] == "eval_accuracy"
    assert {p.name for p in sweep.iterdir()} >= {
        "grpo_lr1e-03", "grpo_lr3e-03", "full_lr1e-03", "full_lr3e-03", "sweep_plot.png",
        "campaign.toml", "manifest.json", "run_commands.sh", "sweep_results.json"}
    assert (sweep / "sweep_plot.png").read_bytes()[:4] == b"\x89PNG"
    # campaign at the tuned LRs; every run complete, each step exactly once
    campaign = out / "campaign"
    manifest = json.loads((campaign / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    for arm in manifest["arms"]:
        assert arm["lr"] == results["best_lr"][arm["name"]]
        assert arm["lr_source"] == "sweep"
        for run in arm["runs"]:
            steps = [r["step"] for r in iter_jsonl(campaign / run["log_dir"] / "metrics.jsonl")]
            assert steps == [0, 1, 2, 3]
            assert run["status"] == "finished"
    # paired seeds: same seed → the same eval prompts in both arms
    prompts = {arm: {r["prompt_id"] for r in iter_jsonl(campaign / arm / "seed1" / "eval.jsonl")}
               for arm in ("grpo", "full")}
    assert prompts["grpo"] == prompts["full"] and len(prompts["grpo"]) == 6
    assert (campaign / "analysis").is_dir() and any((campaign / "analysis").iterdir())
    experiment = json.loads((out / "experiment.json").read_text())
    assert experiment["best_lr"] == results["best_lr"]
    # W&B: every run of the sweep and the campaign logged, each step once
    from test_follow import settled_history

    rows = settled_history(Path(env["WANDB_DIR"]), 2 * 3 * 2 + 2 * 2 * 4)
    per_run: dict[str, list[int]] = {}
    for row in rows:
        per_run.setdefault(row["_run_id"], []).append(row["_step"])
    assert len(per_run) == 4 + 4
    assert sorted(sorted(v) for v in per_run.values()) == sorted(
        [[0, 1, 2]] * 4 + [[0, 1, 2, 3]] * 4)
    # the printed campaign command is valid and plans the tuned LRs (dry run)
    from click.testing import CliRunner

    from textpolicy.cli import main

    line = next(ln.strip() for ln in stdout.splitlines() if ln.strip().startswith("tp campaign"))
    argv = [a for a in shlex.split(line)[1:] if a != "--execute"]
    dry = CliRunner().invoke(main, [*argv, "--campaign-root", str(tmp_path / "rec")])
    assert dry.exit_code == 0, dry.output + dry.stderr
    rec = json.loads((tmp_path / "rec" / "manifest.json").read_text())
    assert {a["pipeline"]: a["lr"] for a in rec["arms"]} == results["best_lr"]
    assert rec["seeds"] == [0, 1]
    # the written campaign spec is ready to run: it validates and plans the same LRs
    from textpolicy.runner.spec import Spec

    again = Spec.from_toml(sweep / "campaign.toml")
    assert {a.label: a.lr for a in again.arms} == results["best_lr"]


def test_ctrl_c_stops_cleanly_and_rerun_resumes(tmp_path: Path, env: dict[str, str]) -> None:
    out = tmp_path / "camp"
    args = ["campaign", "--engine", "local", "--task", "arithmetic", "--campaign-root",
            str(out), "--seeds", "0-1", "--max-steps", "12", "--save-every", "3",
            "--eval-every", "0", "--execute", "--progress", "plain"]
    proc = subprocess.Popen([*TP, *args], env=env,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    first = out / "baseline" / "seed0" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(iter_jsonl(first))) < 4:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stdout + stderr
    assert "Stopped" in stdout
    done_before = [r["step"] for r in iter_jsonl(first)]
    assert 4 <= len(done_before) < 12
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "incomplete"

    result = _tp(args, env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    for arm in ("baseline", "candidate"):
        for seed in (0, 1):
            steps = [r["step"] for r in iter_jsonl(out / arm / f"seed{seed}" / "metrics.jsonl")]
            assert steps == list(range(12)), (arm, seed, steps)
    # a third run skips everything
    result = _tp(args, env, tmp_path)
    assert result.returncode == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert {r["status"] for a in manifest["arms"] for r in a["runs"]} == {"skipped"}


@pytest.mark.parametrize("workers", ["process", "thread"])
def test_parallel_runs(tmp_path: Path, env: dict[str, str], workers: str) -> None:
    out = tmp_path / "par"
    result = _tp(["campaign", "--engine", "local", "--task", "arithmetic", "--campaign-root",
                  str(out), "--seeds", "0-1", "--max-steps", "3", "--eval-every", "0",
                  "--execute", "--parallel", "2", "--workers", workers, "--progress", "plain"],
                 env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert {r["status"] for a in manifest["arms"] for r in a["runs"]} == {"finished"}
    for arm in ("baseline", "candidate"):
        for seed in (0, 1):
            steps = [r["step"] for r in iter_jsonl(out / arm / f"seed{seed}" / "metrics.jsonl")]
            assert steps == [0, 1, 2]
    # the same seed gives both arms the same first-step samples (paired init and data)
    gens = {arm: [(g["prompt_id"], g["completion"]) for g in
                  iter_jsonl(out / arm / "seed1" / "emergence" / "generations.jsonl")
                  if g["step"] == 0] for arm in ("baseline", "candidate")}
    assert gens["baseline"] == gens["candidate"]


def test_sweep_table_layout_matches_the_seed_document() -> None:
    rows = [ProbeRow("grpo", "grpo", 5e-5, 20, 114, 0.07, 0.068, 0.0234, None, "ok", 1),
            ProbeRow("full", "full", 1e-3, 20, 98, 0.02, 0.021, 0.0401, None, "ok", 1)]
    table = format_table(rows, with_eval=False).splitlines()
    assert table[0] == "=" * 80
    assert table[1] == "  LEARNING RATE SWEEP RESULTS"
    assert table[3] == (" Algorithm         LR  Steps  Datums  Correct%  Running%   MeanLoss"
                        "   Status")
    assert table[4] == "─" * 80
    assert table[5] == ("      grpo      5e-05     20     114      7.0%      6.8%     0.0234"
                        "       ok")
    assert table[6] == ("      full      1e-03     20      98      2.0%      2.1%     0.0401"
                        "       ok")


@pytest.mark.parametrize("keep_going", [False, True])
def test_failed_run_and_continue_on_error(tmp_path: Path, keep_going: bool) -> None:
    from click.testing import CliRunner

    from textpolicy.cli import main

    out = tmp_path / "fail"
    broken = out / "baseline" / "seed0"
    broken.mkdir(parents=True)  # run files without config.json: training refuses this run
    (broken / "metrics.jsonl").write_text(json.dumps({"step": 0}) + "\n")
    args = ["campaign", "--engine", "local", "--task", "arithmetic", "--campaign-root",
            str(out), "--seeds", "0-1", "--max-steps", "2", "--eval-every", "0", "--execute",
            "--progress", "off"] + (["--continue-on-error"] if keep_going else [])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert "FAILED baseline/seed0" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    status = {r["log_dir"]: r["status"] for a in manifest["arms"] for r in a["runs"]}
    assert status["baseline/seed0"] == "failed" and manifest["status"] == "failed"
    others = {k: v for k, v in status.items() if k != "baseline/seed0"}
    if keep_going:
        assert set(others.values()) == {"finished"}
    else:
        assert set(others.values()) == {"not_started"}
    assert not (out / "analysis").exists()  # no analysis of an incomplete campaign


def test_failing_analysis_falls_back_to_the_comparison(tmp_path: Path) -> None:
    from textpolicy.runner import campaign as cmp
    from textpolicy.runner.plan import campaign_plan
    from textpolicy.runner.spec import load_spec

    spec = load_spec({"kind": "campaign", "engine": "local", "task": "arithmetic"})
    plan = campaign_plan(spec, tmp_path / "empty")  # no run directory exists
    out, text, ok = cmp.analyze(spec, plan)
    assert not ok
    assert "The significance analysis failed" in text and "tp analyze" in text
    comparison = json.loads((out / "comparison.json").read_text())
    assert [a["name"] for a in comparison["arms"]] == ["baseline", "candidate"]
    assert (out / "comparison.md").read_text().startswith("# Campaign comparison")


def test_campaign_on_the_tinker_engine_with_threads(tmp_path: Path, env: dict[str, str]) -> None:
    """The real tinker SDK against `tp serve`: parallel runs on threads, each its own client."""
    server = subprocess.Popen([*TP, "serve", "--port", "0", "--state-dir", str(tmp_path / "st")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        assert "listening on http://" in first, first
        url = first.split("listening on ")[1].split()[0]
        out = tmp_path / "tk"
        result = _tp(["campaign", "--engine", "tinker", "--task", "arithmetic", "--base-url",
                      url, "--campaign-root", str(out), "--seeds", "0", "--max-steps", "3",
                      "--eval-every", "0", "--execute", "--parallel", "2", "--progress",
                      "plain"], {**env, "TINKER_API_KEY": "tml-local-test"}, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        manifest = json.loads((out / "manifest.json").read_text())
        assert {r["status"] for a in manifest["arms"] for r in a["runs"]} == {"finished"}
        assert "tml-local-test" not in (out / "manifest.json").read_text()
        for arm in ("baseline", "candidate"):
            steps = [r["step"] for r in iter_jsonl(out / arm / "seed0" / "metrics.jsonl")]
            assert steps == [0, 1, 2]
    finally:
        server.terminate()
        server.wait(timeout=30)
