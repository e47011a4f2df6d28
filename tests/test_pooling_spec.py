"""Pooled campaigns as a spec (``kind = "pool"``, ``tp run pool.toml``), ``tp analyze
--spending`` and the look rule stated where the user meets it (synthetic campaign
directories: no training)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from textpolicy.analysis import group_sequential_boundaries
from textpolicy.analysis.synthetic import SyntheticDesign, write_campaign
from textpolicy.cli import main
from textpolicy.runner.spec import Spec, SpecError

DESIGN = SyntheticDesign(steps=8, eval_every=4, eval_prompts=40, eval_samples=4)
RULE = "A campaign added after looking at an earlier result counts as a look"


@pytest.fixture
def campaigns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Campaigns A (seeds 0-3) and B (seeds 4-7) of the same settings, and C (seeds 2-5,
    12 steps), under ``tmp_path``, the current directory."""
    monkeypatch.chdir(tmp_path)
    arms = {"baseline": 0.0, "candidate": 0.3}
    write_campaign(tmp_path / "A", arms=arms, seeds=range(0, 4), design=DESIGN)
    write_campaign(tmp_path / "B", arms=arms, seeds=range(4, 8), design=DESIGN)
    write_campaign(tmp_path / "C", arms=arms, seeds=range(2, 6),
                   design=SyntheticDesign(steps=12, eval_every=4, eval_prompts=40))
    return tmp_path


