"""The training loop end to end on the local engine + arithmetic task (real components)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from textpolicy.errors import ConfigError
from textpolicy.training import METRIC_KEYS, make_config, run_training

CONTRACT_METRICS = {
    "step", "loss", "mean_reward", "correct_rate", "running_correct_rate",
    "max_token_hit_rate", "sepa_lambda", "sepa_gate_open", "num_datums", "step_time_s",
    "condition", "lr", "mean_completion_tokens", "planning_token_share",
    "credit_moved_share", "temperature", "duplicate_completion_rate", "expected_duplicate_rate",
    "kl_sampler_learner_k1", "kl_sampler_learner_k3", "importance_ratio_mean", "kl_tokens",
    "mean_token_entropy", "entropy_estimator",
}
STEP_KEYS = {"step", "mean_reward", "correct_count", "total_count", "condition"}
GEN_KEYS = {"step", "prompt_id", "prompt", "completion", "reward", "num_tokens", "metadata"}
GEN_META_KEYS = {"correctness", "group", "sample", "stop_reason"}
EVAL_KEYS = {"step", "prompt_id", "sample", "correct"}
CHECKPOINT_KEYS = {"step", "name", "state_path", "sampler_path", "pipeline_state"}


def rows(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """One seeded 40-step GRPO run on arithmetic (the task's defaults: lr 1e-3, full FT)."""
    log_dir = tmp_path_factory.mktemp("learn") / "run"
    config = make_config(log_dir=str(log_dir), max_steps=40, seed=0, eval_every=10,
                         save_every=20, condition="baseline")
    seen: list[dict[str, Any]] = []
    outcome = run_training(config, on_step=seen.append, progress="off")
    return log_dir, (outcome, seen)


def test_local_engine_learns_arithmetic(learned_run: tuple[Path, Any]) -> None:
    log_dir, (outcome, _seen) = learned_run
    assert outcome.status == "finished" and outcome.steps_done == 40
    evals = rows(log_dir / "eval.jsonl")
    by_step: dict[int, list[bool]] = {}
    for r in evals:
        by_step.setdefault(r["step"], []).append(r["correct"])
    assert sorted(by_step) == [0, 10, 20, 30, 40]
    initial = sum(by_step[0]) / len(by_step[0])
    final = sum(by_step[40]) / len(by_step[40])
    # warm start ≈ 0.2; 40 GRPO steps at lr 1e-3 sharpen the policy on held-out prompts
    assert initial < 0.35
    assert final > initial + 0.2, (initial, final)
    metrics = rows(log_dir / "metrics.jsonl")
    first = sum(m["correct_rate"] for m in metrics[:10]) / 10
    last = sum(m["correct_rate"] for m in metrics[-10:]) / 10
    assert last > first + 0.1, (first, last)
    assert outcome.final_eval is not None
    assert outcome.final_eval["pass@1"] == pytest.approx(final)


def test_files_and_keys_follow_the_contract(learned_run: tuple[Path, Any]) -> None:
    log_dir, (_outcome, seen) = learned_run
    metrics = rows(log_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(40))
    assert set(METRIC_KEYS) == CONTRACT_METRICS
    for m in metrics:
        extra = set(m) - CONTRACT_METRICS
        if m["step"] % 10 == 0:
            assert extra >= {"eval_pass@1", "eval_pass@4"}
        if m["step"] == 39:
            assert extra == {"final_eval_pass@1", "final_eval_pass@4"}
        else:
            assert extra <= {"eval_pass@1", "eval_pass@4"}
        assert set(m) >= CONTRACT_METRICS
        assert m["condition"] == "baseline" and m["lr"] == 1e-3
    assert seen == metrics  # on_step got every row as written
    # running correct rate is the cumulative share of correct completions
    steps = rows(log_dir / "emergence" / "steps.jsonl")
    assert [s["step"] for s in steps] == list(range(40))
    assert all(set(s) == STEP_KEYS for s in steps)
    correct = sum(s["correct_count"] for s in steps)
    assert metrics[-1]["running_correct_rate"] == pytest.approx(correct / (40 * 32))
    gens = rows(log_dir / "emergence" / "generations.jsonl")
    assert len(gens) == 40 * 4 * 8
    assert all(set(g) == GEN_KEYS and set(g["metadata"]) == GEN_META_KEYS for g in gens)
    assert {(g["step"], g["metadata"]["group"], g["metadata"]["sample"]) for g in gens} == {
        (s, gr, j) for s in range(40) for gr in range(4) for j in range(8)}
    for s in steps:
        mine = [g for g in gens if g["step"] == s["step"]]
        assert sum(g["metadata"]["correctness"] for g in mine) == s["correct_count"]
    evals = rows(log_dir / "eval.jsonl")
    assert all(set(e) == EVAL_KEYS for e in evals)
    assert len(evals) == 5 * 30 * 4  # 5 evals x 30 held-out prompts x 4 samples
    ckpts = rows(log_dir / "checkpoints.jsonl")
    assert [c["step"] for c in ckpts] == [20, 40]
    for c in ckpts:
        assert set(c) >= CHECKPOINT_KEYS
        assert (log_dir / c["state_path"]).is_dir()
    config = json.loads((log_dir / "config.json").read_text())
    assert {"config", "seed", "condition", "pipeline", "task", "versions", "engine",
            "started_at"} <= set(config)
    assert {"textpolicy", "torch", "transformers", "tinker", "python"} <= set(config["versions"])
    assert "fingerprint" in config["task"]
    assert config["seed"] == 0 and config["config"]["lr"] == 1e-3


def test_uniform_groups_are_logged(learned_run: tuple[Path, Any]) -> None:
    log_dir, _ = learned_run
    gens = rows(log_dir / "emergence" / "generations.jsonl")
    groups: dict[tuple[int, int], set[float]] = {}
    for g in gens:
        groups.setdefault((g["step"], g["metadata"]["group"]), set()).add(g["reward"])
    uniform = [k for k, rewards in groups.items() if len(rewards) == 1]
    assert uniform, "expected some uniform-reward groups in 160 groups"
    metrics = {m["step"]: m for m in rows(log_dir / "metrics.jsonl")}
    # a uniform group contributes no datum: datums <= completions in mixed groups
    for step, m in metrics.items():
        mixed = sum(1 for (s, _g), rw in groups.items() if s == step and len(rw) > 1)
        assert m["num_datums"] <= mixed * 8


def test_steps_without_trainable_datum_still_write_rows(tmp_path: Path) -> None:
    # group_size 1: every group is uniform, GRPO advantages are all zero: nothing to train
    config = make_config(log_dir=str(tmp_path / "run"), max_steps=3, group_size=1,
                         eval_every=0, save_every=0)
    outcome = run_training(config, progress="off")
    assert outcome.status == "finished"
    metrics = rows(tmp_path / "run" / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [0, 1, 2]
    assert all(m["num_datums"] == 0 and m["loss"] == 0.0 for m in metrics)
    assert len(rows(tmp_path / "run" / "emergence" / "generations.jsonl")) == 3 * 4
    assert not (tmp_path / "run" / "eval.jsonl").exists()


def test_same_seed_same_run_other_seed_differs(tmp_path: Path) -> None:
    def run(name: str, seed: int) -> list[dict[str, Any]]:
        config = make_config(log_dir=str(tmp_path / name), max_steps=4, seed=seed,
                             eval_every=2, save_every=0)
        run_training(config, progress="off")
        return [{k: v for k, v in m.items() if k != "step_time_s"}
                for m in rows(tmp_path / name / "metrics.jsonl")]

    a, b, c = run("a", 3), run("b", 3), run("c", 4)
    assert a == b
    assert a != c
    ga = rows(tmp_path / "a" / "emergence" / "generations.jsonl")
    gc = rows(tmp_path / "c" / "emergence" / "generations.jsonl")
    assert [g["prompt_id"] for g in ga] != [g["prompt_id"] for g in gc]  # data order


def test_eval_prompts_get_the_same_seeds_in_every_arm(tmp_path: Path) -> None:
    # step-0 eval is the initial model: identical across pipelines with the same seed
    outs = []
    for pipe in ("grpo", "full"):
        config = make_config(log_dir=str(tmp_path / pipe), max_steps=1, seed=5, pipeline=pipe,
                             eval_every=1, save_every=0)
        run_training(config, progress="off")
        outs.append([r for r in rows(tmp_path / pipe / "eval.jsonl") if r["step"] == 0])
    assert outs[0] == outs[1]


def test_stop_event_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    stop = threading.Event()

    def on_step(row: dict[str, Any]) -> None:
        if row["step"] == 2:
            stop.set()

    config = make_config(log_dir=str(tmp_path / "run"), max_steps=6, eval_every=3,
                         save_every=0)
    first = run_training(config, stop=stop, on_step=on_step, progress="off")
    assert first.status == "stopped" and first.steps_done == 3
    assert [c["step"] for c in rows(tmp_path / "run" / "checkpoints.jsonl")] == [3]
    second = run_training(config, progress="off")
    assert second.status == "finished" and second.resumed_from == 3
    assert [m["step"] for m in rows(tmp_path / "run" / "metrics.jsonl")] == list(range(6))
    assert sorted({e["step"] for e in rows(tmp_path / "run" / "eval.jsonl")}) == [0, 3, 6]
    # eval at step 3 ran once (before the checkpoint) and its pass@1 is on row 3
    assert len([e for e in rows(tmp_path / "run" / "eval.jsonl") if e["step"] == 3]) == 30 * 4
    assert "eval_pass@1" in rows(tmp_path / "run" / "metrics.jsonl")[3]
    third = run_training(config, progress="off")
    assert third.status == "finished" and "already complete" in third.note


def test_changed_config_is_refused_on_resume(tmp_path: Path) -> None:
    stop = threading.Event()
    stop.set()  # set before the run starts: nothing is done, nothing written
    config = make_config(log_dir=str(tmp_path / "run"), max_steps=4, eval_every=0)
    assert run_training(config, stop=stop, progress="off").status == "stopped"
    assert not (tmp_path / "run").exists()
    stop.clear()
    outcome = run_training(config, stop=stop, on_step=lambda row: stop.set(), progress="off")
    assert (outcome.status, outcome.steps_done) == ("stopped", 1)
    changed = make_config(log_dir=str(tmp_path / "run"), max_steps=4, eval_every=0,
                          lr=2e-3, group_size=4)
    with pytest.raises(ConfigError, match=r"group_size: 8 -> 4; lr: 0.001 -> 0.002"):
        run_training(changed, progress="off")
    # a longer run of the same config continues
    longer = make_config(log_dir=str(tmp_path / "run"), max_steps=5, eval_every=0)
    assert run_training(longer, progress="off").steps_done == 5


def test_unknown_engine_option_writes_nothing(tmp_path: Path) -> None:
    config = make_config(log_dir=str(tmp_path / "run"), engine_options={"nope": 1})
    with pytest.raises(ConfigError, match="nope"):
        run_training(config, progress="off")
    assert not (tmp_path / "run").exists()


def test_make_config_task_defaults() -> None:
    arith = make_config(log_dir="x")
    assert (arith.max_tokens, arith.lora_rank, arith.lr, arith.temperature) == (4, None, 1e-3,
                                                                                  1.0)
    math = make_config(log_dir="x", task="math")
    assert (math.max_tokens, math.lora_rank, math.lr, math.temperature) == (2048, 64, 4e-5, 0.7)
    assert make_config(log_dir="x", task="math", lora_rank=None).lora_rank is None
    with pytest.raises(ConfigError, match="did you mean 'max_steps'"):
        make_config(log_dir="x", max_step=3)
    with pytest.raises(ConfigError, match="lr must be > 0"):
        make_config(log_dir="x", lr=0.0)


@pytest.mark.parametrize("mode", ["plain", "bar"])
def test_progress_shows_live_correct_rate(tmp_path: Path, mode: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config(log_dir=str(tmp_path / "run"), max_steps=2, eval_every=2,
                         save_every=0)
    run_training(config, progress=mode)
    err = capsys.readouterr().err
    assert "correct" in err and "running" in err
    if mode == "plain":
        lines = [line for line in err.splitlines() if line.startswith("step ")]
        assert [line.split()[1] for line in lines] == ["1/2", "2/2"]
        assert "eval 0." in lines[-1] and "eta" in lines[-1]
    else:
        assert "2/2" in err


def test_bad_progress_mode_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="progress 'fancy'"):
        run_training(make_config(log_dir=str(tmp_path / "r")), progress="fancy")
    assert not (tmp_path / "r").exists()
