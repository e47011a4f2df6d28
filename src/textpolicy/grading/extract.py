"""Final-answer extraction: the last ``\\boxed{...}`` (or ``\\fbox{...}``) of a text."""

from __future__ import annotations

import re

_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BARE_ARG = re.compile(r"[^\s$]+")


def matching_brace(text: str, open_at: int) -> int | None:
    """Index of the ``}`` that closes the ``{`` at ``open_at`` (``\\{``/``\\}`` are literal)."""
    depth = 0
    i = open_at
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2  # an escaped character (``\{``, ``\}``, ``\\``) never opens or closes
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def extract_boxed(text: str) -> str | None:
    """Return the content of the last ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``.

    Braces are matched (nested braces kept). ``\\boxed 5`` (no braces) gives the following
    run of non-space characters without a trailing full stop. ``None`` when there is no box
    or the last box is never closed (a truncated completion).
    """
    last = None
    for last in _BOX.finditer(text):  # noqa: B007 - we want the final match
        pass
    if last is None:
        return None
    i = last.end()
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        close = matching_brace(text, i)
        if close is None:
            return None
        return text[i + 1 : close].strip()
    bare = _BARE_ARG.match(text, i)
    if bare is None:
        return None
    value = bare.group(0).rstrip(".,;")
    return value or None
