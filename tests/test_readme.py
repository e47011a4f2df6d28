"""README.md: exactly two set-up commands, and its Python example runs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def test_setup_has_two_commands_install_then_test() -> None:
    setup = README.read_text().split("## Set up", 1)[1].split("##", 1)[0]
    commands = [line for block in re.findall(r"```bash\n(.*?)```", setup, flags=re.S)
                for line in block.splitlines() if line.strip()]
    assert len(commands) == 2
    assert commands[0].startswith("pip install") and "torch==2.13.0" in commands[0]
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[0] in ci and commands[1] in ci


def test_python_example_runs() -> None:
    (code,) = _blocks("python")
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    result = namespace["result"]
    np.testing.assert_allclose(result.episode_advantages,  # type: ignore[attr-defined]
                               [3, -1, -1, -1, 1 / 3, 1 / 3, 1 / 3, -1], atol=1e-4)
