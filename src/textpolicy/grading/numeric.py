"""Exact comparison of plain numbers (integers, decimals, ``\\frac{a}{b}``, ``a/b``).

When both answers are plain rational literals the verdict is exact arithmetic: equal
fractions are equal; when a decimal is involved, values equal to 10 decimal places are equal
(the same convention as math-verify's ``float_rounding=10``). This path decides (accepts AND
rejects) in microseconds, and only for inputs that have no other reading.
"""

from __future__ import annotations

import re
from fractions import Fraction

from textpolicy.grading.normalize import strip_trailing_text_unit

_NUM = r"-?(?:\d+(?:\.\d*)?|\.\d+)"
_PLAIN = re.compile(rf"^(?P<n>{_NUM})$")
_FRAC = re.compile(r"^(?P<s>-?)\\[dt]?frac\{(?P<a>-?\d+)\}\{(?P<b>-?\d+)\}$")
_SLASH = re.compile(r"^(?P<a>-?\d+)/(?P<b>-?\d+)$")
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_X_EQ = re.compile(r"^[A-Za-z]\s*=\s*")


def parse_rational(s: str) -> tuple[Fraction, bool] | None:
    """``(value, has_decimal_point)`` of a plain number, or None."""
    t = strip_trailing_text_unit(s.strip())
    for token in ("\\!", "\\,", "\\$", "$", "\\left", "\\right", " "):
        t = t.replace(token, "")
    t = _X_EQ.sub("", t)
    while t.startswith("(") and t.endswith(")") and t.count("(") == 1:
        t = t[1:-1]
    neg = False
    if t.startswith("-(") and t.endswith(")") and t.count("(") == 1:
        neg, t = True, t[2:-1]
    if _THOUSANDS.match(t):
        t = t.replace(",", "")
    value: Fraction | None = None
    decimal = False
    m = _PLAIN.match(t)
    if m:
        value, decimal = Fraction(m.group("n")), "." in t
    elif (m := _FRAC.match(t)) or (m := _SLASH.match(t)):
        b = int(m.group("b"))
        if b == 0:
            return None
        value = Fraction(int(m.group("a")), b)
        if m.groupdict().get("s"):
            value = -value
    if value is None:
        return None
    return (-value if neg else value), decimal


def numbers_equal(given: str, gold: str) -> bool | None:
    """True/False when both are plain numbers, None otherwise."""
    a = parse_rational(given)
    b = parse_rational(gold)
    if a is None or b is None:
        return None
    if a[1] or b[1]:
        return round(float(a[0]), 10) == round(float(b[0]), 10) or a[0] == b[0]
    return a[0] == b[0]
