"""String normalisations behind the grader's fast accept paths and math-verify inputs.

``hendrycks_normalize`` follows the published rules of the MATH paper's answer normaliser
(Hendrycks et al. 2021), written afresh: drop line breaks, ``\\!``, ``\\left``/``\\right``,
degree marks, dollar signs, trailing ``\\text{ unit}`` and percent signs; ``\\dfrac``/``\\tfrac``
→ ``\\frac``; a leading ``.`` gets a zero; a short ``x =`` prefix is removed; ``\\sqrt3`` →
``\\sqrt{3}``; spaces removed; ``\\frac12`` → ``\\frac{1}{2}``; ``0.5`` → ``\\frac{1}{2}``;
``a/b`` of two integers → ``\\frac{a}{b}``. ``text_normalize`` additionally unwraps text
commands, drops unit words and lower-cases. Both only ever serve to ACCEPT (equal strings
are equal answers); unequal strings go on to math-verify.
"""

from __future__ import annotations

import re

from textpolicy.grading.extract import matching_brace

_TEXT_CMDS = ("text", "textbf", "textit", "textrm", "mbox", "mathrm", "mathbf", "textnormal",
              "operatorname")
_TEXT_CMD_RE = re.compile(r"\\(?:" + "|".join(_TEXT_CMDS) + r")\s*\{")
_INT = re.compile(r"^-?\d+$")
_SHORT_LHS = re.compile(r"^\s*[A-Za-z]{1,2}(?:_\{?\w\}?)?\s*$")


def _read_arg(s: str, i: int) -> tuple[str, int] | None:
    """One TeX argument at ``s[i:]`` (after spaces): ``{...}``, ``\\cmd`` or one char."""
    n = len(s)
    while i < n and s[i] == " ":
        i += 1
    if i >= n:
        return None
    if s[i] == "{":
        close = matching_brace(s, i)
        if close is None:
            return None
        return s[i + 1 : close], close + 1
    if s[i] == "\\":
        m = re.match(r"\\[A-Za-z]+", s[i:])
        if m:
            return m.group(0), i + m.end()
        return s[i : i + 2], i + 2
    if s[i] in "}^_":
        return None
    return s[i], i + 1


def fix_fracs_and_sqrt(s: str) -> str:
    """Brace the arguments of ``\\frac``/``\\dfrac``/``\\tfrac``/``\\sqrt``:
    ``\\frac \\pi4`` → ``\\frac{\\pi}{4}``, ``\\frac12`` → ``\\frac{1}{2}``, ``\\sqrt2`` →
    ``\\sqrt{2}``. Anything it cannot read is left as it is."""
    out: list[str] = []
    i = 0
    n = len(s)
    while i < n:
        m = re.compile(r"\\(d|t)?frac(?![A-Za-z])|\\sqrt(?![A-Za-z])").search(s, i)
        if m is None:
            out.append(s[i:])
            break
        out.append(s[i : m.start()])
        j = m.end()
        if m.group(0).startswith("\\sqrt"):
            # optional [n] index
            index = ""
            k = j
            while k < n and s[k] == " ":
                k += 1
            if k < n and s[k] == "[":
                end = s.find("]", k)
                if end != -1:
                    index = s[k : end + 1]
                    j = end + 1
            arg = _read_arg(s, j)
            if arg is None:
                out.append(m.group(0) + index)
                i = j
                continue
            out.append("\\sqrt" + index + "{" + fix_fracs_and_sqrt(arg[0]) + "}")
            i = arg[1]
            continue
        a = _read_arg(s, j)
        b = _read_arg(s, a[1]) if a is not None else None
        if a is None or b is None:
            out.append(m.group(0))
            i = j
            continue
        out.append("\\frac{" + fix_fracs_and_sqrt(a[0]) + "}{" + fix_fracs_and_sqrt(b[0]) + "}")
        i = b[1]
    return "".join(out)


def unwrap_text(s: str) -> str:
    """``\\text{abc}`` (and ``\\mbox``, ``\\mathrm``, ...) → ``abc``."""
    while True:
        m = _TEXT_CMD_RE.search(s)
        if m is None:
            return s
        open_at = m.end() - 1
        close = matching_brace(s, open_at)
        if close is None:
            return s
        s = s[: m.start()] + s[open_at + 1 : close] + s[close + 1 :]


