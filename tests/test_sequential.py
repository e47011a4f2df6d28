"""Group-sequential campaigns: boundaries, the whole procedure's type-I error, the spec table."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import re
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from textpolicy.analysis import group_sequential_boundaries
from textpolicy.analysis.methods import seed_prompt_p
from textpolicy.analysis.sequential import (
    crossing_probability,
    decide,
    simulate_procedure,
    stagewise_p,
    z_boundaries,
)
from textpolicy.analysis.synthetic import SyntheticDesign, simulate_campaigns
from textpolicy.cli import main
from textpolicy.errors import ConfigError
from textpolicy.runner.api import Options, run_spec
from textpolicy.runner.spec import Spec

LOOKS = [4, 8, 12, 16]


def test_reference_values_four_equal_looks() -> None:
    # /work/shared/reference/sequential.md: Lan–DeMets, two-sided symmetric, spending at α = .05
    obf = z_boundaries(LOOKS, spending="obrien-fleming")
    assert obf[0] == pytest.approx(2 * 1.959964, abs=1e-4)  # α*(1/4) = 2 − 2Φ(2 z_.975)
    np.testing.assert_allclose(obf, [3.92, 2.77, 2.30, 2.04], atol=0.012)
    poc = z_boundaries(LOOKS, spending="pocock")
    np.testing.assert_allclose(poc, [2.37, 2.37, 2.36, 2.35], atol=0.006)
    p = group_sequential_boundaries(LOOKS)
    np.testing.assert_allclose(p, [8.9e-5, 0.0055, 0.0215, 0.0410], rtol=0.03)
    assert all(b > a for a, b in itertools.pairwise(p))


def test_recursion_reproduces_classic_published_constants() -> None:
    # Pocock (1977): 2.361 constant, O'Brien & Fleming (1979): 2.024·sqrt(K/k), K = 4, α = .05
    assert crossing_probability([1, 2, 3, 4], [2.361] * 4) == pytest.approx(0.05, abs=2e-4)
    obf = 2.024 * np.sqrt(4 / np.arange(1, 5))
    assert crossing_probability([1, 2, 3, 4], obf) == pytest.approx(0.05, abs=2e-4)


@pytest.mark.parametrize("looks", [[4, 8, 12, 16], [3, 5, 10], [2, 9]])
@pytest.mark.parametrize("spending", ["obrien-fleming", "pocock"])
def test_boundaries_spend_alpha_exactly_by_genz_integration(looks: list[int],
                                                            spending: str) -> None:
    # independent check: scipy's multivariate normal CDF (Genz) of the continuation box
    c = z_boundaries(looks, spending=spending)
    t = np.asarray(looks, float) / looks[-1]
    corr = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    mvn = stats.multivariate_normal(np.zeros(len(t)), corr, seed=0)
    assert 1 - mvn.cdf(c, lower_limit=-c) == pytest.approx(0.05, abs=3e-4)


def test_boundaries_by_simulation_of_normal_looks() -> None:
    rng = np.random.default_rng(7)
    n = 400_000
    t = np.asarray(LOOKS, float) / LOOKS[-1]
    incr = rng.normal(size=(n, 4)) * np.sqrt(np.diff(np.concatenate([[0], t])))
    z = np.abs(np.cumsum(incr, axis=1)) / np.sqrt(t)
    for spending in ("obrien-fleming", "pocock"):
        c = z_boundaries(LOOKS, spending=spending)
        assert (z >= c).any(axis=1).mean() == pytest.approx(0.05, abs=0.0015)


def test_single_look_is_the_fixed_test() -> None:
    assert group_sequential_boundaries([10]) == pytest.approx([0.05])
    assert group_sequential_boundaries([10], alpha=0.01, spending="pocock") == pytest.approx(
        [0.01])


@pytest.mark.parametrize("looks,key", [([4, 4, 8], "looks"), ([8, 4], "looks"), ([], "looks"),
                                       ([0, 4], "looks")])
def test_invalid_looks_name_the_key(looks: list[int], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}:"):
        group_sequential_boundaries(looks)


def test_unknown_spending_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^spending: .*'haybittle'.*obrien-fleming, pocock"):
        group_sequential_boundaries(LOOKS, spending="haybittle")


def test_stagewise_p_ordering() -> None:
    # stopping at look 1 exactly on the boundary gives the α spent there; at the last look with
    # no crossing before, the boundary value gives α; beyond it, p falls below α
    c = z_boundaries(LOOKS)
    assert stagewise_p(LOOKS, stop_look=0, z=c[0]) == pytest.approx(2 * stats.norm.sf(c[0]))
    assert stagewise_p(LOOKS, stop_look=3, z=c[3]) == pytest.approx(0.05, abs=1e-6)
    assert stagewise_p(LOOKS, stop_look=3, z=c[3] + 0.5) < 0.05 < stagewise_p(
        LOOKS, stop_look=3, z=1.0)
    # earlier stops are more extreme than any later outcome
    assert stagewise_p(LOOKS, stop_look=1, z=c[1] + 1) < stagewise_p(LOOKS, stop_look=2, z=9.0)


def test_decide_stops_at_first_crossing_and_futility_is_optional() -> None:
    thr = group_sequential_boundaries(LOOKS)
    res = decide(LOOKS, [0.2, thr[1] / 2, 1e-9])
    assert [lk.decision for lk in res] == ["continue", "reject"]
    res = decide(LOOKS, [0.9, 0.9], futility="non-binding")
    assert [lk.decision for lk in res] == ["futility"]
    res = decide(LOOKS, [0.9, 0.9, 0.9, 0.9])
    assert [lk.decision for lk in res] == ["continue"] * 3 + ["accept"]
    assert math.isnan(decide(LOOKS, [math.nan])[0].p_value)


@pytest.mark.parametrize("spending", ["obrien-fleming", "pocock"])
@pytest.mark.parametrize("futility", ["none", "non-binding"])
def test_whole_procedure_type_one_error_with_t_based_p(spending: str, futility: str) -> None:
    # the primary test's t-based p values (few seed pairs, Satterthwaite df) at 4, 8, 12, 16
    # pairs under H0, with seed and arm × prompt variance: ≤ 0.06 at 2,000 replicates
    design = SyntheticDesign(sigma_seed=0.3, sigma_arm_prompt=0.3, eval_prompts=40)
    base, cand = simulate_campaigns(effect=0.0, seeds=16, campaigns=2000, design=design,
                                    rng=np.random.default_rng(11))
    d = cand - base
    p = np.stack([seed_prompt_p(d[:, :n, :]) for n in LOOKS], axis=1)
    res = simulate_procedure(p, LOOKS, spending=spending, futility=futility)
    assert res["reject"].mean() <= 0.06
    naive = (np.nan_to_num(p, nan=1.0) < 0.05).any(axis=1).mean()
    assert naive > 0.08  # peeking at α every wave is what this prevents
    if futility == "non-binding":
        assert res["pairs"].mean() < 12  # stopping for futility saves seeds under H0


# --------------------------------------------------------------------------- [sequential] specs
SPEC = """\
kind = "campaign"
name = "seq"
output = "{out}"
engine = "local"
task = "arithmetic"
seeds = [0, 1, 2, 3, 4, 5]