def _spec(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


POOL = """kind = "pool"
output = "pooled"
[pool]
campaigns = ["A", "B"]
spending = "pocock"
[analysis]
resamples = 200
seed = 3
"""


def test_pool_spec_writes_the_pooled_report(campaigns: Path) -> None:
    spec = _spec(campaigns / "pool.toml", POOL)
    result = CliRunner().invoke(main, ["run", str(spec)])
    assert result.exit_code == 0, result.output + result.stderr
    out = campaigns / "pooled"
    state = json.loads((out / "sequential.json").read_text())
    d = state["design"]
    assert d["spending"] == "pocock" and d["looks"] == [4, 8]
    assert d["thresholds"] == pytest.approx(group_sequential_boundaries([4, 8],
                                                                        spending="pocock"))
    assert d["campaigns"] == ["A", "B"] and state["pooled"] is True
    for look in state["looks"]:  # each decision is the p against its look's threshold
        crossed = look["p_value"] < look["threshold"]
        assert look["decision"] == ("reject" if crossed else
                                    "accept" if look["index"] == 1 else "continue")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "pool" and manifest["spending"] == "pocock"
    assert manifest["campaigns"] == ["A", "B"] and manifest["status"] == state["status"]
    assert manifest["spec"]["pool"]["spending"] == "pocock"
    assert RULE in manifest["rule"]
    for name in ("significance.json", "significance.md", "sequential.md", "sequential.png"):
        assert (out / name).is_file(), name
    sig = json.loads((out / "significance.json").read_text())
    assert sig["primary"]["n_pairs"] == state["looks"][-1]["seed_pairs"]
    assert sig["alpha"] == 0.05 and sig["num_resamples"] == 200 and sig["seed"] == 3
    # the verdict is the design's, never the fixed-design one that ignores the looks
    from textpolicy.analysis.sequential import sequential_recommendation

    assert sig["recommendation"] == sequential_recommendation(state, sig["primary"]["delta"])
    assert sig["fixed_design_recommendation"] in ("significant_improvement",
                                                  "significant_regression", "not_significant",
                                                  "insufficient_seeds")
    md = (out / "significance.md").read_text()
    assert md.startswith(f"**Sequential design — recommendation: `{sig['recommendation']}`**")
    assert "**Recommendation" not in md  # the fixed-design line is labelled as such
    assert "**Fixed-design recommendation (ignores the looks)" in md

    # the spec and `tp analyze A B --spending pocock` are the same analysis
    cli = CliRunner().invoke(main, ["analyze", "A", "B", "--spending", "pocock",
                                    "--resamples", "200", "--seed", "3", "--no-plots",
                                    "--out", "by_cli"])
    assert cli.exit_code == 0, cli.output + cli.stderr
    by_cli = json.loads((campaigns / "by_cli" / "sequential.json").read_text())
    assert [lk["p_value"] for lk in by_cli["looks"]] == [lk["p_value"] for lk in state["looks"]]
    assert by_cli["final"] == state["final"] and by_cli["design"] == d


def test_pool_spec_dry_run_checks_and_writes_nothing(campaigns: Path) -> None:
    spec = _spec(campaigns / "pool.toml", POOL)
    result = CliRunner().invoke(main, ["run", str(spec), "--dry-run"])
    assert result.exit_code == 0, result.output + result.stderr
    assert "Pool of 2 campaigns, each a look (pocock" in result.output
    assert not (campaigns / "pooled").exists()


def test_pool_spec_problems_one_line_each(campaigns: Path) -> None:
    spec = _spec(campaigns / "bad.toml", """kind = "pool"
output = "pooled"
seeds = [0, 1]
[training]
lr = 1e-4
[pool]
campaigns = ["A", "missing"]
spending = "pocok"
alpha = 0.1
""")
    result = CliRunner().invoke(main, ["run", str(spec)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert lines[0] == f"Error: invalid spec {spec} (5 problems):"
    assert (f"{spec}: pool.alpha: unknown key; allowed: campaigns, spending") in lines
    assert any(ln.startswith(f"{spec}: pool.spending: 'pocok': not allowed (did you mean "
                             "'pocock'?)") for ln in lines)
    for key in ("seeds", "training"):
        assert (f"{spec}: {key}: not used by kind 'pool' (it trains nothing: the campaigns' "
                "own settings are pooled); allowed: kind, name, output, pool, analysis") in lines
    assert (f"{spec}: pool.campaigns[1]: 'missing': no such directory (relative to the "
            "current directory); allowed: a campaign directory") in lines
    assert "Traceback" not in result.output + result.stderr
    assert not (campaigns / "pooled").exists()

    one = _spec(campaigns / "one.toml", 'kind = "pool"\n[pool]\ncampaigns = ["A"]\n')
    with pytest.raises(SpecError) as exc:
        Spec.from_toml(one)
    assert exc.value.problems == (
        f"{one}: pool.campaigns: ['A']: 1 value; allowed: at least 2",)
    none = _spec(campaigns / "none.toml", 'kind = "pool"\n')
    with pytest.raises(SpecError) as exc:
        Spec.from_toml(none)
    assert len(exc.value.problems) == 1 and "pool: required for kind 'pool'" in \
        exc.value.problems[0]
    other = _spec(campaigns / "other.toml", 'kind = "campaign"\n[pool]\ncampaigns = ["A", "B"]\n')
    with pytest.raises(SpecError) as exc:
        Spec.from_toml(other)
    assert f"{other}: pool: not used by kind 'campaign'; allowed: kind = 'pool'" in \
        exc.value.problems


def test_pool_spec_refuses_mismatched_settings_one_line_each(campaigns: Path) -> None:
    spec = _spec(campaigns / "mis.toml", 'kind = "pool"\noutput = "pooled"\n[pool]\n'
                 'campaigns = ["A", "C"]\n')
    result = CliRunner().invoke(main, ["run", str(spec)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert lines[0] == f"Error: invalid spec {spec} (4 problems):"
    for arm in ("baseline", "candidate"):
        assert f"{spec}: pool.campaigns: C: arm {arm!r}: max_steps 12 differs from 8 in A" \
            in lines
        assert (f"{spec}: pool.campaigns: C: arm {arm!r}: seed(s) 2, 3 also in A; a seed pair "
                "counts once") in lines
    assert not (campaigns / "pooled").exists()
    dry = CliRunner().invoke(main, ["run", str(spec), "--dry-run"])  # checked by a dry run too
    assert dry.exit_code == 2 and not (campaigns / "pooled").exists()


def test_analyze_spending_recorded_and_refused_for_one_campaign(campaigns: Path) -> None:
    for spending in ("obrien-fleming", "pocock"):
        args = ["analyze", "A", "B", "--resamples", "200", "--json"]
        result = CliRunner().invoke(main, args + (["--spending", spending]
                                                  if spending == "pocock" else []))
        assert result.exit_code == 0, result.output + result.stderr
        seq = json.loads(result.stdout)["sequential"]
        assert seq["design"]["spending"] == spending
        assert seq["design"]["thresholds"] == pytest.approx(
            group_sequential_boundaries([4, 8], spending=spending))
        assert [lk["threshold"] for lk in seq["looks"]] == pytest.approx(
            seq["design"]["thresholds"][:len(seq["looks"])])
    single = CliRunner().invoke(main, ["analyze", "A", "--spending", "pocock"])
    assert single.exit_code == 2
    assert single.stderr.splitlines() == [
        "Error: --spending: only for pooled campaigns (two or more CAMPAIGN_DIRs); a "
        "[sequential] campaign records its own"]
    bad = CliRunner().invoke(main, ["analyze", "A", "B", "--spending", "linear"])
    assert bad.exit_code == 2 and "'linear' is not one of 'obrien-fleming', 'pocock'" in \
        bad.stderr


def test_the_look_rule_is_where_the_user_meets_it(campaigns: Path) -> None:
    help_text = " ".join(CliRunner().invoke(main, ["analyze", "--help"]).output.split())
    assert RULE in help_text and "in the order they were run" in help_text
    result = CliRunner().invoke(main, ["analyze", "A", "B", "--resamples", "200",
                                       "--no-plots", "--out", "o"])
    assert result.exit_code == 0, result.output + result.stderr
    for text in (result.stdout, (campaigns / "o" / "sequential.md").read_text()):
        first = [ln for ln in text.splitlines() if ln.strip()][:2]
        assert first[0] == "## Pooled campaigns: each campaign is a look"
        assert first[1].startswith(f"Rule: {RULE}")
    assert RULE in json.loads((campaigns / "o" / "sequential.json").read_text())["rule"]


def test_statistics_docs_pool_spec_loads(campaigns: Path) -> None:
    """The pool spec of docs/statistics.md is a valid spec once its campaigns exist."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "statistics.md").read_text()
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", doc, re.S) if 'kind = "pool"' in b]
    assert len(blocks) == 1
    raw = tomllib.loads(blocks[0])
    for src, name in zip(raw["pool"]["campaigns"], ("A", "B"), strict=True):
        Path(src).parent.mkdir(parents=True, exist_ok=True)
        Path(src).symlink_to(campaigns / name, target_is_directory=True)
    spec = Spec.from_dict(raw, source="statistics.md")
    assert spec.kind == "pool" and spec.pool is not None
    assert spec.pool.spending == "obrien-fleming" and spec.output_dir() == Path(raw["output"])


def test_pool_spec_never_overwrites_a_campaign(campaigns: Path) -> None:
    before = {name: (campaigns / name / "manifest.json").read_bytes() for name in "ABC"}
    spec = _spec(campaigns / "pool.toml", POOL.replace('output = "pooled"', 'output = "A"'))
    for extra in ([], ["--dry-run"]):
        result = CliRunner().invoke(main, ["run", str(spec), *extra])
        assert result.exit_code == 2, result.output
        assert result.stderr.splitlines() == [
            "Error: output: 'A': is the pooled campaign 'A'; allowed: a directory of its own"]
    result = CliRunner().invoke(main, ["run", str(spec), "--output", "C"])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        "Error: output: 'C': holds the manifest.json of a campaign output, which a pool "
        "would overwrite; allowed: a new directory or an earlier pool's output"]
    assert {name: (campaigns / name / "manifest.json").read_bytes() for name in "ABC"} == before
    assert not (campaigns / "A" / "sequential.json").exists()
    assert not (campaigns / "C" / "significance.json").exists()
    # an earlier pool's output is rewritten (the same analysis again)
    again = _spec(campaigns / "again.toml", POOL)
    for _ in range(2):
        result = CliRunner().invoke(main, ["run", str(again)])
        assert result.exit_code == 0, result.output + result.stderr
    manifest = json.loads((campaigns / "pooled" / "manifest.json").read_text())
    assert set(manifest["spec"]) <= {"kind", "name", "output", "pool", "analysis"}


def test_pool_spec_names_an_experiment_root(campaigns: Path) -> None:
    (campaigns / "exp" / "campaign").mkdir(parents=True)
    (campaigns / "exp" / "experiment.json").write_text('{"kind": "experiment"}\n')
    spec = _spec(campaigns / "exp.toml", 'kind = "pool"\n[pool]\ncampaigns = ["A", "exp"]\n')
    with pytest.raises(SpecError) as exc:
        Spec.from_toml(spec)
    assert len(exc.value.problems) == 1
    assert exc.value.problems[0].startswith(f"{spec}: pool.campaigns: exp is an experiment; "
                                            "its campaign is exp/campaign")
