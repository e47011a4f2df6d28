"""One progress display for a whole sweep or campaign.

A rich live table on a terminal (runs done/total, the current step of every running run, the
overall ETA); plain one-line messages otherwise (run started / every 10% of a run / run
ended), so logs under ``nohup`` stay readable. The ETA is the remaining steps divided by the
steps per second measured in this session.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from textpolicy.wording import plural


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Display:
    """Thread-safe progress of many runs. ``mode``: auto | rich | plain | off."""

    def __init__(self, title: str, *, mode: str = "auto", stream: TextIO | None = None) -> None:
        self.title = title
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            mode = "rich" if getattr(self.stream, "isatty", lambda: False)() else "plain"
        self.mode = mode
        self._lock = threading.Lock()
        self._runs: dict[str, dict[str, Any]] = {}
        self._order: list[str] = []
        self._t0 = time.monotonic()
        self._session_steps = 0
        self._live: Any = None

    # -------------------------------------------------------------- lifecycle
    def start(self, keys: list[str], max_steps: dict[str, int]) -> None:
        with self._lock:
            for key in keys:
                self._order.append(key)
                self._runs[key] = {"state": "pending", "step": 0, "max": max_steps[key],
                                   "last": ""}
        if self.mode == "rich":
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self.stream)
            self._live = Live(self._render(), console=console, refresh_per_second=4,
                              transient=False)
            self._live.start()
        elif self.mode == "plain":
            self._line(f"{self.title}: {plural(len(keys), 'run')}, "
                       f"{plural(sum(max_steps.values()), 'step')}")

    def close(self) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()
            self._live = None

    # -------------------------------------------------------------- events
    def run_state(self, key: str, state: str, *, step: int | None = None,
                  note: str = "") -> None:
        with self._lock:
            run = self._runs[key]
            run["state"] = state
            if step is not None:
                run["step"] = step
            run["last"] = note
        if self.mode == "plain" and state != "pending":
            done, total = self._counts()
            extra = f" ({note})" if note else ""
            self._line(f"[{done}/{total}] {key}: {state} at step {self._runs[key]['step']}/"
                       f"{self._runs[key]['max']}{extra}")
        self._refresh()

    def run_step(self, key: str, step: int, row: dict[str, Any] | None = None) -> None:
        with self._lock:
            run = self._runs[key]
            advanced = max(0, step - run["step"])
            self._session_steps += advanced
            run["step"] = step
            if row is not None:
                rc = row.get("running_correct_rate")
                if isinstance(rc, (int, float)):
                    run["last"] = f"running correct {rc:.1%}"
            every = max(1, run["max"] // 10)
            report = self.mode == "plain" and (step % every == 0) and step < run["max"]
        if report:
            self._line(f"  {key}: step {step}/{run['max']} {run['last']}  ETA {_eta(self.eta())}")
        self._refresh()

    # -------------------------------------------------------------- helpers
    def _counts(self) -> tuple[int, int]:
        done = sum(1 for r in self._runs.values()
                   if r["state"] in ("finished", "skipped", "failed"))
        return done, len(self._runs)

    def eta(self) -> float | None:
        elapsed = time.monotonic() - self._t0
        if self._session_steps == 0 or elapsed <= 0:
            return None
        remaining = sum(max(0, r["max"] - r["step"]) for r in self._runs.values()
                        if r["state"] not in ("failed", "skipped"))
        return remaining / (self._session_steps / elapsed)

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def _render(self) -> Any:
        from rich.table import Table

        with self._lock:
            done, total = self._counts()
            table = Table(title=f"{self.title} — runs {done}/{total} done — ETA "
                          f"{_eta(self.eta())}", expand=False)
            table.add_column("run")
            table.add_column("state")
            table.add_column("step", justify="right")
            table.add_column("")
            running = [k for k in self._order if self._runs[k]["state"] == "running"]
            recent = [k for k in self._order if self._runs[k]["state"] != "pending"
                      and k not in running][-4:]
            for key in [*recent, *running]:
                r = self._runs[key]
                table.add_row(key, r["state"], f"{r['step']}/{r['max']}", r["last"])
            pending = total - done - len(running)
            if pending > 0:
                table.add_row(f"… {pending} pending", "", "", "")
        return table
