"""Labelled answer variants for grader-accuracy checks (tests and benchmarks).

For a gold answer, ``equivalent_variants`` rewrites it without changing its meaning
(``\\dfrac``, ``\\frac12``, ``a/b``, spacing, ``\\left(``, ``x =``, units, ``1,000``, ``.5``,
reordered sums, ``x \\in`` intervals, multiple-choice letters, reordered lists) and
``non_equivalent_variants`` changes its meaning (±1, a changed digit, sign flip, reciprocal,
dropped π, open vs closed interval end, swapped tuple, another letter, another base, another
problem's gold). Labels hold by construction; every choice flows from the ``rng`` given.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import attrs
import numpy as np

from textpolicy.grading import guards
from textpolicy.grading.normalize import hendrycks_normalize, split_top_level, text_normalize
from textpolicy.grading.numeric import numbers_equal


@attrs.frozen
class Variant:
    gold: str
    given: str
    equivalent: bool
    kind: str
    gold_is_list: bool = False


_INT = re.compile(r"^-?\d+$")
_DEC = re.compile(r"^-?\d*\.\d+$")
_FRAC = re.compile(r"^(-?)\\[dt]?frac\{(-?\d+)\}\{(\d+)\}$")
_MC = re.compile(r"^\\text(?:bf)?\{\(([A-E])\)\}$|^\(([A-E])\)$")
_INTERVAL = re.compile(r"^([\[(])([^\[\]()]+),([^\[\]()]+)([\])])$")
_NUMERIC_EXPR = re.compile(r"^[-\d\\{}()+.^ a-z]*$")


def _is_plain_number(g: str) -> bool:
    return bool(_INT.match(g) or _DEC.match(g) or _FRAC.match(g))


def _has_variable(g: str) -> bool:
    return bool(re.search(r"(?<!\\)\b[a-zA-Z]\b|(?<![\\a-zA-Z])[a-zA-Z](?![a-zA-Z])",
                          re.sub(r"\\[a-zA-Z]+", "", g)))


def _nonzero_constant(g: str) -> bool:
    """A numeric answer (no variables, lists, relations or text) that is not zero."""
    if any(t in g for t in (",", "=", "<", ">", "\\le", "\\ge", "\\text", "\\begin", "\\infty",
                            "\\in", "\\cup", "\\pm", "\\mbox", "!", "_", "\\circ", "%", ":")):
        return False
    if _has_variable(g):
        return False
    stripped = re.sub(r"[\s{}()\\a-z]", "", g.replace("\\pi", "p"))
    return bool(re.search(r"[1-9p]", stripped)) and not re.fullmatch(r"-?0+(\.0*)?", g.strip())


def _as_number(s: str) -> str:
    """Currency and ratio spellings as plain numbers (``\\$0.50`` → ``0.50``, ``1:2`` → ``1/2``)."""
    return re.sub(r"^(-?\d+):(\d+)$", r"\1/\2", s.replace("\\$", "").replace("$", "").strip())


def equivalent_variants(gold: str, *, is_list: bool = False) -> list[tuple[str, str]]:
    """``(kind, variant)`` pairs equivalent to ``gold``."""
    g = gold.strip()
    out: list[tuple[str, str]] = []
    if "\\frac" in g and "\\dfrac" not in g:
        out.append(("dfrac", g.replace("\\frac", "\\dfrac")))
    if re.search(r"\\frac\{\d\}\{\d\}", g):
        out.append(("frac12", re.sub(r"\\frac\{(\d)\}\{(\d)\}", r"\\frac\1\2", g)))
    m = _FRAC.match(g)
    if m:
        out.append(("slash", f"{m.group(1)}{m.group(2)}/{m.group(3)}"))
    if re.search(r"[+,=]", g) and " " not in g:
        out.append(("spaces", re.sub(r"\s*([+,=])\s*", r" \1 ", g).strip()))
    elif " " in g and "\\text" not in g and "\\mbox" not in g:
        out.append(("spaces", re.sub(r"(?<!\\[a-zA-Z])\s+(?![a-zA-Z])", "", g)))
    if g.startswith("(") and g.endswith(")") and "\\left" not in g and g.count("(") == 1:
        out.append(("left_right", "\\left(" + g[1:-1] + "\\right)"))
    if _is_plain_number(g) or (_nonzero_constant(g) and not is_list):
        out.append(("x_equals", "x = " + g))
    if _INT.match(g) or _DEC.match(g):
        out.append(("units", g + "\\text{ units}"))
    if _INT.match(g) and abs(int(g)) >= 1000 and not is_list:
        out.append(("thousands", f"{int(g):,}"))
    if guards.looks_like_thousands(g) and not is_list:
        out.append(("no_thousands", re.sub(r"[,\s]|\\!", "", g)))
    if re.fullmatch(r"-?0\.\d+", g):
        out.append(("leading_dot", g.replace("0.", ".", 1)))
    terms = split_top_level(g, "+")
    if (len(terms) >= 2 and all(t.strip() for t in terms) and not is_list
            and not re.search(r",|=|<|>|\\le|\\ge|\\in|\\cup|\\pm|\\text|\\begin|\^\s*$|\.$", g)
            and not g.strip().startswith("+")):
        out.append(("reordered_sum", "+".join(reversed([t.strip() for t in terms]))))
    iv = _INTERVAL.match(g)
    if iv and ("\\infty" in g or iv.group(1) != {"]": "[", ")": "("}[iv.group(4)]):
        out.append(("x_in_interval", "x \\in " + g))
    mc = _MC.match(g)
    if mc:
        letter = mc.group(1) or mc.group(2)
        out.extend([("mc_letter", letter), ("mc_paren", f"({letter})")])
    if is_list and "\\text" not in g:
        parts = [p.strip() for p in split_top_level(g)]
        if len(parts) >= 2 and len(set(parts)) == len(parts):
            out.append(("reordered_list", ", ".join(reversed(parts))))
    if re.search(r"\\sqrt\{\d\}", g):
        out.append(("sqrt_short", re.sub(r"\\sqrt\{(\d)\}", r"\\sqrt\1", g)))
    return [(k, v) for k, v in out if v != g]


def _change_digit(g: str, rng: np.random.Generator) -> str | None:
    # digits not in exponents/subscripts, not inside \text{...}
    masked = re.sub(r"\\text\{[^}]*\}|[\^_]\{[^}]*\}|[\^_]\d", lambda m: "#" * len(m.group(0)), g)
    positions = [i for i, ch in enumerate(masked) if ch.isdigit()]
    if not positions:
        return None
    i = int(rng.choice(positions))
    # a digit that multiplies something by zero could hide the change: skip "0" contexts
    new = str((int(g[i]) + int(rng.integers(1, 9))) % 10)
    out = g[:i] + new + g[i + 1 :]
    if re.search(r"(?<![\d.])0(?![\d.])", out) and not re.search(r"(?<![\d.])0(?![\d.])", g):
        return None  # a new lone zero (e.g. 5x → 0x) may make the answer degenerate
    return out


def non_equivalent_variants(gold: str, rng: np.random.Generator, other_golds: Sequence[str],
                            *, is_list: bool = False) -> list[tuple[str, str]]:
    """``(kind, variant)`` pairs NOT equivalent to ``gold``."""
    g = gold.strip()
    out: list[tuple[str, str]] = []
    if _INT.match(g):
        n = int(g)
        out.extend([("plus_one", str(n + 1)), ("minus_one", str(n - 1))])
    if not guards.is_base_gold(g) and not is_list and "\\text" not in g:
        changed = _change_digit(g, rng)
        if changed is not None and changed != g:
            out.append(("digit_changed", changed))
    if _nonzero_constant(g) and not is_list:
        out.append(("sign_flip", g[1:] if g.startswith("-") and _is_plain_number(g)
                    else f"-({g})"))
    m = _FRAC.match(g)
    if m and m.group(2).lstrip("-") != m.group(3):
        out.append(("reciprocal", f"{m.group(1)}\\frac{{{m.group(3)}}}{{{m.group(2)}}}"))
    elif _INT.match(g) and abs(int(g)) > 1:
        out.append(("reciprocal", f"\\frac{{1}}{{{g}}}"))
    if "\\pi" in g and not is_list and "," not in g:
        dropped = g.replace("\\pi", "").replace("{}", "{1}")
        dropped = re.sub(r"^-?$", "1", dropped.strip())
        if dropped.strip() and dropped != g and not re.search(r"[\^_]\s*$|\\frac\{1\}\{1\}",
                                                              dropped):
            out.append(("dropped_pi", dropped))
    iv = _INTERVAL.match(g)
    if iv:
        left, right = iv.group(1), iv.group(4)
        if "\\infty" not in iv.group(2):
            out.append(("interval_end", ("(" if left == "[" else "[") + g[1:]))
        elif "\\infty" not in iv.group(3):
            out.append(("interval_end", g[:-1] + (")" if right == "]" else "]")))
    tup = re.fullmatch(r"\(([^(),]+),([^(),]+)\)", g)
    if tup and text_normalize(tup.group(1)) != text_normalize(tup.group(2)):
        out.append(("swapped_tuple", f"({tup.group(2)},{tup.group(1)})"))
    mc = _MC.match(g)
    if mc:
        letter = mc.group(1) or mc.group(2)
        other = "ABCDE".replace(letter, "")[int(rng.integers(0, 4))]
        out.append(("other_letter", f"\\text{{({other})}}"))
    if guards.is_base_gold(g):
        parsed = guards.parse_base_number(g)
        assert parsed is not None and parsed[2] is not None
        base = int(parsed[2])
        out.append(("base_changed", re.sub(r"_\{?\d+\}?", f"_{{{base + 1}}}", g)))
    if other_golds:
        mine = hendrycks_normalize(g)
        for _ in range(20):
            cand = other_golds[int(rng.integers(0, len(other_golds)))].strip()
            if hendrycks_normalize(cand) == mine or text_normalize(cand) == text_normalize(g):
                continue
            if _INT.match(g) and not _INT.match(cand):
                continue  # integers only against integers (values then differ for sure)
            if not _INT.match(g) and (_INT.match(cand) or _is_plain_number(cand)) and (
                    _is_plain_number(g)):
                continue
            if _INT.match(g) and int(cand) == int(g):
                continue
            if not _INT.match(g) and (_has_variable(g) != _has_variable(cand)):
                continue
            if guards.is_base_gold(g) or guards.is_base_gold(cand):
                continue
            if numbers_equal(_as_number(cand), _as_number(g)) is not False and (
                    _is_plain_number(_as_number(g)) or _is_plain_number(_as_number(cand))):
                continue  # e.g. \\frac12 against \\$0.50 or 1:2
            out.append(("other_gold", cand))
            break
    return [(k, v) for k, v in out if v.strip() and v != g]


def generate_variants(golds: Sequence[str], seed: int, *,
                      list_flags: Sequence[bool] | None = None) -> list[Variant]:
    """Every equivalent and non-equivalent variant of every gold, seeded."""
    rng = np.random.default_rng(seed)
    flags = list(list_flags) if list_flags is not None else [False] * len(golds)
    out: list[Variant] = []
    for gold, is_list in zip(golds, flags, strict=True):
        for kind, given in equivalent_variants(gold, is_list=is_list):
            out.append(Variant(gold, given, True, kind, is_list))
        for kind, given in non_equivalent_variants(gold, rng, golds, is_list=is_list):
            out.append(Variant(gold, given, False, kind, is_list))
    return out


def policy_variants(gold: str) -> list[tuple[str, str, bool]]:
    """``(kind, variant, verdict under POLICY)`` for the conventions that must be chosen:
    a decimal for a fraction (exact: accepted; rounded: rejected), an unreduced fraction
    (accepted), an integer written as a decimal (accepted) or rounded (rejected)."""
    from fractions import Fraction

    g = gold.strip()
    out: list[tuple[str, str, bool]] = []
    m = _FRAC.match(g)
    if m and int(m.group(3)) != 0:
        value = Fraction(int(m.group(2)), int(m.group(3))) * (-1 if m.group(1) else 1)
        den = value.denominator
        while den % 2 == 0:
            den //= 2
        while den % 5 == 0:
            den //= 5
        if den == 1:  # terminating decimal: exact
            out.append(("decimal_exact", f"{float(value):.10g}", True))
        else:
            out.append(("decimal_rounded", f"{float(value):.2f}", False))
        num, den2 = int(m.group(2)), int(m.group(3))
        out.append(("unreduced", f"{m.group(1)}\\frac{{{2 * num}}}{{{2 * den2}}}", True))
    if _INT.match(g):
        out.append(("integer_as_decimal", f"{g}.0", True))
        out.append(("integer_rounded", f"{int(g)}.4", False))
    return out
