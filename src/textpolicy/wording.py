"""Counts in printed text: ``1 seed``, ``2 seeds``."""

from __future__ import annotations


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``count`` with ``noun`` (singular at 1, else ``nouns``, by default ``noun + "s"``)."""
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"
