"""Reading run directories: metrics rows, held-out eval, completion."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from textpolicy.errors import AnalysisError

METRICS = "metrics.jsonl"
EVAL = "eval.jsonl"
CHECKPOINTS = "checkpoints.jsonl"


def numbered_rows(data: bytes) -> list[dict[str, Any] | None]:
    """Item i is the JSON object on line i + 1 of ``data``, or None for a blank or unparsable
    line; the text after the last newline is a half-written line and is left out."""
    rows: list[dict[str, Any] | None] = []
    for raw in data.split(b"\n")[:-1]:
        try:
            row = json.loads(raw) if raw.strip() else None
        except ValueError:
            row = None
        rows.append(row if isinstance(row, dict) else None)
    return rows


def complete_rows(data: bytes) -> list[dict[str, Any]]:
    """The JSON objects on the complete lines of ``data`` (see :func:`numbered_rows`)."""
    return [row for row in numbered_rows(data) if row is not None]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Complete rows of a JSONL file; a half-written last line (or a missing file) is fine."""
    yield from complete_rows(_read(path))


def metrics_rows(log_dir: Path) -> list[dict[str, Any]]:
    return list(iter_jsonl(log_dir / METRICS))


def row_steps(path: Path) -> list[int]:
    """The ``step`` of every complete row of a JSONL run file; a row whose step is not an
    integer >= 0 (``"step": [1]``, a missing step) is an ``AnalysisError`` naming the file
    and the line."""
    steps = []
    for line, row in enumerate(numbered_rows(_read(path)), start=1):
        if row is None:
            continue
        step = row.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            shown = repr(step) if "step" in row else "missing"
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise AnalysisError(f"{path}: line {line}: 'step' is {shown}; allowed: an "
                                "integer >= 0 (fix or remove the run)")
        steps.append(step)
    return steps


def completed_steps(log_dir: Path) -> int:
    """Number of distinct steps in metrics.jsonl."""
    return len(set(row_steps(log_dir / METRICS)))


def is_finished(log_dir: Path, max_steps: int) -> bool:
    """Finished: metrics.jsonl holds every step 0..max_steps-1 and the run saved its final
    checkpoint (step >= max_steps in checkpoints.jsonl) — the training loop's completion
    marker, written after every other file of the run is durable."""
    steps = set(row_steps(log_dir / METRICS))
    if not set(range(max_steps)) <= steps:
        return False
    return any(int(row.get("step", -1)) >= max_steps
               for row in iter_jsonl(log_dir / CHECKPOINTS))


@attrs.frozen
class RunSummary:
    """What the sweep table and the fallback comparison need from one run."""

    steps: int
    datums: int
    correct_rate: float | None  # last step's correct rate
    running_correct_rate: float | None  # last step's running correct rate
    mean_loss: float | None
    eval_accuracy: float | None  # held-out accuracy at the final eval
    eval_step: int | None
    correct_count: int
    total_count: int


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def summarize_run(log_dir: Path) -> RunSummary:
    rows = metrics_rows(log_dir)
    losses = [v for v in (_float(r.get("loss")) for r in rows) if v is not None]
    last = rows[-1] if rows else {}
    eval_rows = list(iter_jsonl(log_dir / EVAL))
    eval_acc = eval_step = None
    if eval_rows:
        eval_step = max(int(r.get("step", 0)) for r in eval_rows)
        final = [bool(r.get("correct")) for r in eval_rows if r.get("step") == eval_step]
        eval_acc = sum(final) / len(final) if final else None
    correct = total = 0
    for row in iter_jsonl(log_dir / "emergence" / "steps.jsonl"):
        correct += int(row.get("correct_count", 0) or 0)
        total += int(row.get("total_count", 0) or 0)
    return RunSummary(
        steps=len(rows),
        datums=int(sum(int(r.get("num_datums", 0) or 0) for r in rows)),
        correct_rate=_float(last.get("correct_rate")),
        running_correct_rate=_float(last.get("running_correct_rate")),
        mean_loss=sum(losses) / len(losses) if losses else None,
        eval_accuracy=eval_acc, eval_step=eval_step,
        correct_count=correct, total_count=total,
    )
