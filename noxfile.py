"""nox sessions: tests, lint, typecheck (CI runs README's test command through .ci/run)."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "virtualenv"
nox.options.sessions = ["tests", "lint", "typecheck"]

INSTALL = ("torch==2.13.0", "-e", ".[dev]")


@nox.session
def tests(session: nox.Session) -> None:
    session.install(*INSTALL)
    session.run("python", "-m", "pytest", "-n", "2", *session.posargs,
                env={"WANDB_MODE": "offline"})


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "src", "plugins", "tests", "benchmarks")
    session.run("ruff", "format", "--check", "src", "plugins") if session.posargs else None


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install(*INSTALL)
    session.run("mypy")
