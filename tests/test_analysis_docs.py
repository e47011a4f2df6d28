"""docs/statistics.md's runnable example runs and prints a recommendation."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "statistics.md"


def test_statistics_doc_example_runs() -> None:
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "docs/statistics.md has no python example"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[0], str(DOC), "exec"), {})
    printed = out.getvalue()
    assert re.search(r"^(significant_improvement|not_significant|significant_regression|"
                     r"insufficient_seeds) seeds_prompts ", printed, flags=re.M)
    assert "seed pairs needed at 2 pp:" in printed
