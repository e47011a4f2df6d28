"""Progress display of a training run, on stderr.

``bar``: a rich progress bar with the live correct rate, the running correct rate, the last
held-out pass@1 and the ETA (the default when stderr is a terminal). ``plain``: one line every
``max(1, max_steps // 20)`` steps and at the end (the default otherwise, e.g. under ``nohup``).
``off``: nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, Protocol

from textpolicy.wording import plural

PROGRESS_MODES: tuple[str, ...] = ("auto", "bar", "plain", "off")


class Reporter(Protocol):
    def start(self, *, total: int, done: int, description: str) -> None: ...

    def update(self, row: Mapping[str, Any]) -> None: ...

    def note(self, message: str) -> None: ...

    def close(self) -> None: ...


def _fmt(row: Mapping[str, Any], key: str, spec: str = ".3f") -> str:
    value = row.get(key)
    return format(value, spec) if isinstance(value, (int, float)) else "-"


class NullReporter:
    def start(self, *, total: int, done: int, description: str) -> None:
        pass

    def update(self, row: Mapping[str, Any]) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def close(self) -> None:
        pass


class PlainReporter:
    """Periodic one-line summaries (safe for log files)."""

    def __init__(self, stream: Any = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._total = 0
        self._done0 = 0
        self._every = 1
        self._t0 = time.monotonic()
        self._eval = "-"

    def start(self, *, total: int, done: int, description: str) -> None:
        self._total, self._done0 = total, done
        self._every = max(1, total // 20)
        self._t0 = time.monotonic()
        where = (f"resuming at step {done} of {total}" if done
                 else f"starting, {plural(total, 'step')}")
        self.note(f"{description}: {where}")

    def update(self, row: Mapping[str, Any]) -> None:
        step = int(row["step"]) + 1
        if "eval_pass@1" in row:
            self._eval = _fmt(row, "eval_pass@1")
        if "final_eval_pass@1" in row:
            self._eval = _fmt(row, "final_eval_pass@1")
        if step % self._every and step != self._total:
            return
        elapsed = time.monotonic() - self._t0
        rate = elapsed / max(1, step - self._done0)
        eta = rate * (self._total - step)
        self.note(
            f"step {step}/{self._total} correct {_fmt(row, 'correct_rate')} "
            f"running {_fmt(row, 'running_correct_rate')} eval {self._eval} "
            f"loss {_fmt(row, 'loss', '.4g')} datums {row.get('num_datums', '-')} "
            f"{_fmt(row, 'step_time_s', '.2f')}s/step eta {eta:.0f}s")

    def note(self, message: str) -> None:
        print(message, file=self._stream, flush=True)

    def close(self) -> None:
        pass


class BarReporter:
    """A rich progress bar with live metrics."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=12),
            MofNCompleteColumn(),
            TextColumn("correct {task.fields[correct]} running {task.fields[running]} "
                       "eval {task.fields[eval]}"),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self._console,
        )
        self._task: Any = None

    def start(self, *, total: int, done: int, description: str) -> None:
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, completed=done,
                                             correct="-", running="-", eval="-")

    def update(self, row: Mapping[str, Any]) -> None:
        fields: dict[str, Any] = {"correct": _fmt(row, "correct_rate", ".2f"),
                                  "running": _fmt(row, "running_correct_rate", ".2f")}
        for key in ("final_eval_pass@1", "eval_pass@1"):
            if key in row:
                fields["eval"] = _fmt(row, key, ".2f")
                break
        self._progress.update(self._task, completed=int(row["step"]) + 1, **fields)

    def note(self, message: str) -> None:
        self._progress.console.print(message, markup=False, highlight=False)

    def close(self) -> None:
        self._progress.stop()


def make_reporter(mode: str) -> Reporter:
    """``auto`` → bar on a terminal, plain lines otherwise."""
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "plain"
    if mode == "bar":
        return BarReporter()
    if mode == "plain":
        return PlainReporter()
    return NullReporter()
