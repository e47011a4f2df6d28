"""The first hour's runner behaviour (issue 15, items 2-5), with the real `tp` CLI:

* a sweep with an arm without a successful probe recommends nothing and exits 1;
* W&B never fails silently (a [wandb] spec without a key logs offline and says so; a follower
  that dies is reported; `tp follow` without a key is one line);
* an unreachable Hugging Face hub is decided at once (no retries) and the dry run says so;
* a dry run checks what the real run needs (data files, model path, engine options).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_follow import wandb_dir  # noqa: F401  (a fixture)

from textpolicy.cli import main
from textpolicy.runner.toml_out import dumps

TP = [sys.executable, "-c", "from textpolicy.cli import main; main()"]


def closed_port_url() -> str:
    """An http URL on this machine where nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No Tinker or W&B credentials anywhere this process or its children look."""
    from textpolicy.engines.local.cache import cache_root

    for name in ("TINKER_API_KEY", "TINKER_CREDENTIAL_CMD", "TINKER_BASE_URL", "WANDB_API_KEY",
                 "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TEXTPOLICY_CACHE_DIR", str(cache_root()))  # keep the built tiny model
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # no ~/.tinker/credentials.json, no ~/.netrc
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    return home


def _invoke(args: list[str]) -> tuple[Any, list[str]]:
    """The CLI's result and the messages of the warnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(main, args)
    return result, [str(w.message) for w in caught]


# ------------------------------------------------------------------------------ item 2
def test_sweep_with_no_successful_probe_recommends_nothing(tmp_path: Path,
                                                           no_keys: Path) -> None:
    root = tmp_path / "sweep"
    root.mkdir()
    (root / "campaign.toml").write_text("# from an earlier sweep here\n")
    result, caught = _invoke([
        "sweep", "--engine", "tinker", "--task", "arithmetic", "--sweep-root", str(root),
        "--lr-values", "1e-4,2e-4", "--probe-steps", "1", "--continue-on-error",
        "--progress", "off"])
    assert result.exit_code == 1, result.output
    assert "Recommended campaign" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("No campaign recommended: no successful probe for arms grpo "
                           "(grpo_lr1e-04, grpo_lr2e-04 failed: no Tinker API key")
    assert "full (full_lr1e-04, full_lr2e-04 failed: no Tinker API key" in last
    assert not (root / "campaign.toml").exists()  # the earlier one is no recommendation
    assert not (root / "sweep_plot.png").exists()
    assert not [w for w in caught if "legend" in w], caught
    results = json.loads((root / "sweep_results.json").read_text())
    assert results["campaign_spec"] is None and results["best_lr"] == {}
    assert set(results["untuned"]) == {"grpo", "full"}


