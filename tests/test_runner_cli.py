"""`--help` of every command; docs/cli.md and docs/specs.md are generated and current."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from textpolicy.cli import COMMANDS, main

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("command", [[], *[[name] for name in COMMANDS]],
                         ids=lambda c: " ".join(["tp", *c]))
def test_help_of_every_command(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")
    short = CliRunner().invoke(main, [*command, "-h"])
    assert short.output == result.output


@pytest.mark.parametrize("command,flags", [
    ("sweep", {"--sweep-root": None, "--probe-steps": "20", "--model": None, "--base-url": None,
               "--lora-rank": None, "--batch-size": "4", "--group-size": "16",
               "--max-tokens": None, "--temperature": None,
               "--lr-values": "5e-5,2e-4,5e-4,1e-3", "--algorithms": "grpo,full",
               "--sepa-steps": None, "--sepa-schedule": None, "--sepa-delay-steps": None,
               "--sepa-correct-rate-gate": None}),
    ("campaign", {"--campaign-root": None, "--execute": None, "--continue-on-error": None,
                  "--model": None, "--base-url": None, "--lora-rank": None,
                  "--max-steps": "100", "--batch-size": "4", "--group-size": "8",
                  "--max-tokens": None, "--temperature": None, "--lr": None,
                  "--baseline-lr": None, "--candidate-lr": None, "--max-examples": None,
                  "--save-every": "20", "--gtpo-beta": None, "--hicra-alpha": None,
                  "--sepa-steps": None, "--sepa-schedule": None, "--sepa-delay-steps": None,
                  "--sepa-correct-rate-gate": None, "--alpha": "0.05",
                  "--resamples": "20000"}),
    ("follow", {"--metrics-path": None, "--project": "textpolicy-tinker", "--entity": None,
                "--run-name": None, "--group": None, "--poll-seconds": "5.0",
                "--idle-timeout-seconds": "600.0", "--no-follow": None}),
])
def test_seed_document_flags_and_defaults(command: str, flags: dict[str, str | None]) -> None:
    import click

    cmd = main.get_command(click.Context(main), command)
    assert cmd is not None
    options = {opt: p for p in cmd.params for opt in p.opts}
    for flag, default in flags.items():
        assert flag in options, flag
        if default is not None:
            assert str(options[flag].default) == default, flag


def _cli_doc_sections() -> dict[str, str]:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    return {title.strip(): body for title, body in
            re.findall(r"^## (tp(?: [a-z-]+)?)\n\n```text\n(.*?)\n```$", text, re.S | re.M)}


@pytest.mark.parametrize("command", [[], *[[name] for name in COMMANDS]],
                         ids=lambda c: " ".join(["tp", *c]))
def test_docs_cli_shows_what_help_prints(command: list[str]) -> None:
    """Each section of docs/cli.md is what `tp ... --help` really prints (defaults included),
    at the page's fixed width."""
    from textpolicy.cli.run_cmd import CLI_REFERENCE_WIDTH

    result = CliRunner().invoke(main, [*command, "--help"], prog_name="tp",
                                terminal_width=CLI_REFERENCE_WIDTH,
                                max_content_width=CLI_REFERENCE_WIDTH)
    assert result.exit_code == 0, result.output
    sections = _cli_doc_sections()
    title = " ".join(["tp", *command])
    assert title in sections, f"docs/cli.md has no section {title!r}"
    assert sections[title] == result.output.rstrip("\n"), (
        "docs/cli.md is stale; regenerate: python -c \"from textpolicy.cli.run_cmd import "
        "render_cli_reference as r; print(r(), end='')\" > docs/cli.md")


def test_docs_cli_has_no_other_sections() -> None:
    assert set(_cli_doc_sections()) == {"tp", *(f"tp {name}" for name in COMMANDS)}


def test_docs_specs_is_current() -> None:
    from textpolicy.runner.reference import render

    assert (DOCS / "specs.md").read_text(encoding="utf-8") == render(), (
        "regenerate: python -m textpolicy.runner.reference > docs/specs.md")


def test_every_spec_key_is_documented() -> None:
    import attrs

    from textpolicy.runner.reference import SECTIONS

    text = (DOCS / "specs.md").read_text(encoding="utf-8")
    for _title, cls in SECTIONS:
        for field in attrs.fields(cls):
            assert field.metadata.get("doc"), f"{cls.__name__}.{field.name} has no doc"
            assert f"| `{field.name}` |" in text
