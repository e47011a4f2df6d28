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

_SEP = r"[^\w'\x00]+"  # a run of whitespace/punctuation between words, never the sentinel


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


def _gram_regex(gram: str) -> str:
    norm = gram.lower().replace("\u2019", "'")
    words = [w for w in re.split(r"[^\w']+", norm) if w]
    body = _SEP.join(re.escape(w) for w in words)
    left = r"\b" if re.match(r"\w", words[0]) else r"(?<![\w'])"
    right = r"\b" if re.search(r"\w$", words[-1]) else r"(?![\w'])"
    return left + body + right


@functools.lru_cache(maxsize=32)
def compile_grams(grams: tuple[str, ...]) -> re.Pattern[str]:
    """One pattern for all phrases; a lookahead so overlapping phrases are all found."""
    alts = sorted({_gram_regex(g) for g in grams}, key=len, reverse=True)
    return re.compile(r"(?=(" + "|".join(alts) + "))")


@functools.lru_cache(maxsize=8)
def _lookup_tables(vocab: TokenVocab) -> tuple[NDArray[np.object_], NDArray[np.int64]]:
    """Normalised pieces and lengths with two extra ids: empty (padding) and the sentinel."""
    v = len(vocab)
    pieces = np.empty(v + 2, dtype=object)
    pieces[:v] = vocab.normalized
    pieces[v] = ""
    pieces[v + 1] = "\x00"
    lengths = np.concatenate([vocab.normalized_lengths, np.array([0, 1], dtype=np.int64)])
    return pieces, lengths


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
    pieces, piece_len = _lookup_tables(vocab)
    v = len(vocab)
    real = np.arange(t)[None, :] < lens[:, None]
    ids = np.full((n, t + 1), v, dtype=np.int64)
    ids[:, :t] = np.where(real & (tok >= 0) & (tok < v), tok, v)
    ids[np.arange(n), lens] = v + 1
    flat = ids.ravel()
    text = "".join(pieces[flat].tolist())
    spans = [m.span(1) for m in compile_grams(tuple(grams)).finditer(text)]
    marks = np.zeros(flat.size + 1, dtype=np.int64)
    if spans:
        se = np.asarray(spans, dtype=np.int64)
        ends = np.cumsum(piece_len[flat])
        starts = ends - piece_len[flat]
        first = np.searchsorted(ends, se[:, 0], side="right")
        last = np.searchsorted(starts, se[:, 1], side="left") - 1
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