def test_one_arm_without_a_successful_probe_fails_the_sweep(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    broken = root / "full_lr1e-03"
    broken.mkdir(parents=True)  # run files without config.json: training refuses the probe
    (broken / "metrics.jsonl").write_text(json.dumps({"step": 0}) + "\n")
    result, caught = _invoke([
        "sweep", "--engine", "local", "--task", "arithmetic", "--sweep-root", str(root),
        "--lr-values", "1e-3", "--probe-steps", "1", "--batch-size", "2", "--group-size", "2",
        "--eval-every", "0", "--continue-on-error", "--progress", "off"])
    assert result.exit_code == 1, result.output
    assert "      grpo: 1e-03" in result.output
    assert result.output.strip().splitlines()[-1].startswith(
        "No campaign recommended: no successful probe for arm full (full_lr1e-03 failed: ")
    assert not (root / "campaign.toml").exists()
    assert (root / "sweep_plot.png").read_bytes()[:4] == b"\x89PNG"  # grpo has a point
    assert not [w for w in caught if "legend" in w], caught


# ------------------------------------------------------------------------------ item 3
@pytest.mark.usefixtures("wandb_dir")  # offline W&B files under $WANDB_DIR
def test_wandb_without_a_key_logs_offline_and_says_so(tmp_path: Path, no_keys: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from test_follow import settled_history

    logged_to = Path(os.environ["WANDB_DIR"])
    monkeypatch.delenv("WANDB_MODE")  # online, as a user's default
    out = tmp_path / "sweep"
    # the second probe's follower cannot save its state: W&B logging of it stops; the
    # third's cannot read it: its follower never starts
    (out / "grpo_lr3e-03" / "wandb_follow.json.tmp").mkdir(parents=True)
    (out / "grpo_lr5e-03" / "wandb_follow.json").mkdir(parents=True)
    spec = tmp_path / "w.toml"
    spec.write_text(dumps({
        "kind": "sweep", "name": "w", "output": str(out), "engine": "local",
        "task": "arithmetic", "arms": [{"pipeline": "grpo"}],
        "training": {"batch_size": 2, "group_size": 2},
        "eval": {"every": 0},
        "sweep": {"lr_values": [1e-3, 3e-3, 5e-3], "probe_steps": 2, "seeds": [0]},
        "wandb": {"project": "tp-test"}}))
    result = CliRunner().invoke(main, ["run", str(spec), "--progress", "off"])
    lines = result.output.splitlines()
    assert result.exit_code == 0, result.output
    fallback = [line for line in lines if line.startswith("W&B: ")]
    assert fallback == ["W&B: no W&B API key (set WANDB_API_KEY or run `wandb login`): "
                        "logging offline instead (upload later with `wandb sync`)"]
    stopped = [line for line in lines if line.startswith("W&B logging of ")]
    assert [line.split(" stopped ")[0] for line in stopped] == [
        "W&B logging of grpo_lr3e-03", "W&B logging of grpo_lr5e-03"]
    assert all("IsADirectoryError: [Errno 21] Is a directory" in line for line in stopped)
    rows = settled_history(logged_to, 2)
    assert sorted(r["_step"] for r in rows) == [0, 1]  # the first probe, logged offline
    for probe in ("grpo_lr3e-03", "grpo_lr5e-03"):  # their training went on
        assert len((out / probe / "metrics.jsonl").read_text().splitlines()) == 2


def test_follow_without_a_key_is_one_line(tmp_path: Path, no_keys: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(json.dumps({"step": 0, "loss": 1.0}) + "\n")
    result = CliRunner().invoke(main, ["follow", "--metrics-path", str(metrics),
                                       "--no-follow"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: no W&B API key (set WANDB_API_KEY or run `wandb login`); or log without "
        "uploading: WANDB_MODE=offline tp follow ... (then `wandb sync`)"]
    assert not (tmp_path / "wandb_follow.json").exists()


def test_wandb_problem_reads_the_key_and_asks_the_host(no_keys: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from textpolicy.runner.follow import wandb_problem

    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_problem("offline") is None and wandb_problem("disabled") is None
    assert (wandb_problem() or "").startswith("no W&B API key")
    url = closed_port_url()
    host = url.split("//")[1].split(":")[0]
    (no_keys / ".netrc").write_text(f"machine {host} login user password k" + "0" * 39 + "\n")
    monkeypatch.setenv("WANDB_BASE_URL", url)
    problem = wandb_problem("online")
    assert problem is not None and problem.startswith("W&B unreachable (127.0.0.1: ")
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_problem() is None


# ------------------------------------------------------------------------------ item 4
def test_unreachable_hub_is_decided_at_once_and_the_dry_run_says_so(tmp_path: Path,
                                                                    no_keys: Path) -> None:
    spec = tmp_path / "m.toml"
    spec.write_text(dumps({"kind": "campaign", "name": "m", "output": str(tmp_path / "m"),
                           "engine": "tinker", "task": "math",
                           "arms": [{"pipeline": "grpo"}, {"pipeline": "full"}]}))
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")}
    hub = closed_port_url()
    env.update(HF_ENDPOINT=hub, HF_HOME=str(tmp_path / "hf"), TINKER_BASE_URL=hub)
    t0 = time.monotonic()
    result = subprocess.run([*TP, "run", str(spec), "--dry-run"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - t0
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Retrying" not in result.stderr and "Traceback" not in result.stderr
    said = [line for line in result.stderr.splitlines() if "Hugging Face hub" in line]
    assert said == ["Hugging Face hub unreachable (127.0.0.1: Connection refused): datasets "
                    "load from the local cache only (set HF_HUB_OFFLINE=1 to skip this check)"]
    notes = [line for line in result.stdout.splitlines() if line.startswith("Not ready")]
    assert notes[0].startswith("Not ready on this machine: no Tinker API key")
    assert notes[1].startswith(f"Not ready on this machine: cannot reach Tinker at {hub}")
    assert notes[2].startswith("Not ready on this machine: task 'math' data: TaskError: task "
                               "'math': cannot load dataset HuggingFaceH4/MATH-500")
    assert len(notes) == 3
    task = json.loads((tmp_path / "m" / "manifest.json").read_text())["task"]
    assert "not available within" not in task["fingerprint_error"]
    assert seconds < 20, seconds  # the manifest's own deadline is 20 s


def test_behind_a_proxy_the_client_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    from textpolicy.netcheck import unreachable

    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    url = closed_port_url()
    assert (unreachable(url) or "").endswith("Connection refused")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    assert unreachable(url) is None  # a direct connection says nothing about the proxy
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert (unreachable(url) or "").endswith("Connection refused")


def test_tinker_service_url_is_the_sdks(monkeypatch: pytest.MonkeyPatch) -> None:
    from tinker.lib.base_url import resolve_base_url

    from textpolicy.engines.tinker_engine import service_url

    url = closed_port_url()
    for env_url in (None, "", url + "/env/"):
        if env_url is None:
            monkeypatch.delenv("TINKER_BASE_URL", raising=False)
        else:
            monkeypatch.setenv("TINKER_BASE_URL", env_url)
        for given in (None, "", url + "/x/", url):
            assert service_url(given) == resolve_base_url(given), (given, env_url)


# ------------------------------------------------------------------------------ item 5
@pytest.mark.parametrize(("table", "error"), [
    ({"model": "/etc"},
     "Error: model '/etc': the local engine needs 'textpolicy/tiny-arithmetic', "
     "'smollm2-135m', a local .gguf file or a local Hugging Face checkpoint folder "
     "(with config.json)"),
    ({"task": {"name": "math", "params": {"train_files": ["/no/such/train.jsonl"]}}},
     "Error: task 'math': train_files: no such file '/no/such/train.jsonl'"),
    ({"engine": {"name": "local", "options": {"device": "gpu"}}},
     "Error: engine option device='gpu': allowed: auto, cpu, cuda, cuda:N"),
    ({"engine": {"name": "local", "options": {"lora_alpha": "wide"}}},
     "Error: engine option lora_alpha='wide': must be a whole number >= 1"),
    ({"engine": {"name": "local", "options": {"devise": "cpu"}}},
     "Error: engine local: unknown option 'devise'; allowed: device, "),
    ({"engine": {"name": "tinker", "options": {"base_url": "localhost:8765"}}},
     "Error: engine option base_url='localhost:8765': expected "
     "http(s)://host[:port]"),
])
def test_dry_run_checks_what_the_real_run_needs(tmp_path: Path, table: dict[str, Any],
                                                error: str) -> None:
    out = tmp_path / "c"
    raw: dict[str, Any] = {"kind": "campaign", "name": "c", "output": str(out),
                           "engine": "local", "task": "arithmetic",
                           "arms": [{"pipeline": "grpo"}, {"pipeline": "full"}], **table}
    spec = tmp_path / "c.toml"
    spec.write_text(dumps(raw))
    for args in (["run", str(spec), "--dry-run"], ["run", str(spec), "--progress", "off"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        assert result.output.strip().splitlines()[-1].startswith(error), result.output
        assert not out.exists()  # refused before anything was written


def test_dry_run_of_a_ready_spec_has_no_notes(tmp_path: Path) -> None:
    spec = tmp_path / "ok.toml"
    spec.write_text(dumps({"kind": "campaign", "name": "ok", "output": str(tmp_path / "ok"),
                           "engine": "local", "task": "arithmetic",
                           "arms": [{"pipeline": "grpo"}, {"pipeline": "full"}]}))
    result = CliRunner().invoke(main, ["run", str(spec), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "Not ready" not in result.output
    assert (tmp_path / "ok" / "manifest.json").is_file()
