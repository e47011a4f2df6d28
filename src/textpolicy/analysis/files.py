"""Writing an analysis's output files: each one whole or not at all (temp file + rename)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def write_texts(out_dir: Path, files: Mapping[str, str]) -> dict[str, Path]:
    """Write ``name → text`` into ``out_dir`` (created), each atomically; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, text in files.items():
        path = out_dir / name
        tmp = path.with_name(name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        written[name] = path
    return written
