"""Strict JSON out: every JSON file and JSON answer textpolicy writes parses with any strict
parser (RFC 8259 has no ``NaN`` / ``Infinity`` tokens, which Python's ``json`` writes by
default). A non-finite float becomes ``null``; numpy scalars and arrays become plain JSON."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from typing import Any


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (also inside numpy arrays, lists, tuples and
    mappings) replaced by None and numpy values made plain Python."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bool | int | str) or value is None:
        return value
    np = sys.modules.get("numpy")  # not imported: no numpy values can exist (keeps CLI fast)
    if np is not None and isinstance(value, np.ndarray):
        return finite(value.tolist())
    if np is not None and isinstance(value, np.generic):
        return finite(value.item())
    if isinstance(value, Mapping):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`finite` ``(value)`` with ``allow_nan=False``."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)
