"""Synthetic campaigns in the exact run-directory format (for tests, docs and benchmarks).

Each run draws from a hierarchical logistic model: ``logit p = base + slope·step + effect_arm
+ u_seed + e_run + b_prompt (+ c_run×prompt for eval)``. Seed s shares ``u_seed``, the training
prompt order and the eval prompts across arms (the paired design). Files follow
docs/training.md "Files"; nothing here is used by the analysis itself.

``sigma_arm_prompt`` adds an arm × eval-prompt interaction whose population mean is exactly 0
on the accuracy scale: each arm's eval-prompt effects are ``ρ·b + √(1 − ρ²)·z_arm`` (``z_arm``
drawn per arm, ρ = 1 − τ²/(2σ²_prompt), so SD(b_arm − b) = τ). Every arm's prompt effects then
have the same N(0, σ²_prompt) law, so averaged over the prompt population no arm is better,
yet on a given eval set the arms differ prompt by prompt. ``simulate_eval_units`` returns the
per-prompt endpoint accuracies ``write_run`` would write, without writing files (the same
draws), for calibration studies.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from scipy.special import expit

from textpolicy import strictjson


@attrs.frozen
class SyntheticDesign:
    steps: int = 12
    batch_size: int = 4
    group_size: int = 8
    eval_every: int = 4  # 0: no eval.jsonl
    eval_prompts: int = 50
    eval_samples: int = 4
    train_prompts: int = 500
    base_logit: float = -0.6
    slope: float = 0.03
    sigma_seed: float = 0.1  # shared by the arms of a seed pair
    sigma_run: float = 0.1  # run-specific
    sigma_prompt: float = 1.5
    sigma_int: float = 0.3
    sigma_arm_prompt: float = 0.0  # arm × eval-prompt interaction (population mean 0)
    generations: bool = True
    completion_chars: int = 120
    binary_rewards: bool = True
    #: probability that sample j of an eval prompt uses the same uniform in every arm of a seed
    #: (the shared eval sampling seeds of real runs); 0: independent samples
    eval_rho: float = 0.0
    #: MATH-style eval prompt ids ``test/<subject>/<m>.json`` cycling through these subjects
    #: (empty: ``math500/<m>``)
    eval_subjects: tuple[str, ...] = ()


def _dumps(row: Mapping[str, Any]) -> str:
    return strictjson.dumps(row, ensure_ascii=False)


@attrs.frozen(eq=False)
class _RunDraws:
    order: np.ndarray  # [steps, B] training prompt indices
    correct: np.ndarray  # [steps, B, G]
    reward: np.ndarray  # [steps, B, G]
    eval_steps: list[int]
    eval_hits: np.ndarray | None  # [eval steps, M, K]


def _eval_prompt_effects(d: SyntheticDesign, arm: str, data_seed: int) -> np.ndarray:
    b = np.random.default_rng([data_seed, 10**6]).normal(0, d.sigma_prompt, size=d.eval_prompts)
    tau = d.sigma_arm_prompt
    if tau <= 0:
        return b
    if tau > 2 * d.sigma_prompt:
        raise ValueError(f"sigma_arm_prompt must be <= 2 * sigma_prompt, got {tau}")
    rho = 1.0 - tau * tau / (2.0 * d.sigma_prompt ** 2)
    z = np.random.default_rng([data_seed, 10**6, _stable(arm)]).normal(
        0, d.sigma_prompt, size=d.eval_prompts)
    return np.asarray(rho * b + math.sqrt(1.0 - rho * rho) * z)


def _draw_run(*, arm: str, seed: int, effect: float, design: SyntheticDesign,
              data_seed: int) -> _RunDraws:
    """Every random number of one run, in a fixed order (``write_run`` writes them)."""
    d = design
    shared = np.random.default_rng([data_seed, seed])  # same for every arm of this seed
    own = np.random.default_rng([data_seed, seed, _stable(arm)])
    u = shared.normal(0, d.sigma_seed)
    e = own.normal(0, d.sigma_run)
    train_b = shared.normal(0, d.sigma_prompt, size=d.train_prompts)
    eval_b = _eval_prompt_effects(d, arm, data_seed)
    order = shared.integers(0, d.train_prompts, size=(d.steps, d.batch_size))
    steps = np.arange(d.steps)
    logit = (d.base_logit + d.slope * steps[:, None] + effect + u + e + train_b[order])
    p = expit(logit)  # [steps, B]
    correct = own.random((d.steps, d.batch_size, d.group_size)) < p[:, :, None]
    if d.binary_rewards:
        reward = correct.astype(np.float64)
    else:
        reward = correct * 1.0 + own.choice([0.0, 0.1], size=correct.shape)
    eval_steps: list[int] = []
    hits = None
    if d.eval_every > 0:
        eval_steps = sorted(set(range(0, d.steps + 1, d.eval_every)) | {d.steps})
        inter = own.normal(0, d.sigma_int, size=(len(eval_steps), d.eval_prompts))
        hits = np.empty((len(eval_steps), d.eval_prompts, d.eval_samples), dtype=bool)
        for i, s in enumerate(eval_steps):
            pe = expit(d.base_logit + d.slope * s + effect + u + e + eval_b + inter[i])
            draw = own.random((d.eval_prompts, d.eval_samples))
            if d.eval_rho > 0:  # shared sampling seeds: the same uniforms in every arm
                coupled = np.random.default_rng([data_seed, seed, 7, s])
                same = coupled.random(draw.shape)
                draw = np.where(coupled.random(draw.shape) < d.eval_rho, same, draw)
            hits[i] = draw < pe[:, None]
    return _RunDraws(order, correct, reward, eval_steps, hits)


def simulate_eval_units(*, arms: Mapping[str, float], seeds: Sequence[int],
                        design: SyntheticDesign, data_seed: int = 0) -> dict[str, np.ndarray]:
    """Per-arm ``[len(seeds), eval_prompts]`` held-out accuracies at the final eval step:
    exactly what ``write_campaign`` with the same arguments writes (and the analysis reads)."""
    if design.eval_every <= 0:
        raise ValueError("design has no eval (eval_every=0)")
    out = {}
    for name, effect in arms.items():
        rows = [_draw_run(arm=name, seed=s, effect=effect, design=design,
                          data_seed=data_seed).eval_hits for s in seeds]
        out[name] = np.stack([h[-1].mean(axis=-1) for h in rows if h is not None])
    return out


def simulate_campaigns(*, effect: float, seeds: int, campaigns: int, design: SyntheticDesign,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Many independent A/B campaigns of the model ``write_run`` samples, vectorised over
    campaigns: (baseline, candidate) final-eval accuracies, each ``[campaigns, seeds, M]``.

    Same terms as ``_draw_run`` at the final eval step (u_seed shared by a pair, e_run,
    fresh eval prompts b per campaign with the arm × prompt interaction of
    ``sigma_arm_prompt``, c_run×prompt, K Bernoulli samples), drawn from ``rng`` in bulk
    rather than from per-run streams — for calibration studies of thousands of campaigns.
    """
    d = design
    m, k = d.eval_prompts, d.eval_samples
    shape = (campaigns, seeds, 1)
    b = rng.normal(0, d.sigma_prompt, size=(campaigns, 1, m))
    prompt = [b, b]
    if d.sigma_arm_prompt > 0:
        rho = 1.0 - d.sigma_arm_prompt ** 2 / (2.0 * d.sigma_prompt ** 2)
        prompt = [rho * b + math.sqrt(1 - rho * rho) * rng.normal(0, d.sigma_prompt,
                                                                  size=(campaigns, 1, m))
                  for _ in range(2)]
    u = rng.normal(0, d.sigma_seed, size=shape)
    base = d.base_logit + d.slope * d.steps
    out = []
    for arm, eff in enumerate((0.0, effect)):
        e = rng.normal(0, d.sigma_run, size=shape)
        c = rng.normal(0, d.sigma_int, size=(campaigns, seeds, m))
        p = expit(base + eff + u + e + prompt[arm] + c)
        out.append(rng.binomial(k, p) / k)
    return out[0], out[1]