_TRAILING_TEXT = re.compile(
    r"^(?P<body>.*?\S)\s*\\(?:text|mbox|textrm|mathrm)\s*\{(?P<unit>\s*[A-Za-z][A-Za-z .]*)\}"
    r"(?P<pow>\s*\^\s*\{?\d\}?)?\s*$", re.S)


def strip_trailing_text_unit(s: str) -> str:
    """``15\\text{ cm}^2`` → ``15``; a lone ``\\text{(C)}`` or a text-only answer stays."""
    m = _TRAILING_TEXT.match(s.strip())
    if m is None:
        return s
    body = m.group("body")
    if _TEXT_CMD_RE.search(body) and not re.search(r"[\d}]", body):
        return s
    return body


def split_top_level(s: str, sep: str = ",") -> list[str]:
    """Split at ``sep`` outside (), [], {} (``\\{``/``\\}`` count as brackets too)."""
    parts: list[str] = []
    depth = 0
    start = 0
    i = 0
    while i < len(s):
        ch = s[i]
        if ch == "\\" and i + 1 < len(s):
            if s[i + 1] in "{}":
                depth += 1 if s[i + 1] == "{" else -1
            i += 2
            continue
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(s[start:i])
            start = i + 1
        i += 1
    parts.append(s[start:])
    return parts


def _remove_right_units(s: str) -> str:
    # Hendrycks: units are written "\text{ unit}" (with a space) at the end
    if "\\text{ " in s:
        return s.split("\\text{ ")[0]
    return s


def hendrycks_normalize(s: str) -> str:
    """MATH-paper style normalisation (see the module docstring for the rules)."""
    s = s.replace("\n", "").replace("\\!", "")
    s = s.replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "").replace("$", "")
    s = _remove_right_units(s)
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and _SHORT_LHS.match(sides[0]):
        s = sides[1]
    s = fix_fracs_and_sqrt(s)
    s = s.replace(" ", "")
    if s == "0.5":
        s = "\\frac{1}{2}"
    parts = s.split("/")
    if len(parts) == 2 and _INT.match(parts[0]) and _INT.match(parts[1]):
        s = "\\frac{" + parts[0] + "}{" + parts[1] + "}"
    return s


_UNIT_WORDS = (
    "square units", "sq units", "square feet", "square inches", "square meters",
    "square centimeters", "cubic units", "cubic feet", "cubic inches", "cubic centimeters",
    "units", "unit", "degrees", "degree", "dollars", "dollar", "cents", "cent",
    "centimeters", "centimeter", "meters", "meter", "kilometers", "inches", "inch", "feet",
    "foot", "yards", "miles", "mph", "hours", "hour", "minutes", "minute", "seconds",
    "second", "days", "day", "weeks", "years", "cm", "km", "mm", "ft", "in", "m", "sq",
    "pounds", "ounces", "people", "students", "ways", "times", "percent",
)
_UNIT_TAIL = re.compile(
    r"(?<=[\d\s}])\s*(?:" + "|".join(re.escape(w) for w in _UNIT_WORDS) + r")(?:\^\{?\d\}?)?\.?$")
_MC = re.compile(r"^\(?([a-e])\)?$")


def text_normalize(s: str) -> str:
    """Unwrap text commands, drop ``$``/``%``/degree marks/TeX spacing and trailing unit
    words, lower-case, remove spaces; a multiple-choice letter loses its parentheses."""
    s = unwrap_text(s)
    for token in ("\\$", "$", "\\%", "%", "\\!", "\\,", "\\;", "\\:", "\\ ", "~",
                  "^{\\circ}", "^\\circ", "\\circ", "°", "\\left", "\\right", "\\displaystyle"):
        s = s.replace(token, " " if token in ("\\,", "\\;", "\\:", "\\ ", "~") else "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.strip().lower()
    for _ in range(2):
        s = _UNIT_TAIL.sub("", s).strip()
    s = s.rstrip(".").strip()
    s = re.sub(r"\s+", "", s)
    m = _MC.match(s)
    if m:
        return m.group(1)
    return s
