"""New-user audit regressions: one-line usage errors, failed starts, progress wording."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from textpolicy.cli import COMMANDS, main


@pytest.mark.parametrize("command", [[], *[[name] for name in COMMANDS]],
                         ids=lambda c: " ".join(["tp", *c]))
def test_unknown_flag_is_one_line_on_every_command(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--bogus-flag"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: No such option '--bogus-flag'")
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("args", "needle"), [
    (["trian"], "No such command 'trian'; did you mean 'train'? See 'tp --help'."),
    (["run"], "Missing argument 'SPEC'. See 'tp run --help'."),
    (["analyze", "--alpha", "x"], "Invalid value for '--alpha': 'x' is not a valid float"),
    (["power", "--seeds"], "Option '--seeds' requires an argument."),
    (["follow"], "Missing option '--metrics-path'."),
])
def test_usage_errors_are_one_line(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(main, args, prog_name="tp")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert needle in lines[0]


def test_tp_alone_still_prints_the_help() -> None:
    result = CliRunner().invoke(main, [])
    assert "Commands:" in result.output
    assert "Error" not in result.output


def test_bad_model_leaves_nothing_and_a_stale_config_does_not_block_the_fix(
        tmp_path: Path) -> None:
    log_dir = tmp_path / "run"
    common = ["train", "--log-dir", str(log_dir), "--max-steps", "1", "--eval-every", "0",
              "--batch-size", "2", "--group-size", "2", "--progress", "off"]
    bad = CliRunner().invoke(main, [*common, "--model", str(tmp_path / "no_such_model")])
    assert bad.exit_code == 2, bad.output
    assert bad.stderr.strip().startswith("Error: model ")
    assert not log_dir.exists()  # a typo must not pin the directory to the bad settings

    # a directory left by an older failed start: config.json only, no rows, no checkpoint
    log_dir.mkdir()
    (log_dir / "config.json").write_text(json.dumps(
        {"config": {"model": "/typo", "log_dir": str(log_dir)}}), encoding="utf-8")
    good = CliRunner().invoke(main, common)
    assert good.exit_code == 0, good.output
    stored = json.loads((log_dir / "config.json").read_text(encoding="utf-8"))
    assert stored["config"]["model"] is None
    assert len((log_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()) == 1


def test_plain_progress_start_line_reads_well() -> None:
    from textpolicy.training.progress import PlainReporter

    out = io.StringIO()
    PlainReporter(out).start(total=20, done=0, description="grpo seed 1")
    PlainReporter(out).start(total=20, done=5, description="grpo seed 1")
    assert out.getvalue().splitlines() == ["grpo seed 1: starting, 20 steps",
                                           "grpo seed 1: resuming at step 5 of 20"]


def test_spec_reports_value_and_name_problems_together(tmp_path: Path) -> None:
    spec = tmp_path / "typos.toml"
    spec.write_text('kind = "campaign"\n[[arms]]\npipeline = "grpoo"\n'
                    '[[arms]]\npipeline = "full"\nlr = -1\n'
                    '[engine]\nname = "tinker"\noptions = {api_key = "tml-x"}\n',
                    encoding="utf-8")
    result = CliRunner().invoke(main, ["run", str(spec), "--dry-run",
                                       "--output", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert "(3 problems)" in lines[0], result.stderr
    assert any("arms[1].lr: -1: must be > 0" in line for line in lines)
    assert any("arms[0].pipeline: 'grpoo'" in line and "did you mean 'grpo'" in line
               for line in lines)
    # the secret is reported once, not again as an unknown engine option
    assert sum("engine.options.api_key" in line for line in lines) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [
    ["train", "--max-steps", "1", "--log-dir", "{file}"],
    ["campaign", "--engine", "local", "--task", "arithmetic", "--campaign-root", "{file}"],
    ["run", "{spec}", "--dry-run", "--output", "{file}/sub"],
])
def test_a_file_where_a_directory_goes_is_one_line(tmp_path: Path, args: list[str]) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("keep me\n", encoding="utf-8")
    spec = tmp_path / "spec.toml"
    spec.write_text('kind = "campaign"\n', encoding="utf-8")
    argv = [a.format(file=file, spec=spec) for a in args]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {file}"), result.stderr
    assert file.read_text(encoding="utf-8") == "keep me\n"


def test_changed_spec_on_an_old_output_is_refused_before_anything_is_rewritten(
        tmp_path: Path) -> None:
    out = tmp_path / "out"
    spec = tmp_path / "c.toml"
    body = ('kind = "campaign"\nseeds = [0]\n[training]\nmax_steps = 1\nbatch_size = 2\n'
            'group_size = 2\n[eval]\nevery = 0\n[analysis]\nenabled = false\n')
    spec.write_text(body, encoding="utf-8")
    first = CliRunner().invoke(main, ["run", str(spec), "--output", str(out),
                                      "--progress", "off"])
    assert first.exit_code == 0, first.output
    manifest = (out / "manifest.json").read_text(encoding="utf-8")
    commands = (out / "run_commands.sh").read_text(encoding="utf-8")

    spec.write_text(body.replace("group_size = 2", "group_size = 4"), encoding="utf-8")
    for extra in ([], ["--dry-run"]):
        again = CliRunner().invoke(main, ["run", str(spec), "--output", str(out),
                                          "--progress", "off", *extra])
        assert again.exit_code == 2, again.output
        lines = again.stderr.strip().splitlines()
        assert len(lines) == 1, again.stderr
        assert "2 existing runs were made with other settings" in lines[0]
        assert "group_size: 2 -> 4" in lines[0]
        assert (out / "manifest.json").read_text(encoding="utf-8") == manifest
        assert (out / "run_commands.sh").read_text(encoding="utf-8") == commands

    # extending the runs (more steps) is still allowed
    spec.write_text(body.replace("max_steps = 1", "max_steps = 2"), encoding="utf-8")
    more = CliRunner().invoke(main, ["run", str(spec), "--output", str(out),
                                     "--progress", "off"])
    assert more.exit_code == 0, more.output


def test_dry_run_never_erases_the_record_of_runs_already_made(tmp_path: Path) -> None:
    out = tmp_path / "out"
    spec = tmp_path / "c.toml"
    spec.write_text('kind = "campaign"\nseeds = [0]\n[training]\nmax_steps = 1\n'
                    'batch_size = 2\ngroup_size = 2\n[eval]\nevery = 0\n[analysis]\n'
                    'enabled = false\n', encoding="utf-8")
    plan = CliRunner().invoke(main, ["run", str(spec), "--output", str(out), "--dry-run"])
    assert plan.exit_code == 0, plan.output
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8"))["status"] == "planned"
    assert "2 pending" in plan.output

    first = CliRunner().invoke(main, ["run", str(spec), "--output", str(out),
                                      "--progress", "off"])
    assert first.exit_code == 0, first.output
    manifest = (out / "manifest.json").read_text(encoding="utf-8")
    commands = (out / "run_commands.sh").read_text(encoding="utf-8")
    assert json.loads(manifest)["status"] == "finished"

    dry = CliRunner().invoke(main, ["run", str(spec), "--output", str(out), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert (out / "manifest.json").read_text(encoding="utf-8") == manifest
    assert (out / "run_commands.sh").read_text(encoding="utf-8") == commands
    assert "2 finished" in dry.output and "nothing to run" in dry.output
    assert "wrote" not in dry.output


@pytest.mark.parametrize(("args", "expected"), [
    (["campaign", "--baseline-lr", "-1"], ["--baseline-lr: -1.0: must be > 0"]),
    (["campaign", "--candidate", "nosuch", "--lr", "-2", "--seeds", "0,0"],
     ["--seeds: [0, 0]: values must be unique", "--lr: -2.0: must be > 0",
      "--candidate: 'nosuch': unknown pipeline 'nosuch'"]),
    (["campaign", "--gtpo-beta", "-3", "--alpha", "3"],
     ["--alpha: 3.0: must be strictly between 0 and 1", "--gtpo-beta: -3.0: must be"]),
    (["sweep", "--algorithms", "grpo,nosuch", "--lr-values", "-1"],
     ["--lr-values: [-1.0]: must be > 0", "--algorithms: 'nosuch': unknown pipeline"]),
])
def test_sweep_and_campaign_errors_name_the_flag(tmp_path: Path, args: list[str],
                                                 expected: list[str]) -> None:
    root = "--campaign-root" if args[0] == "campaign" else "--sweep-root"
    result = CliRunner().invoke(main, [*args, "--engine", "local", "--task", "arithmetic",
                                       root, str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in expected:
        assert needle in lines[0]
    assert "arms[" not in lines[0] and "training." not in lines[0]
    assert not (tmp_path / "out").exists()


def test_counts_read_singular_and_plural(tmp_path: Path) -> None:
    from textpolicy.runner.progress import Display
    from textpolicy.training.progress import PlainReporter
    from textpolicy.wording import plural

    assert [plural(n, "seed") for n in (0, 1, 2)] == ["0 seeds", "1 seed", "2 seeds"]
    out = io.StringIO()
    PlainReporter(out).start(total=1, done=0, description="grpo seed 0")
    assert out.getvalue().splitlines() == ["grpo seed 0: starting, 1 step"]

    result = CliRunner().invoke(main, [
        "campaign", "--engine", "local", "--task", "arithmetic", "--seeds", "0",
        "--max-steps", "1", "--campaign-root", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert "2 arms × 1 seed = 2 runs (2 steps)" in result.output
    result = CliRunner().invoke(main, [
        "campaign", "--engine", "local", "--task", "arithmetic", "--seeds", "0,1",
        "--max-steps", "1", "--campaign-root", str(tmp_path / "c2")])
    assert "2 arms × 2 seeds = 4 runs (4 steps)" in result.output

    stream = io.StringIO()
    Display("sweep s", mode="plain", stream=stream).start(["a"], {"a": 1})
    assert stream.getvalue().splitlines() == ["sweep s: 1 run, 1 step"]
    script = (tmp_path / "c" / "run_commands.sh").read_text(encoding="utf-8")
    assert "# campaign: 2 runs;" in script


def test_complete_run_still_checks_what_was_asked(tmp_path: Path) -> None:
    log_dir = tmp_path / "run"
    common = ["train", "--log-dir", str(log_dir), "--max-steps", "1", "--eval-every", "0",
              "--batch-size", "2", "--group-size", "2", "--progress", "off"]
    first = CliRunner().invoke(main, common)
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(main, common)
    assert again.exit_code == 0 and "already complete" in again.stderr
    for extra, needle in [
        (["--engine", "nosuch"], "nosuch"),
        (["--engine-option", "nosuch=1"], "nosuch"),
        (["--engine-option", "device=tpu"], "device='tpu'"),
        (["--model", str(tmp_path / "no_such_model")], "model"),
        (["--task", "nosuch"], "nosuch"),
        (["--pipeline", "nosuch"], "nosuch"),
    ]:
        result = CliRunner().invoke(main, [*common, *extra])
        assert result.exit_code == 2, (extra, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), (extra, result.stderr)
        assert needle in lines[0], (extra, lines[0])


def test_analyze_points_from_sweep_and_experiment_dirs_to_the_campaign(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "manifest.json").write_text('{"kind": "sweep", "runs": []}')
    result = CliRunner().invoke(main, ["analyze", str(sweep)])
    assert result.exit_code == 1 and "is an LR sweep, not a campaign" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    experiment = tmp_path / "exp"
    (experiment / "campaign").mkdir(parents=True)
    (experiment / "experiment.json").write_text("{}")
    result = CliRunner().invoke(main, ["analyze", str(experiment)])
    assert result.exit_code == 1
    assert f"its campaign is {experiment / 'campaign'}" in result.stderr


def test_closed_stdout_exits_quietly() -> None:
    """`tp plugins | head -1`: a reader that leaves early gets no 'Error: Broken pipe'."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:  # the interpreter running the tests, so no activated venv (PATH) is needed
        proc = subprocess.run([sys.executable, "-c", "from textpolicy.cli import main; main()",
                               "plugins"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 141 and proc.stderr == ""
