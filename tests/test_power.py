"""Power in seeds: closed form, noncentral t, the simulator, and `tp power`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from textpolicy.analysis import power
from textpolicy.analysis.planning import PlanInputs, pilot_inputs, plan_table
from textpolicy.analysis.synthetic import SyntheticDesign, write_campaign
from textpolicy.cli import main


@pytest.mark.parametrize(("sigma_seed", "delta", "pairs"), [
    (0.005, 0.01, 24), (0.005, 0.02, 8), (0.01, 0.01, 36), (0.01, 0.02, 11),
    (0.02, 0.01, 83), (0.02, 0.02, 23)])
def test_reference_table_of_statistics_md(sigma_seed: float, delta: float, pairs: int) -> None:
    # M = 500 eval prompts, K = 4, E[p(1-p)] = 0.15, sigma_int = 0.14
    vd = power.var_d(sigma_seed, 0.14, 0.15, 4, 500)
    assert power.t_seeds(math.sqrt(vd), delta) == pairs
    closed = power.closed_form_seeds(vd, delta)
    assert closed is not None and closed <= pairs <= closed + 3


def test_t_power_and_mde_are_inverse() -> None:
    n = power.t_seeds(2.0, 1.5)
    assert n is not None
    assert power.t_power(2.0, 1.5, n) >= 0.8 > power.t_power(2.0, 1.5, n - 1)  # type: ignore[operator]
    mde = power.t_mde(2.0, n)
    assert mde is not None and mde <= 1.5
    assert power.t_seeds(1.0, 0.001) == pytest.approx(7.85e6, rel=0.01)  # tiny effects work
    assert power.closed_form_seeds(1.0, 0.0) is None


def test_generation_level_figures_of_the_seed_document() -> None:
    # 23k generations per arm detect about 1.3 pp; 0.2 pp needs about 1 M per arm
    assert 100 * power.two_proportion_mde(0.5, 23_000) == pytest.approx(1.3, abs=0.06)
    n = power.two_proportion_n(0.5, 0.502)
    assert n is not None and 0.9e6 < n < 1.0e6


def test_simulation_agrees_with_closed_form() -> None:
    model = power.LogitModel(p0=0.5, delta=0.02, sigma_seed=0.05, sigma_prompt=1.5,
                             sigma_int=0.5)
    sd = math.sqrt(model.closed_form_var_d(4, 200))
    sim = power.simulate_paired(model, n_pairs=8, m=200, k=4, num_sims=600, seed=1)
    expected = power.t_power(sd, 0.02, 8)
    assert expected is not None
    assert sim["rejection_rate"] == pytest.approx(expected, abs=0.07)
    assert sim["mean_delta"] == pytest.approx(0.02, abs=0.003)
    null = power.simulate_paired(model, n_pairs=8, m=200, k=4, num_sims=600, seed=2,
                                 effect=False)
    assert null["rejection_rate"] < 0.085


def test_variance_components_recover_a_pilot() -> None:
    import numpy as np

    model = power.LogitModel(p0=0.5, delta=0.0, sigma_seed=0.3, sigma_prompt=1.0,
                             sigma_int=0.4)
    rng = np.random.default_rng(0)
    s, m, k = 400, 300, 4
    from scipy.special import expit

    prompt = rng.normal(0, 1.0, size=(1, 1, m))
    run = rng.normal(0, 0.3, size=(s, 2, 1))
    inter = rng.normal(0, 0.4, size=(s, 2, m))
    acc = rng.binomial(k, expit(model.mu + run + prompt + inter)) / k
    vc = power.variance_components(acc[:, 0], acc[:, 1], k)
    assert vc.project(k, m) == pytest.approx(vc.var_d, rel=0.2)
    # halving K raises only the prompt part
    assert vc.project(2, m) > vc.project(k, m) > vc.seed_part


def test_plan_table_and_bad_inputs() -> None:
    plan = plan_table(PlanInputs(mde_pp=2.0, sigma_seed_pp=1.0), seeds=[4, 11],
                      eval_prompts=[500], eval_samples=[4], steps=[50, 100], batch_size=4,
                      group_size=8, num_sims=200, sim_seed=0)
    assert [n["seeds_t"] for n in plan["seeds_needed"]] == [11]
    rows = plan["rows"]
    assert rows[1]["power_t"] >= 0.8 > rows[0]["power_t"]
    assert abs(rows[1]["power_sim"] - rows[1]["power_t"]) < 0.1
    assert rows[0]["train_generations"] == {"50": 2 * 4 * 50 * 32, "100": 2 * 4 * 100 * 32}
    from textpolicy.errors import ConfigError

    with pytest.raises(ConfigError, match="baseline-acc"):
        PlanInputs(baseline_acc=1.5)
    with pytest.raises(ConfigError, match="seeds must be >= 2"):
        plan_table(PlanInputs(), seeds=[1], eval_prompts=[10], eval_samples=[1], steps=[1],
                   batch_size=1, group_size=1)


def test_tp_power_cli_flags_and_pilot(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["power", "--seeds", "4,8", "--eval-prompts", "100,500",
                               "--sims", "100", "--steps", "50,100"])
    assert res.exit_code == 0, res.output
    assert "power (sim)" in res.output and "train gens @100 steps" in res.output
    design = SyntheticDesign(steps=4, batch_size=2, group_size=2, eval_every=2,
                             eval_prompts=40, eval_samples=4, completion_chars=10)
    pilot = write_campaign(tmp_path / "pilot", arms={"baseline": 0.0, "candidate": 0.2},
                           seeds=range(4), design=design)
    res = runner.invoke(main, ["power", "--pilot", str(pilot), "--sims", "0", "--json",
                               "--seeds", "4,8"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.stdout)
    assert plan["inputs"]["source"].startswith("pilot")
    assert [r["step"] for r in plan["inputs"]["pilot"]["pilot_by_step"]] == [0, 2, 4]
    inputs = pilot_inputs(pilot, mde_pp=2.0)
    assert 0 < inputs.baseline_acc < 1
    res = runner.invoke(main, ["power", "--seeds", "a,b"])
    assert res.exit_code == 2 and "Error:" in res.output