[training]
lr = 1e-3
max_steps = 4
batch_size = 2
group_size = 4

[eval]
every = 2
samples = 2
prompts = 8

[[arms]]
name = "grpo"
pipeline = "grpo"

[[arms]]
name = "maxrl"
pipeline = "maxrl"

[analysis]
resamples = 200

[sequential]
looks = {looks}
spending = "{spending}"
futility = "{futility}"
"""


def _spec(tmp_path: Path, *, looks: str = "[4, 6]", spending: str = "pocock",
          futility: str = "none", extra: str = "") -> Path:
    path = tmp_path / "seq.toml"
    path.write_text(SPEC.format(out=tmp_path / "out", looks=looks, spending=spending,
                                futility=futility) + extra, encoding="utf-8")
    return path


@pytest.mark.parametrize("looks,spending,futility,key", [
    ("[4, 4, 6]", "pocock", "none", "sequential.looks"),
    ("[6, 4]", "pocock", "none", "sequential.looks"),
    ("[4, 8]", "pocock", "none", "sequential.looks"),  # above the 6 seeds planned
    ("[4, 6]", "haybittle", "none", "sequential.spending"),
    ("[4, 6]", "pocock", "binding", "sequential.futility"),
])
def test_invalid_design_one_line_exit_2_nothing_written(tmp_path: Path, looks: str,
                                                         spending: str, futility: str,
                                                         key: str) -> None:
    path = _spec(tmp_path, looks=looks, spending=spending, futility=futility)
    for args in (["run", str(path)], ["run", str(path), "--dry-run"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        lines = result.stderr.splitlines()
        assert lines[0].startswith("Error: invalid spec") and len(lines) == 2, result.stderr
        assert lines[1].startswith(f"{path}: {key}: "), lines[1]
    assert not (tmp_path / "out").exists()


def test_spec_records_design_and_reference_documents_it(tmp_path: Path) -> None:
    path = _spec(tmp_path)
    spec = Spec.from_toml(path)
    assert spec.sequential is not None and spec.sequential.looks == (4, 6)
    dry = CliRunner().invoke(main, ["run", str(path), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    thr = group_sequential_boundaries([4, 6], spending="pocock")
    assert (f"Sequential: looks at 4, 6 seed pairs, pocock spending (two-sided alpha 0.05): "
            f"nominal p thresholds {thr[0]:.3g}, {thr[1]:.3g}; futility none") in dry.output
    from textpolicy.runner.reference import render

    assert "[sequential]" in render()


def _run(path: Path, stop: threading.Event | None = None,
         echo: Callable[[str], None] | None = None) -> int:
    spec = Spec.from_toml(path)
    lines: list[str] = []
    outcome = run_spec(spec, Options(progress="plain"), echo=echo or lines.append, stop=stop)
    return outcome.exit_code


def test_waves_looks_and_resume_never_repeats_a_look(tmp_path: Path) -> None:
    path = _spec(tmp_path, looks="[4, 6]", spending="pocock")
    out = tmp_path / "out"
    stop = threading.Event()

    def echo(line: str) -> None:  # Ctrl-C as the second wave starts
        if line.startswith("Sequential look 2/2"):
            stop.set()

    code = _run(path, stop=stop, echo=echo)
    assert code != 0
    state = json.loads((out / "manifest.json").read_text())["sequential"]
    assert state["status"] == "in_progress" and len(state["looks"]) == 1
    first = state["looks"][0]
    assert first["seed_pairs"] == 4 and first["seeds"] == [0, 1, 2, 3]
    assert first["test"] == "seeds_prompts"
    thr = group_sequential_boundaries([4, 6], spending="pocock")
    assert first["threshold"] == pytest.approx(thr[0])
    p1 = first["p_value"]  # None when the test is undefined (identical pair differences)
    assert first["decision"] == ("reject" if p1 is not None and p1 < thr[0] else "continue")
    if first["decision"] != "continue":
        pytest.skip("look 1 crossed; resume path not exercised")  # pragma: no cover
    assert not (out / "grpo" / "seed5" / "metrics.jsonl").exists()
    # the recorded look is final: resuming must not recompute it (mark it to see)
    data = json.loads((out / "manifest.json").read_text())
    data["sequential"]["looks"][0]["p_value"] = 0.5
    (out / "manifest.json").write_text(json.dumps(data))
    assert _run(path) == 0
    state = json.loads((out / "manifest.json").read_text())["sequential"]
    assert [lk["seed_pairs"] for lk in state["looks"]] == [4, 6]
    assert state["looks"][0]["p_value"] == 0.5 and state["looks"][0]["at"] == first["at"]
    assert state["status"] in ("completed", "stopped_efficacy")
    assert state["final"]["p_value_stagewise"] == pytest.approx(stagewise_p(
        [4, 6], stop_look=1, z=state["looks"][1]["z"], spending="pocock"))
    # tp analyze reports every look and the design-adjusted p, and plots them
    result = CliRunner().invoke(main, ["analyze", str(out)])
    assert result.exit_code == 0, result.output
    assert "## Sequential design" in result.output
    assert "Design-adjusted p (stage-wise ordering)" in result.output
    assert (out / "analysis" / "sequential.png").stat().st_size > 1000
    recorded = json.loads((out / "analysis" / "sequential.json").read_text())
    assert recorded["final"]["look"] == 2 and recorded["looks"][0]["p_value"] == 0.5
    # a different design after a look is refused before anything is written
    before = (out / "manifest.json").read_text()
    changed = _spec(tmp_path, looks="[4, 5]", spending="pocock")
    result = CliRunner().invoke(main, ["run", str(changed)])
    assert result.exit_code == 2 and "sequential: " in result.stderr
    assert "(looks, seeds changed)" in result.stderr
    assert (out / "manifest.json").read_text() == before


def test_stop_leaves_later_waves_unrun(tmp_path: Path) -> None:
    # futility with p ≈ 1 at look 1 is near certain only by chance; instead check the rule:
    # whatever look 1 decides, no run of a later wave exists once the procedure stopped
    path = _spec(tmp_path, looks="[4, 6]", spending="obrien-fleming", futility="non-binding")
    out = tmp_path / "out"
    assert _run(path) == 0
    state = json.loads((out / "manifest.json").read_text())["sequential"]
    last = state["looks"][-1]
    assert last["decision"] != "continue"
    ran = {int(p.name[4:]) for p in (out / "grpo").iterdir()}
    assert ran == set(range(last["seed_pairs"]))
    expected = decide([4, 6], [lk["p_value"] for lk in state["looks"]],
                      spending="obrien-fleming", futility="non-binding")
    assert [lk.decision for lk in expected] == [lk["decision"] for lk in state["looks"]]


def test_statistics_doc_sequential_block_matches_its_table() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "statistics.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", doc, flags=re.S)
                 if "group_sequential_boundaries" in b)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "statistics.md", "exec"), {})
    obf, poc = (eval(line) for line in out.getvalue().splitlines())
    assert "| obrien-fleming | 3.920, 2.774, 2.298, 2.043 | 0.00009, 0.0055, 0.0216, 0.0411 |" \
        in doc
    assert obf == pytest.approx([0.00009, 0.0055, 0.0216, 0.0411], abs=6e-5)
    assert "| pocock | 2.368, 2.368, 2.358, 2.350 | 0.0179, 0.0179, 0.0184, 0.0188 |" in doc
    assert poc == [0.0179, 0.0179, 0.0184, 0.0188]


def test_tp_power_sequential_plans_expected_and_max_pairs() -> None:
    args = ["power", "--mde", "4", "--sigma-seed", "2", "--seeds", "8", "--eval-prompts",
            "100", "--sims", "600", "--sequential", "4,8,12", "--futility", "non-binding",
            "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    seq = json.loads(result.stdout)["sequential"]
    assert seq["design"]["looks"] == [4, 8, 12]
    assert seq["null"]["rejection_rate"] <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 600)
    for row in (seq["null"], seq["effect"]):
        assert 4 <= row["expected_seed_pairs"] <= row["max_seed_pairs"] == 12
        assert sum(row["stop_probability_by_look"]) == pytest.approx(1.0)
    assert seq["effect"]["rejection_rate"] > 0.5
    assert seq["effect"]["expected_seed_pairs"] < 12
    assert isinstance(seq["fixed_design_seed_pairs_same_power"], int)
    bad = CliRunner().invoke(main, ["power", "--sims", "100", "--sequential", "8,4"])
    assert bad.exit_code == 2, bad.output
    assert "looks: must be strictly increasing" in bad.stderr.splitlines()[0]


# --------------------------------------------------------------------------- pooling campaigns
def _campaigns(tmp_path: Path, effect: float = 0.3) -> tuple[Path, Path]:
    from textpolicy.analysis.synthetic import write_campaign

    d = SyntheticDesign(steps=8, eval_every=4, eval_prompts=40, eval_samples=4)
    a = write_campaign(tmp_path / "A", arms={"baseline": 0.0, "candidate": effect},
                       seeds=range(0, 4), design=d)
    b = write_campaign(tmp_path / "B", arms={"baseline": 0.0, "candidate": effect},
                       seeds=range(4, 8), design=d)
    return Path(a), Path(b)


def test_pooled_campaigns_each_a_look(tmp_path: Path) -> None:
    from textpolicy.analysis import evaluate_significance
    from textpolicy.analysis.campaign import discover_arms

    a, b = _campaigns(tmp_path)
    out = tmp_path / "pooled"
    result = CliRunner().invoke(main, ["analyze", str(a), str(b), "--resamples", "200",
                                       "--no-plots", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Pooled campaigns, each a look" in result.stdout
    state = json.loads((out / "sequential.json").read_text())
    assert state["design"]["looks"] == [4, 8] and state["pooled"] is True
    # look 1 is campaign A alone, analysed as the fixed analysis of A would be
    arms_a, base, _ = discover_arms(a)
    alone = evaluate_significance(arms_a, baseline=base, num_resamples=200,
                                  tests=("seeds_prompts", "paired_seeds"))
    assert state["looks"][0]["p_value"] == pytest.approx(alone.headline.primary.p_value)
    thr = group_sequential_boundaries([4, 8])
    decisions = [lk["decision"] for lk in state["looks"]]
    if state["looks"][0]["p_value"] < thr[0]:
        assert decisions == ["reject"]  # pragma: no cover - stops at campaign A
    else:
        assert decisions[0] == "continue" and len(decisions) == 2
        assert state["final"]["p_value_stagewise"] == pytest.approx(stagewise_p(
            [4, 8], stop_look=1, z=state["looks"][1]["z"]))
    sig = json.loads((out / "significance.json").read_text())
    assert sig["primary"]["n_pairs"] == state["looks"][-1]["seed_pairs"]


def test_pooling_refuses_mismatched_settings_one_line_each(tmp_path: Path) -> None:
    from textpolicy.analysis.synthetic import write_campaign

    a, _ = _campaigns(tmp_path)
    c = write_campaign(tmp_path / "C", arms={"baseline": 0.0, "candidate": 0.3},
                       seeds=range(2, 6), design=SyntheticDesign(steps=12, eval_every=4,
                                                                 eval_prompts=40))
    out = tmp_path / "pooled"
    result = CliRunner().invoke(main, ["analyze", str(a), str(c), "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert lines[0] == "Error: cannot pool 2 campaigns (4 problems):"
    assert f"{c}: arm 'baseline': max_steps 12 differs from 8 in {a}" in lines
    assert f"{c}: arm 'candidate': seed(s) 2, 3 also in {a}; a seed pair counts once" in lines
    assert not out.exists()
