"""Fast, strict-but-forgiving JSONL reading for run files.

Rows are parsed with ``orjson`` in one call per file when possible (the whole file as one JSON
array), falling back to line-by-line parsing to locate problems. A last line without its
newline that does not parse (a writer killed mid-row) is dropped with an ``AnalysisWarning``;
a broken line anywhere else is an ``AnalysisError`` naming the file and line. ``NaN`` literals
(which Python's ``json`` writes for float('nan')) are accepted here; the caller rejects NaN in
the fields it uses (``require_finite``).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np

from textpolicy.analysis.records import AnalysisWarning
from textpolicy.errors import AnalysisError

try:  # orjson ships with tinker; the json module is the (slower) fallback
    import orjson

    _loads: Any = orjson.loads
    _DecodeError: Any = orjson.JSONDecodeError
except ImportError:  # pragma: no cover - orjson is a dependency of tinker
    _loads = json.loads
    _DecodeError = ValueError


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All rows of ``path`` (blank lines skipped). See the module docstring for repairs."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AnalysisError(f"{path}: cannot read ({exc.strerror or exc})") from None
    payload = data.strip()
    if not payload:
        return []
    truncated_tail = not data.endswith(b"\n")
    try:  # fast path: the whole file as one JSON array (blank lines make it fail -> slow path)
        rows = _loads(b"[" + payload.replace(b"\n", b",") + b"]")
    except (_DecodeError, ValueError):
        rows = _slow_parse(path, data.split(b"\n"), truncated_tail)
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise AnalysisError(f"{path}: row {i + 1} is not a JSON object")
    return rows


def _slow_parse(path: Path, lines: list[bytes], truncated_tail: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    last = len(lines) - 1
    while last >= 0 and not lines[last].strip():
        last -= 1
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = _loads(line)
        except (_DecodeError, ValueError):
            try:
                row = json.loads(line)  # accepts NaN / Infinity literals
            except ValueError:
                if number - 1 == last and truncated_tail:
                    warnings.warn(
                        f"{path}: last line {number} is incomplete (truncated write); ignored",
                        AnalysisWarning, stacklevel=3)
                    break
                raise AnalysisError(
                    f"{path}:{number}: not valid JSON: {line[:80]!r}") from None
        rows.append(row)
    return rows


def column(rows: Sequence[dict[str, Any]], key: str, path: Path, *, dtype: Any = np.float64,
           default: Any = None, require_finite: bool = True) -> np.ndarray:
    """``rows[i][key]`` as an array; a missing key is an error unless ``default`` is given."""
    try:
        if default is None:
            values = list(map(itemgetter(key), rows))
        else:
            values = [row.get(key, default) for row in rows]
    except KeyError:
        missing = next(i for i, row in enumerate(rows) if key not in row)
        raise AnalysisError(f"{path}: row {missing + 1} has no {key!r} key") from None
    try:
        arr = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim != 1:  # also [[1], [2]]: a column of lists, not of numbers
        i = next((i for i, v in enumerate(values) if not isinstance(v, (int, float, bool))), 0)
        shown = repr(values[i])
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise AnalysisError(f"{path}: line {i + 1}: key {key!r} holds {shown}, not a number")
    if require_finite and arr.dtype.kind == "f" and not np.isfinite(arr).all():
        i = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise AnalysisError(f"{path}: row {i + 1} has {key}={values[i]!r} (NaN/inf is not a "
                            "valid value; fix or remove the run)")
    return arr


def read_json(path: Path) -> dict[str, Any]:
    """One JSON object (config.json, manifest.json)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AnalysisError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise AnalysisError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise AnalysisError(f"{path}: expected a JSON object")
    return data


def isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
