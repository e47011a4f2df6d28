"""The files of one run directory, written crash-safely.

Every JSONL file is appended to and made durable (flush + fsync) at each step boundary; a
checkpoint row is appended to ``checkpoints.jsonl`` only after the state it points at and every
row before it are durable. Recovery after a crash (SIGKILL at any moment) takes the last
complete checkpoint row, at step k, and cuts every file back to the rows that belong before it:

* ``metrics.jsonl``, ``emergence/steps.jsonl``, ``emergence/generations.jsonl``: rows with
  ``step < k`` (training steps 0..k-1 are done);
* ``eval.jsonl``: rows with ``step <= k`` (the eval at step k, after k optimizer steps, is
  written before checkpoint k);
* every file: a trailing line without its newline (half-written) is dropped;
* no checkpoint yet: every file is emptied (the run starts again from step 0).

Rows are appended in step order, so cutting is a single ``truncate`` at the first row to drop.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from textpolicy import strictjson
from textpolicy.errors import ConfigError

CONFIG = "config.json"
METRICS = "metrics.jsonl"
STEPS = "emergence/steps.jsonl"
GENERATIONS = "emergence/generations.jsonl"
EVAL = "eval.jsonl"
CHECKPOINTS = "checkpoints.jsonl"
CHECKPOINT_DIR = "checkpoints"
STEP_FILES: tuple[str, ...] = (METRICS, STEPS, GENERATIONS)


def _default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(row: Mapping[str, Any]) -> str:
    """One JSON line (numpy scalars and arrays become plain JSON)."""
    return strictjson.dumps(row, default=_default, ensure_ascii=False)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync, rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(strictjson.dumps(data, default=_default, indent=2, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Complete rows of a JSONL file (a trailing line without newline or unparsable is left
    out). A missing file has no rows."""
    rows: list[dict[str, Any]] = []
    for _offset, row in _complete_rows(path):
        if row is None:
            break
        rows.append(row)
    return rows


def _complete_rows(path: Path) -> Iterable[tuple[int, dict[str, Any] | None]]:
    """(byte offset of the line, parsed row or None when the line is broken/incomplete)."""
    if not path.exists():
        return
    with open(path, "rb") as fh:
        offset = 0
        for raw in fh:
            if not raw.endswith(b"\n"):
                yield offset, None
                return
            try:
                row = json.loads(raw)
            except ValueError:
                yield offset, None
                return
            yield offset, row if isinstance(row, dict) else None
            offset += len(raw)


def truncate_jsonl(path: Path, keep: Callable[[dict[str, Any]], bool]) -> int:
    """Cut ``path`` at its first row that is broken or not ``keep``-ed; return rows kept."""
    if not path.exists():
        return 0
    kept = 0
    cut: int | None = None
    for offset, row in _complete_rows(path):
        if row is None or not keep(row):
            cut = offset
            break
        kept += 1
    if cut is not None:
        os.truncate(path, cut)
        with open(path, "rb+") as fh:
            os.fsync(fh.fileno())
    return kept


def _step_of(row: Mapping[str, Any]) -> int:
    step = row.get("step")
    return step if isinstance(step, int) else -1


class RunFiles:
    """Paths, recovery and durable appends for one run directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._handles: dict[str, IO[str]] = {}

    def path(self, name: str) -> Path:
        return self.root / name

    # ---- reading -------------------------------------------------------------------------
    def read_config(self) -> dict[str, Any] | None:
        path = self.path(CONFIG)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc}); move the run directory away "
                              f"or repair the file") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        return data

    def checkpoints(self) -> list[dict[str, Any]]:
        return [r for r in read_jsonl(self.path(CHECKPOINTS)) if isinstance(r.get("step"), int)]

    def last_checkpoint(self) -> dict[str, Any] | None:
        rows = self.checkpoints()
        return rows[-1] if rows else None

    def has_any_rows(self) -> bool:
        return any(self.path(n).exists() and self.path(n).stat().st_size > 0
                   for n in (*STEP_FILES, EVAL, CHECKPOINTS))

    # ---- recovery ------------------------------------------------------------------------
    def recover(self, step: int | None) -> None:
        """Cut every file back to the state of the checkpoint at ``step``; ``None`` (no
        checkpoint: a fresh start) empties every file."""
        k = -1 if step is None else step
        for name in STEP_FILES:
            truncate_jsonl(self.path(name), lambda r: _step_of(r) < k)
        truncate_jsonl(self.path(EVAL), lambda r: _step_of(r) <= k)
        truncate_jsonl(self.path(CHECKPOINTS), lambda r: _step_of(r) <= k)

    # ---- writing -------------------------------------------------------------------------
    def write_config(self, record: Mapping[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path(CONFIG), record)

    def _handle(self, name: str) -> IO[str]:
        fh = self._handles.get(name)
        if fh is None:
            path = self.path(name)
            new_dir = not path.parent.exists()
            path.parent.mkdir(parents=True, exist_ok=True)
            existed = path.exists()
            fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run
            self._handles[name] = fh
            if new_dir:
                _fsync_dir(path.parent.parent)
            if not existed:
                _fsync_dir(path.parent)
        return fh

    def append(self, name: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append rows (made durable by the next ``sync``)."""
        fh = self._handle(name)
        fh.write("".join(dumps(r) + "\n" for r in rows))

    def sync(self) -> None:
        """Flush and fsync every file written since the last sync."""
        for fh in self._handles.values():
            fh.flush()
            os.fsync(fh.fileno())

    def append_checkpoint(self, row: Mapping[str, Any]) -> None:
        """Make everything else durable, then append and fsync the checkpoint row."""
        self.sync()
        fh = self._handle(CHECKPOINTS)
        fh.write(dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())

    def close(self) -> None:
        for fh in self._handles.values():
            try:
                fh.flush()
                os.fsync(fh.fileno())
            finally:
                fh.close()
        self._handles.clear()


def fsync_tree(path: str | os.PathLike[str]) -> None:
    """fsync every file (and directory) under a local path; a no-op for remote paths."""
    root = Path(path)
    if not root.exists():
        return
    if root.is_file():
        with open(root, "rb") as fh:
            os.fsync(fh.fileno())
        _fsync_dir(root.parent)
        return
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with open(Path(dirpath) / name, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(Path(dirpath))
    _fsync_dir(root.parent)
