"""Structural checks math-verify gets wrong (grading.md, "traps"): decided here, as strings.

- Base subscripts: math-verify ignores ``_7`` in ``1200_7``, so a gold answer written in a
  base is compared by digits and base, never numerically.
- Factorials: ``1/2004!`` and ``1/2005!`` both evaluate to ≈ 0; when both sides use
  factorials their arguments must agree.
- Answer lists: ``70,110`` (two solutions) parses as the number 70110; list golds are
  re-spaced (``70, 110``) so math-verify compares them as sets.
"""

from __future__ import annotations

import re

from textpolicy.grading.normalize import split_top_level, unwrap_text

_BASE = re.compile(r"^(?P<sign>-?)(?P<digits>[0-9A-Za-z]+(?:\.[0-9A-Za-z]+)?)"
                   r"_\{?(?P<base>\d+)\}?$")
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_FACTORIAL = re.compile(r"(\d+|[A-Za-z])\s*!(?!\w)")


def _clean(s: str) -> str:
    s = unwrap_text(s)
    for token in ("\\$", "$", "\\!", "\\,", "\\ ", " ", "{,}"):
        s = s.replace(token, "")
    return s.rstrip(".")


def parse_base_number(s: str, *, strict: bool = True) -> tuple[str, str, str | None] | None:
    """``(sign, DIGITS, base)`` of ``1200_7``/``\\text{A5}_{11}``; base None for bare digits;
    None when ``s`` is not a (based) numeral (``strict``: letter digits must be upper-case,
    which keeps ``x_1`` from being read as a numeral)."""
    c = _clean(s)
    m = _BASE.match(c)
    if m:
        digits, base = m.group("digits"), int(m.group("base"))
        if not strict:
            digits = digits.upper()
        # a numeral in base b: 2 <= b <= 36, upper-case letter digits, every digit < b
        if not 2 <= base <= 36 or any(ch.islower() for ch in digits):
            return None
        if any(int(ch, 36) >= base for ch in digits if ch != "."):
            return None
        return m.group("sign"), digits.lstrip("0") or "0", m.group("base")
    m = re.match(r"^(-?)([0-9A-Za-z]+(?:\.[0-9A-Za-z]+)?)$", c)
    if m and any(ch.isdigit() for ch in m.group(2)):
        return m.group(1), m.group(2).upper().lstrip("0") or "0", None
    return None


def is_base_gold(gold: str) -> bool:
    parsed = parse_base_number(gold)
    return parsed is not None and parsed[2] is not None


def base_equal(given: str, gold: str) -> bool:
    """Digits and base compared as strings; a given answer without a base (the problem
    named it) is accepted when its digits match."""
    g = parse_base_number(gold)
    a = parse_base_number(given, strict=False)
    if g is None or a is None:
        return False
    if a[2] is not None and a[2] != g[2]:
        return False
    return a[0] == g[0] and a[1] == g[1]


def factorial_mismatch(given: str, gold: str) -> bool:
    """True when both sides use factorials but of different arguments."""
    g = sorted(_FACTORIAL.findall(gold.replace("\\!", "")))
    a = sorted(_FACTORIAL.findall(given.replace("\\!", "")))
    return bool(g) and bool(a) and g != a


def looks_like_thousands(s: str) -> bool:
    return bool(_THOUSANDS.match(_clean(s)))


def is_list_answer(gold: str) -> bool:
    """A gold answer with a top-level comma that is not a thousands-separated number."""
    return len(split_top_level(gold)) > 1 and not looks_like_thousands(gold)


def respace_list(s: str) -> str:
    """``70,110`` → ``70, 110`` (top-level commas only)."""
    parts = [p.strip() for p in split_top_level(s.replace("\\!", ""))]
    return ", ".join(p for p in parts if p)


def drop_thousands(s: str) -> str:
    """``10,879`` → ``10879`` when the whole answer is a thousands-separated number."""
    return _clean(s).replace(",", "") if looks_like_thousands(s) else s
