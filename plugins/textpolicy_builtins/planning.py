"""Built-in planning detector ``strategic_grams``: tokens that take part in a strategic phrase.

How it works (one pass per batch, no per-token Python):

1. every completion's token ids are mapped to normalised piece text through a
   :class:`~textpolicy.vocab.TokenVocab` and the whole batch is joined into one string, with a
   ``\\x00`` sentinel after each completion so no phrase crosses completions;
2. one compiled regular expression holding all phrases finds every (possibly overlapping)
   occurrence — case-insensitive (pieces are lower-cased), whole words only (``\\b`` at word
   edges, so ``key insight`` does not fire inside ``monkey insight``), words separated by any run
   of spaces, newlines or punctuation (``Wait, let me`` matches ``wait let me``), apostrophes
   literal (``that's``; typographic ``’`` is folded to ``'``);
3. each character span is mapped back to the tokens whose pieces overlap it (cumulative piece
   lengths + ``searchsorted``), marked with a difference array. A word split into sub-tokens
   (``Ġan`` + ``other``) is covered in full; tokens before the phrase are never marked.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import numpy as np
from numpy.typing import NDArray

from textpolicy.errors import ConfigError
from textpolicy.plugins import hookimpl
from textpolicy.records import PlanningDetector
from textpolicy.vocab import TokenVocab

BoolArray = NDArray[np.bool_]

DEFAULT_GRAMS: tuple[str, ...] = (
    # hesitation
    "wait let me", "let me think", "on second thought",
    # verification
    "let me check", "let me verify", "is this right", "double check",
    # backtracking
    "try another approach", "go back and", "start over", "that's not right",
    "that doesn't work",
    # alternatives
    "another way to", "or we could", "what if we",
    # metacognition
    "notice that", "the key is", "the key insight",
)

_SEP_RUN = re.compile(r"[^\w'\x00]+")  # whitespace/punctuation between words (not the sentinel)


def _to_grams(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(f"grams must be a list of phrases, got {value!r}")
    out = []
    for g in value:
        if not isinstance(g, str) or not re.search(r"\w", g):
            raise ValueError(f"grams: each phrase must be text with a word in it, got {g!r}")
        out.append(" ".join(g.split()))
    if not out:
        raise ValueError("grams must hold at least one phrase")
    return tuple(out)


@attrs.frozen
class StrategicGramsParams:
    """``grams``: phrases to mark (default: the 18 strategic grams of the HICRA paper)."""

    grams: tuple[str, ...] = attrs.field(default=DEFAULT_GRAMS, converter=_to_grams)


def canonical_phrase(gram: str) -> str:
    """Lower-case, typographic apostrophes folded, words joined by one space."""
    norm = gram.lower().replace("\u2019", "'").replace("\u02bc", "'")
    return " ".join(w for w in _SEP_RUN.split(norm) if w)


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_'"


@attrs.frozen(eq=False)
class _Tables:
    """Per-vocabulary lookup tables (ids ``V`` = empty/padding, ``V+1`` = sentinel).

    ``pieces[id]`` is the canonical piece (separator runs collapsed to one space) and
    ``pieces[id + V + 2]`` the same without its leading space (used after a separator)."""

    pieces: NDArray[np.object_]
    lengths: NDArray[np.int64]
    ends_sep: NDArray[np.bool_]
    size: int


@functools.lru_cache(maxsize=8)
def _lookup_tables(vocab: TokenVocab) -> _Tables:
    v = len(vocab)
    canon = [_SEP_RUN.sub(" ", p) for p in vocab.normalized.tolist()] + ["", "\x00"]
    stripped = [c[1:] if c.startswith(" ") else c for c in canon]
    pieces = np.empty(2 * (v + 2), dtype=object)
    pieces[: v + 2] = canon
    pieces[v + 2:] = stripped
    lengths = np.fromiter((len(c) for c in pieces.tolist()), dtype=np.int64,
                          count=pieces.size)
    ends_sep = np.fromiter((c.endswith(" ") for c in canon), dtype=bool, count=v + 2)
    return _Tables(pieces=pieces, lengths=lengths, ends_sep=ends_sep, size=v)


@functools.lru_cache(maxsize=32)
def _anchor_groups(phrases: tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Group phrases that share their first word under their common prefix (one text scan per
    group instead of one per phrase): "let me think|check|verify" → anchor "let me "."""
    by_word: dict[str, list[str]] = {}
    for phrase in sorted(set(phrases)):
        by_word.setdefault(phrase.split(" ")[0], []).append(phrase)
    groups = []
    for members in by_word.values():
        anchor = members[0]
        for other in members[1:]:
            k = 0
            while k < min(len(anchor), len(other)) and anchor[k] == other[k]:
                k += 1
            anchor = anchor[:k]
        groups.append((anchor, tuple(members)))
    return tuple(groups)


