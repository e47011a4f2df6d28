"""Plugin manager, `tp plugins` / `tp pipelines`, the installed example plugin, the docs example."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
import numpy as np
import pytest
from click.testing import CliRunner

import textpolicy as tp
from textpolicy import hookimpl
from textpolicy.cli import main
from textpolicy.errors import PluginError, UnknownComponentError
from textpolicy.pipeline import StepContext, TokenCredit, build_pipeline
from textpolicy.plugins import DISABLE_ENV, build_registry, get_registry
from textpolicy.records import AdvantageStage, NamedPipeline, StageRef
from textpolicy.rollouts import Rollouts
from textpolicy.testing import check_stage, make_rollouts

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "tests" / "plugin_example"


# ---- throw-away plugins -----------------------------------------------------------------------

@attrs.frozen
class _ScaleParams:
    factor: float = 2.0


def _scale(credit: TokenCredit, rollouts: Rollouts, ctx: StepContext,
           params: _ScaleParams) -> TokenCredit:
    return attrs.evolve(credit, advantages=credit.advantages * params.factor)


class ScalePlugin:
    @staticmethod
    @hookimpl
    def textpolicy_register_stages() -> Iterable[AdvantageStage]:
        return [AdvantageStage(name="scale", level="token", fn=_scale, params=_ScaleParams)]

    @staticmethod
    @hookimpl
    def textpolicy_register_pipelines() -> Iterable[NamedPipeline]:
        return [NamedPipeline(name="grpo+scale",
                              stages=[StageRef("grpo"), StageRef("scale", {"factor": 3.0})])]


def test_throwaway_plugin_stage_and_pipeline() -> None:
    reg = build_registry(extra_plugins=[("scale-plugin", ScalePlugin())],
                         load_entry_points=False)
    assert "scale" in reg.stages and "grpo+scale" in reg.pipelines
    r = make_rollouts(rewards=[1, 0, 0, 0])
    base = build_pipeline("grpo", registry=reg)(r, step=0).token_advantages
    out = build_pipeline("grpo+scale", registry=reg)(r, step=0).token_advantages
    np.testing.assert_allclose(out, 3 * base)
    out = build_pipeline("grpo>scale", {"scale": {"factor": 0.5}}, registry=reg)(
        r, step=0).token_advantages
    np.testing.assert_allclose(out, 0.5 * base)
    check_stage("scale", registry=reg)
    info = {p.name: p for p in reg.plugins}["scale-plugin"]
    assert dict(info.registers) == {"pipelines": ("grpo+scale",), "stages": ("scale",)}
    # the process-wide registry never saw it
    assert "scale" not in get_registry().stages


def test_broken_hook_is_reported_not_fatal() -> None:
    class Broken:
        @staticmethod
        @hookimpl
        def textpolicy_register_stages() -> Iterable[AdvantageStage]:
            raise RuntimeError("boom")

    reg = build_registry(extra_plugins=[("broken", Broken())], load_entry_points=False)
    assert "grpo" in reg.stages
    assert any("broken" in e and "boom" in e for e in reg.load_errors)


def test_duplicate_name_is_an_error() -> None:
    class Dup:
        @staticmethod
        @hookimpl
        def textpolicy_register_stages() -> Iterable[AdvantageStage]:
            return [AdvantageStage(name="gtpo", level="token", fn=_scale)]

    with pytest.raises(PluginError, match="duplicate advantage stage name 'gtpo'"):
        build_registry(extra_plugins=[("dup", Dup())], load_entry_points=False)
    # tp plugins builds a lenient registry: the clash becomes a load error of 'dup'
    reg = build_registry(extra_plugins=[("dup", Dup())], load_entry_points=False,
                         strict=False)
    assert any(e.startswith("dup:") and "duplicate" in e for e in reg.load_errors)
    assert reg.stages.get("gtpo").fn is not _scale


def test_duplicate_alias_is_an_error() -> None:
    class DupAlias:
        @staticmethod
        @hookimpl
        def textpolicy_register_pipelines() -> Iterable[NamedPipeline]:
            return [NamedPipeline(name="mine", stages=[StageRef("grpo")], aliases=["full"])]

    with pytest.raises(PluginError, match="duplicate pipeline name 'full'"):
        build_registry(extra_plugins=[("dup-alias", DupAlias())], load_entry_points=False)


def test_misspelt_hook_is_an_error_with_did_you_mean() -> None:
    class Misspelt:
        @staticmethod
        @hookimpl
        def textpolicy_register_stage() -> Iterable[AdvantageStage]:
            return []

    with pytest.raises(PluginError,
                       match="did you mean 'textpolicy_register_stages'"):
        build_registry(extra_plugins=[("misspelt", Misspelt())], load_entry_points=False)
    # unmarked but named like a hook: still a misspelling
    plain = SimpleNamespace(textpolicy_register_pipeline=lambda: [])
    with pytest.raises(PluginError, match="did you mean 'textpolicy_register_pipelines'"):
        build_registry(extra_plugins=[("plain", plain)], load_entry_points=False)


def test_record_of_wrong_type_is_an_error() -> None:
    class Wrong:
        @staticmethod
        @hookimpl
        def textpolicy_register_stages() -> Iterable[object]:
            return [object()]

    with pytest.raises(PluginError, match=r"not a textpolicy\.records"):
        build_registry(extra_plugins=[("wrong", Wrong())], load_entry_points=False)


def test_did_you_mean_for_every_kind() -> None:
    reg = get_registry()
    with pytest.raises(UnknownComponentError, match="did you mean 'strategic_grams'"):
        reg.planning_detectors.get("strategic_gram")
    with pytest.raises(UnknownComponentError, match="did you mean 'linear'"):
        reg.schedulers.get("liner")
    with pytest.raises(UnknownComponentError, match="did you mean 'hicra'"):
        reg.stages.get("hicr")


# ---- CLI ----------------------------------------------------------------------------------

def test_tp_plugins_cli() -> None:
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0, result.output
    assert "textpolicy_builtins.advantages (builtin" in result.stdout
    assert "stages: grpo, maxrl, sepa, gtpo, hicra" in result.stdout
    result = CliRunner().invoke(main, ["plugins", "--json"])
    data = json.loads(result.stdout)
    by_name = {p["name"]: p for p in data}
    assert by_name["textpolicy_builtins.planning"]["registers"] == {
        "planning_detectors": ["strategic_grams"]}
    assert by_name["textpolicy_builtins.schedulers"]["registers"] == {
        "schedulers": ["linear", "auto"]}
    assert all(set(p) == {"name", "source", "version", "registers", "error", "distribution",
                          "entry_point"} for p in data)
    assert by_name["textpolicy_builtins.advantages"]["version"] == tp.__version__


def test_tp_pipelines_cli() -> None:
    result = CliRunner().invoke(main, ["pipelines"])
    assert result.exit_code == 0, result.output
    assert "full (alias: maxrl+gtpo_sepa_hicra): maxrl > sepa > gtpo > hicra" in result.stdout
    assert "gtpo: beta=0.1, signal='surprisal'" in result.stdout
    data = {p["name"]: p for p in json.loads(
        CliRunner().invoke(main, ["pipelines", "--json"]).stdout)}
    expected = {"grpo", "maxrl", "full"} | {f"{e}+{t}" for e in ("grpo", "maxrl") for t in (
        "gtpo", "gtpo_hicra", "gtpo_sepa")} | {"grpo+gtpo_sepa_hicra"}
    assert set(data) == expected
    assert data["grpo"]["aliases"] == ["grpo+none"]
    assert [s["name"] for s in data["full"]["stages"]] == ["maxrl", "sepa", "gtpo", "hicra"]
    sepa = data["full"]["stages"][1]["params"]
    assert sepa == {"ramp_steps": 100, "delay_steps": 10, "schedule": "linear",
                    "correct_rate_gate": 0.1, "auto_decay": 0.99, "auto_warmup": 50,
                    "auto_threshold": 0.2}
    assert data["full"]["stages"][3]["params"] == {"alpha": 0.2}


def test_cli_help() -> None:
    for cmd in ("plugins", "pipelines"):
        result = CliRunner().invoke(main, [cmd, "--help"])
        assert result.exit_code == 0 and "--json" in result.stdout


# ---- the example plugin, installed into a temporary environment -------------------------------

def _make_env(tmp_path: Path) -> Path:
    """A venv that sees this environment's packages (textpolicy, hatchling) via a .pth."""
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(env)],
                   check=True, capture_output=True)
    py = env / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True, text=True
                          ).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    Path(site, "_textpolicy_parent.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    return py


def test_example_plugin_installed_in_a_venv(tmp_path: Path) -> None:
    src = tmp_path / "plugin_example"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                                "__pycache__"))
    py = _make_env(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != DISABLE_ENV}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INDEX"] = "1"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", str(src)],
                   check=True, capture_output=True, env=env, cwd=tmp_path)
    tp_cli = [str(py), "-c", "import sys; from textpolicy.cli import main; sys.exit(main())"]
    out = subprocess.run([*tp_cli, "plugins", "--json"], check=True, capture_output=True,
                         text=True, env=env, cwd=tmp_path).stdout
    plugins = {p["name"]: p for p in json.loads(out)}
    assert plugins["clipped"]["source"] == "entry-point"
    assert plugins["clipped"]["version"] == "0.3.1"
    assert plugins["clipped"]["distribution"] == "textpolicy-clipped"
    assert plugins["clipped"]["entry_point"] == "clipped = textpolicy_clipped.plugin"
    assert plugins["clipped"]["registers"] == {"pipelines": ["maxrl+clip"], "stages": ["clip"]}
    assert plugins["clipped"]["error"] is None

    snippet = """
import numpy as np, textpolicy as tp
from textpolicy.testing import make_rollouts
r = make_rollouts(rewards=[1] + [0] * 15, group_size=16, length=5)
a = tp.load_pipeline("maxrl+clip")(r, step=0).token_advantages
b = tp.load_pipeline("maxrl>clip", clip={"limit": 1.5})(r, step=0).token_advantages
print(float(np.abs(a).max()), float(np.abs(b).max()))
"""
    printed = subprocess.run([str(py), "-c", snippet], check=True, capture_output=True,
                             text=True, env=env, cwd=tmp_path).stdout.split()
    assert printed == ["3.0", "1.5"]

    # a run records the distribution, version and entry point behind its plugin stage
    subprocess.run([*tp_cli, "train", "--pipeline", "maxrl+clip", "--max-steps", "1",
                    "--eval-every", "0", "--progress", "off", "--log-dir", "run"],
                   check=True, capture_output=True, text=True, env=env, cwd=tmp_path)
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    clipped = [p for p in record["plugins"] if p["plugin"] == "clipped"]
    assert clipped == [{"plugin": "clipped", "source": "entry-point",
                        "distribution": "textpolicy-clipped", "version": "0.3.1",
                        "entry_point": "clipped = textpolicy_clipped.plugin",
                        "components": {"pipelines": ["maxrl+clip"], "stages": ["clip"]}}]

    # the environment variable disables external plugins (all, or by entry-point name)
    for value in ("1", "clipped"):
        out = subprocess.run([*tp_cli, "plugins", "--json"], check=True, capture_output=True,
                             text=True, env={**env, DISABLE_ENV: value}, cwd=tmp_path).stdout
        assert "clipped" not in {p["name"] for p in json.loads(out)}
    res = subprocess.run([*tp_cli, "pipelines"], capture_output=True, text=True,
                         env={**env, DISABLE_ENV: "1"}, cwd=tmp_path)
    assert res.returncode == 0 and "maxrl+clip" not in res.stdout

    # a plugin whose import fails is listed with its error; the others still load
    broken = tmp_path / "broken_plugin"
    shutil.copytree(src, broken)
    pyproject = (broken / "pyproject.toml").read_text()
    (broken / "pyproject.toml").write_text(
        pyproject.replace('name = "textpolicy-clipped"', 'name = "textpolicy-broken"')
        .replace('clipped = "textpolicy_clipped.plugin"', 'broken = "textpolicy_missing.plugin"'))
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", str(broken)],
                   check=True, capture_output=True, env=env, cwd=tmp_path)
    listed = subprocess.run([*tp_cli, "plugins", "--json"], capture_output=True,
                            text=True, env=env, cwd=tmp_path)
    assert listed.returncode == 1  # a failed plugin fails `tp plugins`
    assert listed.stderr.strip() == "Error: 1 plugin failed to load: broken"
    plugins = {p["name"]: p for p in json.loads(listed.stdout)}
    assert "ModuleNotFoundError" in plugins["broken"]["error"]
    assert plugins["clipped"]["error"] is None
    # a spec or flag naming a component says which plugin failed and why; every command
    # warns about the failed plugin once
    res = subprocess.run([*tp_cli, "train", "--pipeline", "maxrl+clipp", "--log-dir", "x"],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode == 2
    err = res.stderr.strip().splitlines()
    assert err[0].startswith("textpolicy: warning: plugin broken: ModuleNotFoundError")
    assert err[-1].startswith("Error: unknown pipeline 'maxrl+clipp' (did you mean "
                              "'maxrl+clip'?)")
    assert "1 plugin failed to load" in err[-1] and "broken: ModuleNotFoundError" in err[-1]


def test_new_plugin_scaffold_installs_and_passes_its_test(tmp_path: Path) -> None:
    target = tmp_path / "textpolicy-rloo"
    made = CliRunner().invoke(main, ["new-plugin", "textpolicy-rloo", "--output", str(target)])
    assert made.exit_code == 0, made.output
    assert "package textpolicy_rloo, stage 'rloo'" in made.stdout
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()) == [
        "README.md", "pyproject.toml", "src/textpolicy_rloo/__init__.py",
        "src/textpolicy_rloo/plugin.py", "tests/test_textpolicy_rloo.py"]
    again = CliRunner().invoke(main, ["new-plugin", "textpolicy-rloo", "--output", str(target)])
    assert again.exit_code == 2 and "already exists" in again.stderr
    taken = CliRunner().invoke(main, ["new-plugin", "gtpo", "--output", str(tmp_path / "g")])
    assert taken.exit_code == 2 and "already registered" in taken.stderr
    assert not (tmp_path / "g").exists()

    py = _make_env(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != DISABLE_ENV}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INDEX="1")
    # the README's command: an editable install (needs no build dependency beyond hatchling)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "-e", str(target)],
                   check=True, capture_output=True, env=env, cwd=tmp_path)
    tested = subprocess.run([str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                            capture_output=True, text=True, env=env, cwd=target)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "1 passed" in tested.stdout
    tp_cli = [str(py), "-c", "import sys; from textpolicy.cli import main; sys.exit(main())"]
    out = subprocess.run([*tp_cli, "plugins", "--json"], check=True, capture_output=True,
                         text=True, env=env, cwd=tmp_path).stdout
    info = {p["name"]: p for p in json.loads(out)}["textpolicy_rloo"]
    assert info["distribution"] == "textpolicy-rloo" and info["version"] == "0.1.0"
    assert info["registers"] == {"stages": ["rloo"]} and info["error"] is None


# ---- the docs example -------------------------------------------------------------------------

def test_docs_pipelines_example_runs() -> None:
    text = (ROOT / "docs" / "pipelines.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "docs/pipelines.md has no python example"
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "docs/pipelines.md", "exec"), namespace)
    result: Any = namespace["result"]
    rollouts: Any = namespace["rollouts"]
    assert result.token_advantages.shape == rollouts.tokens.shape
    assert result.diagnostics["sepa_lambda"] == 0.5
