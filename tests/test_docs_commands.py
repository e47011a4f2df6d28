"""Every `tp` command the docs and `--help` texts show parses as written: no missing required
option (`tp train` without `--log-dir`), no unknown flag, no bad value. And the set-up and
offline notes new users need are where README sends them."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from textpolicy.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
#: pages whose commands are checked (docs/cli.md is `--help`, checked from the help itself)
PAGES = sorted([ROOT / "README.md", *(p for p in (ROOT / "docs").glob("*.md")
                                      if p.name != "cli.md")])
_START = re.compile(r"^(?:\$ )?(?:[A-Z_][A-Z0-9_]*=\S+ )*tp [a-z]")
_SHELL_ENDS = {"|", "&", ";", "&&", "||", ">", ">>", "<"}


def _commands(lines: list[str], where: str) -> Iterator[tuple[str, str]]:
    """(where, command line) of each `tp ...` line, continuation lines joined; lines inside
    ```text blocks (program output) are skipped."""
    in_text = False
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped.startswith("```"):
            in_text = not in_text and stripped == "```text"
        elif not in_text and _START.match(stripped):
            start = i + 1
            command = stripped
            while command.endswith("\\") and i + 1 < len(lines):
                i += 1
                command = command[:-1] + " " + lines[i].strip()
            yield f"{where}:{start}", command.removeprefix("$ ")
        i += 1


def _doc_commands() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for page in PAGES:
        found += _commands(page.read_text(encoding="utf-8").splitlines(),
                           str(page.relative_to(ROOT)))
    for name in ["", *COMMANDS]:
        result = CliRunner().invoke(main, [*name.split(), "--help"], prog_name="tp")
        found += _commands(result.output.splitlines(), f"tp {name} --help".replace("  ", " "))
    return found


DOC_COMMANDS = _doc_commands()


def _argv(command: str) -> list[str]:
    words = shlex.split(command, comments=True)
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        words.pop(0)  # environment assignments
    for i, word in enumerate(words):
        if word in _SHELL_ENDS:
            return words[:i]
    return words


def test_the_docs_show_commands() -> None:
    wheres = {w.split(":")[0] for w, _ in DOC_COMMANDS}
    assert {"README.md", "docs/engines.md", "docs/training.md", "tp serve --help"} <= wheres
    assert len(DOC_COMMANDS) >= 20


@pytest.mark.parametrize(("where", "command"), DOC_COMMANDS, ids=[w for w, _ in DOC_COMMANDS])
def test_documented_command_parses(where: str, command: str) -> None:
    argv = _argv(command)
    assert argv[0] == "tp" and "..." not in argv and "…" not in argv, (
        f"{where}: write the whole command: {command}")
    root = click.Context(main, info_name="tp")
    sub = main.get_command(root, argv[1])
    assert sub is not None, f"{where}: no command {argv[1]!r}"
    try:
        sub.make_context(argv[1], argv[2:], parent=root)
    except click.ClickException as exc:
        pytest.fail(f"{where}: `{command}` does not parse: {exc.format_message()}")


def test_engines_page_has_the_gpu_install_steps_readme_points_to() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "CUDA build of torch" in readme and "docs/engines.md" in readme
    engines = (ROOT / "docs" / "engines.md").read_text(encoding="utf-8")
    section = engines.split("## Installing on a GPU machine", 1)[1].split("\n## ", 1)[0]
    steps = [line for block in re.findall(r"```bash\n(.*?)```", section, re.S)
             for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert any(re.match(r"pip install torch.* --index-url https://download\.pytorch\.org/whl/cu",
                        s) for s in steps), steps
    assert any(s.startswith('pip install -e ".[dev]"') for s in steps), steps
    assert any("torch.cuda.is_available()" in s for s in steps), steps


@pytest.mark.parametrize("page", ["README.md", "docs/quickstart.md"])
def test_offline_environment_variables_are_named(page: str) -> None:
    text = (ROOT / page).read_text(encoding="utf-8")
    for var in ("HF_HUB_OFFLINE=1", "WANDB_MODE=offline", "TEXTPOLICY_CACHE_DIR"):
        assert var in text, f"{page} does not say {var}"


#: how long the quickstart takes, as docs/performance.md measured it ("Quickstart wall time")
QUICKSTART_TIME = ("≈ 50 s of CPU time: about 1 minute on 2 idle CPU cores, up to 3½ when "
                   "other jobs share them")


@pytest.mark.parametrize("page", ["README.md", "docs/quickstart.md", "examples/quickstart.toml",
                                  "docs/performance.md"])
def test_quickstart_duration_is_stated_the_same_everywhere(page: str) -> None:
    text = (ROOT / page).read_text(encoding="utf-8").replace("\n# ", "\n")
    assert QUICKSTART_TIME in " ".join(text.split()), f"{page} states another duration"