def _find_all(text: str, anchor: str, phrases: tuple[str, ...]) -> tuple[list[int], list[int]]:
    """Spans of every (possibly overlapping) whole-word occurrence of ``phrases``, all of which
    start with ``anchor``."""
    starts: list[int] = []
    ends: list[int] = []
    n = len(text)
    single = len(phrases) == 1
    i = text.find(anchor)
    while i >= 0:
        if not (i > 0 and _is_word_char(text[i - 1])):
            for phrase in phrases:
                if single or text.startswith(phrase, i):
                    j = i + len(phrase)
                    if not (j < n and _is_word_char(text[j])):
                        starts.append(i)
                        ends.append(j)
        i = text.find(anchor, i + 1)
    return starts, ends


def strategic_grams_mask(tokens: NDArray[Any], lengths: NDArray[Any], vocab: TokenVocab,
                         grams: Sequence[str] = DEFAULT_GRAMS) -> BoolArray:
    """bool ``[N, T]``: True on tokens that take part in one of ``grams``."""
    if not isinstance(vocab, TokenVocab):
        raise ConfigError(
            f"strategic_grams needs a textpolicy.vocab.TokenVocab, got {type(vocab).__name__}")
    tok = np.asarray(tokens, dtype=np.int64)
    lens = np.asarray(lengths, dtype=np.int64).reshape(-1)
    n, t = tok.shape
    if n == 0 or t == 0:
        return np.zeros((n, t), dtype=bool)
    tables = _lookup_tables(vocab)
    v = tables.size
    real = np.arange(t)[None, :] < lens[:, None]
    ids = np.full((n, t + 1), v, dtype=np.int64)
    np.copyto(ids[:, :t], tok, where=real)
    if tok.size and (tok.min() < 0 or tok.max() >= v):  # ids outside the vocabulary add ""
        ids[:, :t] = np.where(real & (tok >= 0) & (tok < v), tok, v)
    ids[np.arange(n), lens] = v + 1
    flat = ids.ravel()
    # after a piece that ends in a separator, the next piece drops its leading space, so a
    # separator run spanning two tokens ("," + " let") still reads as one space
    chosen = flat.copy()
    chosen[1:] += (v + 2) * tables.ends_sep[flat[:-1]]
    text = "".join(tables.pieces[chosen].tolist())
    starts_l: list[int] = []
    ends_l: list[int] = []
    for anchor, phrases in _anchor_groups(tuple(canonical_phrase(g) for g in grams)):
        found_starts, found_ends = _find_all(text, anchor, phrases)
        starts_l.extend(found_starts)
        ends_l.extend(found_ends)
    marks = np.zeros(flat.size + 1, dtype=np.int64)
    if starts_l:
        piece_len = tables.lengths[chosen]
        tok_end = np.cumsum(piece_len)
        tok_start = tok_end - piece_len
        first = np.searchsorted(tok_end, np.asarray(starts_l), side="right")
        last = np.searchsorted(tok_start, np.asarray(ends_l), side="left") - 1
        np.add.at(marks, first, 1)
        np.add.at(marks, last + 1, -1)
    covered = np.cumsum(marks[:-1]) > 0
    return covered.reshape(n, t + 1)[:, :t] & real


def _detect(tokens: NDArray[Any], lengths: NDArray[Any], vocab: Any,
            params: StrategicGramsParams) -> BoolArray:
    if vocab is None:
        raise ConfigError("planning detector 'strategic_grams' needs a vocab (TokenVocab)")
    return strategic_grams_mask(tokens, lengths, vocab, params.grams)


DETECTORS: tuple[PlanningDetector, ...] = (
    PlanningDetector(name="strategic_grams", fn=_detect, params=StrategicGramsParams,
                     doc="tokens in one of 18 strategic phrases (or your own list)"),
)


@hookimpl
def textpolicy_register_planning_detectors() -> Iterable[PlanningDetector]:
    return DETECTORS
