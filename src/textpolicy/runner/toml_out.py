"""A small TOML writer for the spec files textpolicy writes (the recommended campaign spec).

Handles what specs hold: strings, numbers, booleans, arrays of scalars, tables and arrays of
tables. ``None`` values are left out (TOML has no null).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"cannot write {value!r} to TOML")
        text = repr(value)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Sequence):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_scalar(v)}" for k, v in value.items()
                                if v is not None) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _is_table_array(value: Any) -> bool:
    return (isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 0
            and all(isinstance(v, Mapping) for v in value))


def dumps(data: Mapping[str, Any], header: Sequence[str] = ()) -> str:
    lines = [f"# {h}" for h in header]
    _table(lines, data, ())
    return "\n".join(lines).strip() + "\n"


def _table(lines: list[str], data: Mapping[str, Any], path: tuple[str, ...]) -> None:
    scalars = {k: v for k, v in data.items() if v is not None and not (
        isinstance(v, Mapping) or _is_table_array(v))}
    for key, value in scalars.items():
        lines.append(f"{_key(key)} = {_scalar(value)}")
    for key, value in data.items():
        if isinstance(value, Mapping):
            if not value:
                continue
            sub = (*path, key)
            if any(not isinstance(v, Mapping) and v is not None for v in value.values()):
                lines.append("")
                lines.append("[" + ".".join(_key(p) for p in sub) + "]")
            _table(lines, value, sub)
        elif _is_table_array(value):
            sub = (*path, key)
            for item in value:
                lines.append("")
                lines.append("[[" + ".".join(_key(p) for p in sub) + "]]")
                flat = {k: v for k, v in item.items() if not isinstance(v, Mapping)}
                nested = {k: v for k, v in item.items() if isinstance(v, Mapping)}
                for k, v in flat.items():
                    if v is not None:
                        lines.append(f"{_key(k)} = {_scalar(v)}")
                for k, v in nested.items():
                    if v:
                        lines.append(f"{_key(k)} = {_scalar(v)}")
