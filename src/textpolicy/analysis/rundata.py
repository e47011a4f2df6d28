"""Reading one run directory into numpy arrays (files only; no training code involved).

A run directory holds some of: ``config.json``, ``metrics.jsonl``, ``emergence/steps.jsonl``,
``emergence/generations.jsonl``, ``eval.jsonl`` (formats in docs/training.md
"Files"). Only what the analysis uses is read: ``generations.jsonl`` is opened only when rewards
are not binary (see ``RunData.rewards``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from functools import cached_property
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np

from textpolicy.analysis.jsonl import column, read_json, read_jsonl
from textpolicy.analysis.records import AnalysisWarning, FloatArray
from textpolicy.errors import AnalysisError

METRIC_KEYS: tuple[str, ...] = (
    "loss", "mean_reward", "correct_rate", "running_correct_rate", "max_token_hit_rate",
    "sepa_lambda", "sepa_gate_open", "num_datums", "step_time_s", "lr",
    "mean_completion_tokens", "planning_token_share", "credit_moved_share")


class EvalData:
    """Held-out eval rows of one run aggregated per (step, prompt): correct counts and samples.

    ``prompt_ids`` are strings (ints are converted), ``steps`` ascending.
    ``correct[i, j]`` / ``samples[i, j]`` for step ``steps[i]`` and prompt ``prompt_ids[j]``;
    ``samples == 0`` where that prompt was not evaluated at that step.
    """

    def __init__(self, steps: np.ndarray, prompt_ids: list[str], correct: np.ndarray,
                 samples: np.ndarray) -> None:
        self.steps = steps
        self.prompt_ids = prompt_ids
        self.correct = correct
        self.samples = samples

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]], path: Path) -> EvalData:
        step = column(rows, "step", path, dtype=np.int64)
        correct = column(rows, "correct", path, dtype=np.float64)
        if ((correct != 0) & (correct != 1)).any():
            raise AnalysisError(f"{path}: 'correct' must be true/false (or 0/1)")
        try:
            raw_ids = list(map(itemgetter("prompt_id"), rows))
        except KeyError:
            raise AnalysisError(f"{path}: a row has no 'prompt_id' key") from None
        try:
            raw_index = {p: i for i, p in enumerate(dict.fromkeys(raw_ids))}
        except TypeError:
            raise AnalysisError(f"{path}: prompt_id must be a string or number") from None
        codes = np.fromiter(map(raw_index.__getitem__, raw_ids), dtype=np.int64,
                            count=len(raw_ids))
        index = {str(p): i for p, i in raw_index.items()}
        if len(index) != len(raw_index):
            raise AnalysisError(f"{path}: prompt ids collide when written as text (e.g. 1 and "
                                "'1')")
        if "sample" in rows[0]:
            sample = column(rows, "sample", path, dtype=np.int64)
            # a repeated (step, prompt, sample) is a duplicate row (e.g. a resumed eval)
            key = (step * (len(index) + 1) + codes) * (int(sample.max()) + 1) + sample
            _, first_from_end = np.unique(key[::-1], return_index=True)
            if len(first_from_end) != len(key):
                warnings.warn(f"{path}: {len(key) - len(first_from_end)} duplicate eval rows; "
                              "the last of each is used", AnalysisWarning, stacklevel=2)
                keep = np.sort(len(key) - 1 - first_from_end)
                step, codes, correct = step[keep], codes[keep], correct[keep]
        steps, step_idx = np.unique(step, return_inverse=True)
        shape = (len(steps), len(index))
        flat = step_idx * len(index) + codes
        n = np.bincount(flat, minlength=shape[0] * shape[1]).reshape(shape)
        c = np.bincount(flat, weights=correct, minlength=shape[0] * shape[1]).reshape(shape)
        return cls(steps, list(index), c, n)


class RunData:
    """One run directory, read lazily and cached. Raises ``AnalysisError`` on bad input."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise AnalysisError(f"run directory {self.path} does not exist")
        if not self.path.is_dir():
            raise AnalysisError(f"{self.path} is not a directory")
        has_any = any((self.path / name).is_file() for name in (
            "metrics.jsonl", "emergence/steps.jsonl", "eval.jsonl"))
        if not has_any:
            raise AnalysisError(
                f"{self.path}: not a run directory (no metrics.jsonl, emergence/steps.jsonl "
                "or eval.jsonl)")

    # ---- config ------------------------------------------------------------------------
    @cached_property
    def config(self) -> dict[str, Any]:
        path = self.path / "config.json"
        return read_json(path) if path.is_file() else {}

    @property
    def seed(self) -> int | None:
        value = self.config.get("seed")
        if value is None:
            value = (self.config.get("config") or {}).get("seed")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise AnalysisError(f"{self.path / 'config.json'}: seed must be an integer, "
                                f"got {value!r}")
        return value

    @property
    def condition(self) -> str:
        cond = self.config.get("condition")
        if not cond and self.metrics_rows:
            cond = self.metrics_rows[0].get("condition")
        return str(cond or self.path.name)

    @property
    def pipeline(self) -> str | None:
        cfg = self.config.get("config") or {}
        value = cfg.get("pipeline")
        return str(value) if value else None

    # ---- metrics.jsonl -------------------------------------------------------------------
    @cached_property
    def metrics_rows(self) -> list[dict[str, Any]]:
        path = self.path / "metrics.jsonl"
        return read_jsonl(path) if path.is_file() else []

    @cached_property
    def metrics(self) -> dict[str, np.ndarray]:
        """Numeric metric columns present in every row (NaN allowed: descriptive only)."""
        rows = self.metrics_rows
        path = self.path / "metrics.jsonl"
        if not rows:
            return {}
        out: dict[str, np.ndarray] = {
            "step": column(rows, "step", path, dtype=np.int64)}
        for key in METRIC_KEYS:
            if all(key in row and row[key] is not None for row in rows):
                try:
                    out[key] = column(rows, key, path, require_finite=False)
                except AnalysisError:
                    continue
        return out

    # ---- emergence/steps.jsonl -----------------------------------------------------------
    @cached_property
    def step_counts(self) -> dict[str, np.ndarray] | None:
        """Per-step ``step``, ``correct``, ``total``, ``mean_reward`` (None if no data)."""
        path = self.path / "emergence" / "steps.jsonl"
        if path.is_file():
            rows = read_jsonl(path)
            if rows:
                step = column(rows, "step", path, dtype=np.int64)
                correct = column(rows, "correct_count", path)
                total = column(rows, "total_count", path)
                reward = column(rows, "mean_reward", path)
                if (total <= 0).any() or (correct < 0).any() or (correct > total).any():
                    raise AnalysisError(f"{path}: correct_count must lie in [0, total_count] "
                                        "and total_count must be > 0")
                return _dedupe_steps(path, {"step": step, "correct": correct,
                                            "total": total, "mean_reward": reward})
        return None

    @property
    def rewards_binary(self) -> bool:
        """True when each step's mean reward equals its correct rate (reward = correctness)."""
        counts = self.step_counts
        if counts is None:
            return True
        return bool(np.allclose(counts["mean_reward"], counts["correct"] / counts["total"],
                                rtol=0.0, atol=1e-9))

    def rewards(self, steps: np.ndarray | None = None) -> FloatArray:
        """Every training reward from ``emergence/generations.jsonl`` (optionally only rows
        whose step is in ``steps``)."""
        path = self.path / "emergence" / "generations.jsonl"
        if not path.is_file():
            raise AnalysisError(f"{path}: missing (needed for the reward permutation test)")
        rows = read_jsonl(path)
        if not rows:
            raise AnalysisError(f"{path}: no rows")
        reward = column(rows, "reward", path)
        if steps is not None:
            step = column(rows, "step", path, dtype=np.int64)
            reward = reward[np.isin(step, steps)]
        return reward

    # ---- eval.jsonl --------------------------------------------------------------------
    @cached_property
    def eval(self) -> EvalData | None:
        path = self.path / "eval.jsonl"
        if not path.is_file():
            return None
        rows = read_jsonl(path)
        if not rows:
            return None
        return EvalData.from_rows(rows, path)

    def __repr__(self) -> str:
        return f"RunData({str(self.path)!r})"


def _dedupe_steps(path: Path, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    step = cols["step"]
    uniq, first_from_end = np.unique(step[::-1], return_index=True)
    if len(uniq) == len(step) and (np.diff(step) > 0).all():
        return cols
    if len(uniq) != len(step):
        warnings.warn(f"{path}: {len(step) - len(uniq)} repeated steps; the last row of each "
                      "is used", AnalysisWarning, stacklevel=3)
    keep = np.sort(len(step) - 1 - first_from_end)
    order = np.argsort(step[keep], kind="stable")
    return {k: v[keep][order] for k, v in cols.items()}


def load_runs(paths: Sequence[str | os.PathLike[str]], *, what: str) -> list[RunData]:
    """``RunData`` for each path; an empty list is an error naming ``what``."""
    if not paths:
        raise AnalysisError(f"no run directories given for {what}")
    runs = [RunData(p) for p in paths]
    seen: dict[Path, int] = {}
    for run in runs:
        key = run.path.resolve()
        if key in seen:
            raise AnalysisError(f"run directory {run.path} is listed twice ({what})")
        seen[key] = 1
    return runs
