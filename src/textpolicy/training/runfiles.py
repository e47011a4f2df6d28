"""The files of one run directory, written crash-safely.

Every JSONL file is appended to and made durable (flush + fsync) at each step boundary; a
checkpoint row is appended to ``checkpoints.jsonl`` only after the state it points at and every
row before it are durable. Before a session continues from the checkpoint at step k,
:mod:`textpolicy.training.integrity` checks every file against it (rows of steps 0..k-1
exactly, an intact checkpoint index) and only then cuts each file back to the rows that
belong before it:

* ``metrics.jsonl``, ``emergence/steps.jsonl``, ``emergence/generations.jsonl``: rows with
  ``step < k`` (training steps 0..k-1 are done);
* ``eval.jsonl``: rows with ``step <= k`` (the eval at step k, after k optimizer steps, is
  written before checkpoint k);
* every file: a trailing line without its newline (half-written) is dropped;
* no checkpoint yet: every file is emptied (the run starts again from step 0).

Rows are appended in step order, so cutting is a single ``truncate`` at the first row to drop.
No file of a run may be a symbolic link (nothing is read or written through one), and files
are opened with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import attrs
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


#: the key of a checkpoint row's checksum: the SHA-256 (16 hex digits) of the row's JSON line
#: without it, so a row changed after it was written (and still valid JSON) is detected.
ROW_DIGEST = "row_sha256"


def _digest(row: Mapping[str, Any]) -> str:
    body = {k: v for k, v in row.items() if k != ROW_DIGEST}
    return hashlib.sha256(dumps(body).encode("utf-8")).hexdigest()[:16]


def sealed(row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` with its checksum (``ROW_DIGEST``) as the last key."""
    body = {k: v for k, v in row.items() if k != ROW_DIGEST}
    return {**json.loads(dumps(body)), ROW_DIGEST: _digest(body)}


def seal_intact(row: Mapping[str, Any]) -> bool:
    """Whether a parsed row matches its checksum (rows written without one pass)."""
    digest = row.get(ROW_DIGEST)
    return digest is None or digest == _digest(row)


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
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a leftover (or a planted link) is removed, never written through
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    with open(fd, "w", encoding="utf-8") as fh:
        fh.write(strictjson.dumps(data, default=_default, indent=2, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Complete rows of a JSONL file, up to the first line that is broken or incomplete. A
    missing file has no rows. (Files whose integrity matters are checked with
    :func:`scan_jsonl` first.)"""
    rows: list[dict[str, Any]] = []
    if not path.exists():
        return rows
    with open(path, "rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                break
            try:
                row = json.loads(raw)
            except ValueError:
                break
            if not isinstance(row, dict):
                break
            rows.append(row)
    return rows


@attrs.frozen
class Scan:
    """What a run's JSONL file holds, line by line.

    Attributes:
        steps: the ``step`` of each intact row (a JSON object with an integer ``step`` on a
            complete line), in file order, up to the first damaged line.
        offsets: the byte offset at which each of those rows' line starts.
        end: the byte offset just after the last intact row.
        damaged_line: the 1-based number of the first complete line that is not an intact
            row (None: none is).
        torn: the file ends in a line without its newline (a write cut short by a crash).
        rows: the parsed rows (only when asked for).
    """

    steps: tuple[int, ...]
    offsets: tuple[int, ...]
    end: int
    damaged_line: int | None = None
    torn: bool = False
    rows: tuple[dict[str, Any], ...] = ()


def scan_jsonl(path: Path, *, keep_rows: bool = False) -> Scan:
    """Scan a run file (a missing file is empty); see :class:`Scan`."""
    steps: list[int] = []
    offsets: list[int] = []
    rows: list[dict[str, Any]] = []
    offset = 0
    damaged: int | None = None
    torn = False
    if path.exists():
        with open(path, "rb") as fh:
            for number, raw in enumerate(fh, start=1):
                if not raw.endswith(b"\n"):
                    torn = True
                    break
                try:
                    row = json.loads(raw)
                except ValueError:
                    row = None
                step = row.get("step") if isinstance(row, dict) else None
                if row is None or not isinstance(step, int) or isinstance(step, bool):
                    damaged = number
                    break
                steps.append(step)
                offsets.append(offset)
                if keep_rows:
                    rows.append(row)
                offset += len(raw)
    return Scan(steps=tuple(steps), offsets=tuple(offsets), end=offset,
                damaged_line=damaged, torn=torn, rows=tuple(rows))


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

    def has_any_rows(self) -> bool:
        return any(self.path(n).exists() and self.path(n).stat().st_size > 0
                   for n in (*STEP_FILES, EVAL, CHECKPOINTS))

    def check_links(self) -> None:
        """Refuse a run whose files or folders are symbolic links (a resume would read or
        write through them, outside the run). The run directory itself may be a link."""
        names = [CONFIG, CONFIG + ".tmp", *STEP_FILES, EVAL, CHECKPOINTS, "emergence",
                 CHECKPOINT_DIR]
        states = self.path(CHECKPOINT_DIR)
        if states.is_dir() and not states.is_symlink():
            names += [f"{CHECKPOINT_DIR}/{p.name}" for p in sorted(states.iterdir())]
        for name in names:
            path = self.path(name)
            if path.is_symlink():
                raise ConfigError(
                    f"{path} is a symbolic link (to {os.readlink(path)}); a run's files must "
                    f"be its own: replace the link by a copy of its target, or use another "
                    f"--log-dir")

    def cut(self, name: str, offset: int) -> None:
        """Truncate ``name`` to ``offset`` bytes (durably); a no-op when it is not longer."""
        path = self.path(name)
        if not path.exists() or path.stat().st_size <= offset:
            return
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, offset)
            os.fsync(fd)
        finally:
            os.close(fd)

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
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o644)
            fh = open(fd, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run
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
        fh.write(dumps(sealed(row)) + "\n")
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
