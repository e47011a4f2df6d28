"""Resume checks: a run continues from the checkpoint at step k only when its files hold exactly
what that checkpoint needs.

* ``checkpoints.jsonl``: every complete line an intact row matching its checksum
  (``row_sha256``), steps strictly increasing. Only a
  torn final line (no newline: a crash mid-write) is dropped silently; any other damage is
  refused — never read as "no checkpoint" (a restart) or as an earlier one (a silent
  rollback).
* ``metrics.jsonl``, ``emergence/steps.jsonl``: one row per step 0..k-1, in order;
  ``emergence/generations.jsonl``: ``batch_size * group_size`` rows per step 0..k-1, in order.
  Rows of steps >= k (written after the checkpoint, before a crash) are dropped.
* ``eval.jsonl``: every eval due before k (each multiple of ``eval_every``) complete, in order;
  the eval at k complete or absent (then it is run again; an incomplete one, left by a crash
  during a resume's first eval, is dropped); rows of later steps are dropped.
* With ``save_every > 0``, rows of a step at or after the next due checkpoint mean the index
  lost that checkpoint's row: refused.

A refusal is one line naming the file and the missing or damaged rows, changes nothing, and
names the checkpoint to roll back to with ``--restart-from-step N`` (``restart_from`` of
:func:`~textpolicy.training.run_training`): the latest checkpoint whose rows are all intact, or
0 (start over). Rolling back is only ever done when asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from textpolicy.errors import ConfigError, RunDamagedError
from textpolicy.training.config import TrainConfig
from textpolicy.training.runfiles import (
    CHECKPOINTS,
    EVAL,
    GENERATIONS,
    METRICS,
    STEPS,
    RunFiles,
    Scan,
    scan_jsonl,
    seal_intact,
)

RESTART_FLAG = "--restart-from-step"


@attrs.frozen
class Expected:
    """How many rows a run writes: per training step in each step file, per eval."""

    per_step: Mapping[str, int]
    eval_every: int
    eval_rows: int
    save_every: int


@attrs.frozen
class Recovery:
    """Where a session starts: the checkpoint row (None: step 0) and the byte offset each file
    is cut back to before anything is written."""

    checkpoint: dict[str, Any] | None
    cuts: tuple[tuple[str, int], ...]

    @property
    def step(self) -> int:
        return int(self.checkpoint["step"]) if self.checkpoint else 0


def expected_rows(config: TrainConfig, eval_examples: int) -> Expected:
    """What a run of ``config`` writes, with ``eval_examples`` held-out prompts."""
    per = config.batch_size * config.group_size
    return Expected(per_step={METRICS: 1, STEPS: 1, GENERATIONS: per},
                    eval_every=config.eval_every, eval_rows=eval_examples * config.eval_samples,
                    save_every=config.save_every)


def _ranges(steps: Any) -> str:
    """``0-3, 7, 9-12`` (sorted, distinct)."""
    values = sorted({int(v) for v in steps})
    parts: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ", ".join(parts)


def _counted(steps: Any) -> str:
    """``step 4`` / ``steps 20-39``."""
    values = sorted({int(v) for v in steps})
    return f"{'step' if len(values) == 1 else 'steps'} {_ranges(values)}"


def _damage(scan: Scan) -> str:
    return f"line {scan.damaged_line} is not an intact row (a JSON object with an integer step)"


def _step_file(scan: Scan, k: int, per: int, strict: bool) -> tuple[str | None, int]:
    """(problem, cut offset) of a step file against the checkpoint at ``k``. ``strict``: a
    damaged line anywhere is a problem (else only where it hides rows before ``k``)."""
    if strict and scan.damaged_line is not None:
        return _damage(scan), 0
    steps = np.asarray(scan.steps, dtype=np.int64)
    late = steps >= k
    before = int(np.argmax(late)) if late.any() else len(steps)
    head = steps[:before]
    if (steps[before:] < k).any():  # a step of the checkpoint's past appears again later
        again = np.unique(steps[before:][steps[before:] < k])
        return f"rows of {_counted(again)} appear again after rows of later steps", 0
    if (head < 0).any():
        return f"holds rows of negative steps {_ranges(np.unique(head[head < 0]))}", 0
    counts = np.bincount(head, minlength=k)[:k]
    missing = np.flatnonzero(counts == 0)
    if missing.size:
        hidden = " (after a damaged line)" if scan.damaged_line is not None else ""
        return f"rows of {_counted(missing)} are missing{hidden}", 0
    short = np.flatnonzero(counts < per)
    if short.size:
        return f"{_counted(short)} {'has' if short.size == 1 else 'have'} fewer than {per} rows", 0
    extra = np.flatnonzero(counts > per)
    if extra.size:
        times = "once" if per == 1 else f"{per} times"
        return f"rows of {_counted(extra)} appear more than {times}", 0
    if (np.diff(head) < 0).any():
        return "rows are out of step order", 0
    return None, scan.offsets[before] if before < len(scan.offsets) else scan.end


def _eval_file(scan: Scan, k: int, exp: Expected, strict: bool) -> tuple[str | None, int]:
    """(problem, cut offset) of eval.jsonl against the checkpoint at ``k``."""
    if strict and scan.damaged_line is not None:
        return _damage(scan), 0
    steps = np.asarray(scan.steps, dtype=np.int64)
    late = steps > k
    upto = int(np.argmax(late)) if late.any() else len(steps)
    if (steps[upto:] <= k).any():
        again = np.unique(steps[upto:][steps[upto:] <= k])
        return f"rows of the eval at {_counted(again)} appear again after later ones", 0
    head = steps[:upto]
    if (np.diff(head) < 0).any():
        return "rows are out of step order", 0
    present, counts = np.unique(head, return_counts=True)
    due = np.arange(0, k, exp.eval_every)
    missing = np.setdiff1d(due, present)
    if missing.size:
        return f"the rows of the eval at {_counted(missing)} are missing", 0
    wrong = present[(counts != exp.eval_rows) & (present < k)]
    if wrong.size:
        return f"the eval at {_counted(wrong)} does not have its {exp.eval_rows} rows", 0
    at_k = int(counts[present == k].sum())
    cut_at = upto - at_k if at_k not in (0, exp.eval_rows) else upto  # cut short: run again
    return None, scan.offsets[cut_at] if cut_at < len(scan.offsets) else scan.end


def _file_problems(files: RunFiles, scans: Mapping[str, Scan], k: int, exp: Expected,
                   *, strict: bool) -> tuple[list[tuple[str, str]], list[tuple[str, int]]]:
    """Problems of the run files against the checkpoint at ``k`` and, without problems, the
    cut of each file. ``strict``: damaged lines anywhere and a lost checkpoint row are
    problems too (a rollback, asked for, discards what comes after ``k``)."""
    problems: list[tuple[str, str]] = []
    cuts: list[tuple[str, int]] = []
    names = [*exp.per_step, *([EVAL] if exp.eval_every > 0 else [])]
    for name in names:
        problem, end = (_eval_file(scans[name], k, exp, strict) if name == EVAL
                        else _step_file(scans[name], k, exp.per_step[name], strict))
        if problem:
            problems.append((name, problem))
        else:
            cuts.append((name, end))
    if strict and exp.save_every > 0 and not problems:
        due = (k // exp.save_every + 1) * exp.save_every
        for name in names:
            last = max(scans[name].steps, default=-1)
            if last >= due + (1 if name == EVAL else 0):
                have = f"ends at step {k}" if k else "holds no checkpoint"
                problems.append((CHECKPOINTS, (
                    f"{have}, but {files.path(name)} holds rows up to step {last}, after the "
                    f"checkpoint due at step {due}: checkpoint rows are missing")))
                break
    return problems, cuts


def _refusal(files: RunFiles, problems: list[tuple[str, str]], needs: str,
             rollback: int) -> RunDamagedError:
    name, problem = problems[0]
    more = f" (and problems in {len(problems) - 1} more files)" if len(problems) > 1 else ""
    if rollback == 0:
        way = (f"to start the run over (every row is discarded), run the same command with "
               f"{RESTART_FLAG} 0")
    else:
        way = (f"to roll back to the checkpoint at step {rollback} (later rows and "
               f"checkpoints are discarded), run the same command with {RESTART_FLAG} "
               f"{rollback}")
    return RunDamagedError(f"{files.path(name)}: {problem}{more}; {needs}; nothing was "
                           f"changed; {way}")


def _index_cut(index: Scan, keep: int) -> int:
    """Where checkpoints.jsonl is cut to keep its first ``keep`` rows."""
    if keep == 0:
        return 0
    return index.offsets[keep] if keep < len(index.offsets) else index.end


def plan_recovery(files: RunFiles, exp: Expected, *,
                  restart_from: int | None = None) -> Recovery:
    """Check the run's files and return where to start; :class:`RunDamagedError` (nothing
    changed) when they do not match the checkpoint (see the module docstring)."""
    index = scan_jsonl(files.path(CHECKPOINTS), keep_rows=True)
    rows = list(index.rows)
    changed = next((i for i, r in enumerate(rows) if not seal_intact(r)), None)
    back = next((i for i in range(1, len(rows)) if rows[i]["step"] <= rows[i - 1]["step"]),
                None)
    bad = min((i for i in (changed, back) if i is not None), default=None)
    if bad is not None:  # a changed row or one going back in step order: keep those before
        rows = rows[:bad]
    intact = [int(r["step"]) for r in rows]
    scans = {name: scan_jsonl(files.path(name)) for name in (*exp.per_step, EVAL)}

    def rollback_to(limit: int) -> int:
        for step in [s for s in reversed(intact) if 0 < s <= limit]:
            if not _file_problems(files, scans, step, exp, strict=False)[0]:
                return step
        return 0

    if restart_from is not None:
        if restart_from != 0 and restart_from not in intact:
            known = ", ".join(map(str, intact)) or "none"
            raise ConfigError(f"{RESTART_FLAG} {restart_from}: {files.path(CHECKPOINTS)} has "
                              f"no intact checkpoint at that step (intact checkpoints: "
                              f"{known}; 0 starts the run over)")
        k = restart_from
        if k == 0:
            return Recovery(None, tuple((name, 0) for name in (*scans, CHECKPOINTS)))
        problems, cuts = _file_problems(files, scans, k, exp, strict=False)
        if problems:
            raise _refusal(files, problems, f"the checkpoint at step {k} needs the rows of "
                           f"steps 0-{k - 1}", rollback_to(k - 1))
        keep = intact.index(k) + 1
        return Recovery(rows[keep - 1], (*cuts, (CHECKPOINTS, _index_cut(index, keep))))

    if index.damaged_line is not None or bad is not None:
        line = index.damaged_line if bad is None else bad + 1
        what = ("is not an intact row" if bad is None
                else "was changed after it was written (its checksum does not match)"
                if bad == changed else "goes back in step order (a second writer?)")
        last = intact[-1] if intact else None
        needs = (f"the last intact checkpoint before it is at step {last}" if last is not None
                 else "no intact checkpoint comes before it")
        raise _refusal(files, [(CHECKPOINTS, f"line {line} {what}")], needs,
                       rollback_to(last) if last is not None else 0)
    k = intact[-1] if intact else 0
    problems, cuts = _file_problems(files, scans, k, exp, strict=True)
    if problems:
        needs = (f"the checkpoint at step {k} needs the rows of steps 0-{k - 1}" if k
                 else "the run has no checkpoint yet")
        raise _refusal(files, problems, needs, rollback_to(k))
    return Recovery(rows[-1] if rows else None, (*cuts, (CHECKPOINTS, index.end)))


def apply_recovery(files: RunFiles, recovery: Recovery) -> None:
    """Cut every file back as planned (the only writes a resume makes before training)."""
    for name, offset in recovery.cuts:
        files.cut(name, offset)