def write_run(path: Path, *, arm: str, seed: int, effect: float, design: SyntheticDesign,
              data_seed: int = 0, pipeline: str = "grpo", record_seed: bool = True) -> Path:
    """Write one run directory (config, metrics, emergence/{steps,generations}, eval)."""
    d = design
    path.mkdir(parents=True, exist_ok=True)
    (path / "emergence").mkdir(exist_ok=True)
    draws = _draw_run(arm=arm, seed=seed, effect=effect, design=d, data_seed=data_seed)
    order, correct, reward = draws.order, draws.correct, draws.reward
    steps = np.arange(d.steps)
    n = d.batch_size * d.group_size
    ccount = correct.reshape(d.steps, -1).sum(axis=1)
    mean_reward = reward.reshape(d.steps, -1).mean(axis=1)
    config: dict[str, Any] = {
        "config": {"log_dir": str(path), "pipeline": pipeline, "max_steps": d.steps,
                   "lr": 4e-5, "task": "synthetic", "batch_size": d.batch_size,
                   "group_size": d.group_size, "eval_every": d.eval_every,
                   "eval_samples": d.eval_samples, "condition": arm},
        "condition": arm, "model": "synthetic-logistic", "pipeline": {"name": pipeline},
        "task": {"name": "synthetic"}, "versions": {}, "engine": {"name": "synthetic"},
        "started_at": "2026-01-01"}
    if record_seed:
        config["seed"] = seed
        config["config"]["seed"] = seed
    (path / "config.json").write_text(strictjson.dumps(config, indent=2) + "\n", encoding="utf-8")
    running = np.cumsum(ccount) / (n * (steps + 1))
    with open(path / "metrics.jsonl", "w", encoding="utf-8") as fh:
        for t in range(d.steps):
            fh.write(_dumps({
                "step": t, "loss": float(0.5 - 0.01 * t), "mean_reward": float(mean_reward[t]),
                "correct_rate": float(ccount[t] / n), "running_correct_rate": float(running[t]),
                "max_token_hit_rate": 0.05, "sepa_lambda": min(1.0, t / max(1, d.steps - 1)),
                "sepa_gate_open": 1.0, "num_datums": n, "step_time_s": 1.0, "condition": arm,
                "lr": 4e-5, "mean_completion_tokens": 100.0, "planning_token_share": 0.1,
                "credit_moved_share": 0.0}) + "\n")
    with open(path / "emergence" / "steps.jsonl", "w", encoding="utf-8") as fh:
        for t in range(d.steps):
            fh.write(_dumps({"step": t, "mean_reward": float(mean_reward[t]),
                             "correct_count": int(ccount[t]), "total_count": n,
                             "condition": arm}) + "\n")
    if d.generations:
        filler = ("Let x be the unknown. " * (d.completion_chars // 22 + 1))[:d.completion_chars]
        with open(path / "emergence" / "generations.jsonl", "w", encoding="utf-8") as fh:
            lines = []
            for t in range(d.steps):
                for b in range(d.batch_size):
                    pid = f"train/{int(order[t, b])}"
                    for g in range(d.group_size):
                        ok = bool(correct[t, b, g])
                        lines.append(_dumps({
                            "step": t, "prompt_id": pid, "prompt": f"Problem {pid}: solve.",
                            "completion": filler + (" \\boxed{1}" if ok else " \\boxed{2}"),
                            "reward": float(reward[t, b, g]), "num_tokens": 40,
                            "metadata": {"correctness": ok, "group": b, "sample": g,
                                         "stop_reason": "stop"}}))
            fh.write("\n".join(lines) + "\n")
    if draws.eval_hits is not None:
        ids = ([f"test/{d.eval_subjects[m % len(d.eval_subjects)]}/{m}.json"
                for m in range(d.eval_prompts)] if d.eval_subjects else
               [f"math500/{m}" for m in range(d.eval_prompts)])
        lines = []
        for i, s in enumerate(draws.eval_steps):
            hits = draws.eval_hits[i]
            for m in range(d.eval_prompts):
                for k in range(d.eval_samples):
                    lines.append(f'{{"step": {s}, "prompt_id": "{ids[m]}", "sample": {k}, '
                                 f'"correct": {"true" if hits[m, k] else "false"}}}')
        (path / "eval.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _stable(name: str) -> int:
    import zlib

    return zlib.crc32(name.encode())


def write_campaign(root: str | os.PathLike[str], *, arms: Mapping[str, float],
                   seeds: Sequence[int] = (0, 1, 2, 3), design: SyntheticDesign | None = None,
                   baseline: str | None = None, data_seed: int = 0,
                   manifest: bool = True) -> Path:
    """A campaign directory: ``<root>/<arm>/seed<s>/`` runs and (optionally) manifest.json.

    ``arms`` maps arm names to logit effects (the first arm is the baseline unless given).
    """
    design = design or SyntheticDesign()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    names = list(arms)
    baseline = baseline or names[0]
    rows = []
    for name in names:
        runs = []
        for s in seeds:
            rel = f"{name}/seed{s}"
            write_run(root / rel, arm=name, seed=s, effect=arms[name], design=design,
                      data_seed=data_seed, pipeline="grpo" if name == baseline else "full")
            runs.append({"seed": s, "log_dir": rel})
        rows.append({"name": name, "role": "baseline" if name == baseline else "candidate",
                     "pipeline": "grpo" if name == baseline else "full", "lr": 4e-5,
                     "runs": runs})
    if manifest:
        (root / "manifest.json").write_text(strictjson.dumps({
            "kind": "campaign", "baseline": baseline, "arms": rows, "alpha": 0.05,
            "resamples": 2000, "analysis_seed": 0, "commands": [], "versions": {}},
            indent=2) + "\n", encoding="utf-8")
    return root


def logit_effect_for(pp: float, p0: float = 0.5) -> float:
    """The logit shift that moves accuracy ``p0`` by ``pp`` percentage points."""
    p1 = p0 + pp / 100
    return math.log(p1 / (1 - p1)) - math.log(p0 / (1 - p0))
