"""Built-in planning detector ``strategic_grams``: tokens that take part in a strategic phrase.

How it works (one pass per batch, no per-token Python):

1. every completion's token ids are mapped to canonical piece text through a
   :class:`~textpolicy.vocab.TokenVocab` (lower-cased, typographic ``’`` folded to ``'``, every
   run of spaces, newlines or punctuation one space) and the whole batch is joined into one
   string and encoded as UTF-8 once, with a ``\\x00`` sentinel after each completion so no
   phrase crosses completions;
2. phrases are found at word starts only, whole words only (``key insight`` does not fire
   inside ``monkey insight``; ``Wait, let me`` matches ``wait let me``), every overlapping
   occurrence: word starts whose first two bytes begin no phrase are dropped, the rest are
   looked up by their next 8 bytes (one integer) among the phrases' first 8 bytes, and only
   those hits are compared in full — all vectorised, so many phrases cost about as few;
3. each byte span is mapped back to the tokens whose pieces overlap it (cumulative piece
   lengths + ``searchsorted``, then ragged index ranges). A word split into sub-tokens
   (``Ġan`` + ``other``) is covered in full; tokens before the phrase are never marked.

Phrases: ``grams`` (a list, or ``"default"`` / ``"math"`` for a shipped list) or ``grams_file``
(what ``tp mine-grams`` writes; see :mod:`textpolicy_builtins.gram_mining`).
"""

from __future__ import annotations

import functools
import importlib.resources
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
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


#: phrase lists shipped with the package, by the name ``grams`` accepts instead of a list
SHIPPED_GRAMS = {"math": "grams_math.txt"}


def _to_grams(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        if value == "default":
            return DEFAULT_GRAMS
        if value in SHIPPED_GRAMS:
            return shipped_grams(value)
        raise ValueError(
            f"grams must be a list of phrases or the name of a shipped list (default, "
            f"{', '.join(SHIPPED_GRAMS)}), got {value!r}")
    if not isinstance(value, Sequence):
        raise ValueError(f"grams must be a list of phrases, got {value!r}")
    out = []
    for g in value:
        if not isinstance(g, str) or not re.search(r"\w", g):
            raise ValueError(f"grams: each phrase must be text with a word in it, got {g!r}")
        out.append(" ".join(g.split()))
    if not out:
        raise ValueError("grams must hold at least one phrase")
    return tuple(out)


def parse_grams_text(text: str, where: str) -> tuple[str, ...]:
    """The phrases of a phrase file: one a line, ``#`` starts a comment, blank lines skipped.

    ``ValueError`` naming ``where`` (file and line) for a line with no word in it, or a file
    with no phrase."""
    out: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        phrase = " ".join(line.split("#", 1)[0].split())
        if not phrase:
            continue
        if not re.search(r"\w", phrase):
            raise ValueError(f"{where}:{lineno}: a phrase needs a word in it, got {phrase!r}")
        out.append(phrase)
    if not out:
        raise ValueError(f"{where}: no phrase in the file (one phrase a line, # comments)")
    return tuple(out)


def read_grams_file(path: str | Path) -> tuple[str, ...]:
    """The phrases of the phrase file at ``path`` (``ValueError`` naming it when unusable)."""
    p = str(path)
    try:
        raw = Path(p).read_bytes()
    except OSError as exc:
        raise ValueError(f"grams_file {p!r}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"grams_file {p!r}: not UTF-8 text") from None
    return parse_grams_text(text, p)


def shipped_grams(name: str) -> tuple[str, ...]:
    """A phrase list shipped with the package (``"math"``: mined from MATH train solutions)."""
    resource = importlib.resources.files("textpolicy_builtins") / SHIPPED_GRAMS[name]
    return parse_grams_text(resource.read_text(encoding="utf-8"), SHIPPED_GRAMS[name])


def _grams_file(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike) or not str(value).strip():
        raise ValueError(f"grams_file must be a path to a phrase file, got {value!r}")
    return str(value)


@attrs.frozen
class StrategicGramsParams:
    """``grams``: phrases to mark — a list, or a shipped list by name: ``"default"`` (the 18
    strategic grams of the HICRA paper) or ``"math"`` (mined from MATH solutions).
    ``grams_file``: a phrase file instead (one phrase a line, ``#`` comments; what
    ``tp mine-grams`` writes), read once when the pipeline is built; ``grams`` then holds its
    phrases (so a run's config.json records them)."""

    grams: tuple[str, ...] = attrs.field(default=DEFAULT_GRAMS, converter=_to_grams)
    grams_file: str | None = attrs.field(default=None, converter=_grams_file)

    def __attrs_post_init__(self) -> None:
        if self.grams_file is None:
            return
        loaded = read_grams_file(self.grams_file)  # once: a run's phrases never change
        if self.grams not in (DEFAULT_GRAMS, loaded):
            raise ValueError(f"grams_file {self.grams_file!r} holds other phrases than grams; "
                             "give one of them")
        object.__setattr__(self, "grams", loaded)  # recorded in config.json with the path


def canonical_phrase(gram: str) -> str:
    """Lower-case, typographic apostrophes folded, words joined by one space."""
    norm = gram.lower().replace("\u2019", "'").replace("\u02bc", "'")
    return " ".join(w for w in _SEP_RUN.split(norm) if w)


@attrs.frozen(eq=False)
class _Tables:
    """Per-vocabulary lookup tables (ids ``V`` = empty/padding, ``V+1`` = sentinel).

    ``pieces[id]`` is the canonical piece (separator runs collapsed to one space) and
    ``pieces[id + V + 2]`` the same without its leading space (used after a separator);
    ``lengths`` are their lengths in UTF-8 bytes (the batch is searched as UTF-8: joining
    ``str`` pieces and encoding once is faster than joining ``bytes``)."""

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
    pieces[:] = canon + stripped
    lengths = np.fromiter((len(c.encode("utf-8")) for c in pieces.tolist()), dtype=np.int64,
                          count=pieces.size)
    ends_sep = np.fromiter((c.endswith(" ") for c in canon), dtype=bool, count=v + 2)
    return _Tables(pieces=pieces, lengths=lengths, ends_sep=ends_sep, size=v)


@attrs.frozen(eq=False)
class _Matcher:
    """Phrases as bytes, keyed by their first ``k`` bytes (read as one little-endian integer):
    ``keys`` sorted, ``members[i]`` the phrases whose key is ``keys[i]``; ``prefix[b]`` is True
    when some phrase starts with the ``min(k, 2)`` bytes whose little-endian value is ``b`` (a
    cheap first filter)."""

    k: int
    keys: NDArray[np.uint64]
    members: tuple[tuple[bytes, ...], ...]
    prefix: NDArray[np.bool_]


@functools.lru_cache(maxsize=32)
def _matcher(phrases: tuple[str, ...]) -> _Matcher:
    encoded = sorted({canonical_phrase(g).encode("utf-8") for g in phrases} - {b""})
    k = min([8, *(len(e) for e in encoded)])
    by_key: dict[int, list[bytes]] = {}
    for e in encoded:
        by_key.setdefault(int.from_bytes(e[:k], "little"), []).append(e)
    keys = np.asarray(sorted(by_key), dtype=np.uint64)
    prefix = np.zeros(1 << (8 * min(k, 2)), dtype=bool)
    prefix[[int.from_bytes(e[: min(k, 2)], "little") for e in encoded]] = True
    return _Matcher(k=k, keys=keys, members=tuple(tuple(by_key[int(key)]) for key in keys),
                    prefix=prefix)


def _find_phrases(buf: bytes, matcher: _Matcher) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Byte spans of every (possibly overlapping) whole-word occurrence of the matcher's phrases
    in ``buf``, a canonical text where every byte is a word byte, a space or ``\\x00``.

    Vectorised over word starts (hand-written: no numpy/stdlib routine searches many literals
    at once): word starts whose first two bytes begin no phrase are dropped, the others' first
    ``k`` bytes, read as one integer, are looked up among the phrases' keys, and only those hits
    are compared in full, one phrase at a time."""
    n = len(buf)
    k = matcher.k
    if n < k or not matcher.members:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    padded = np.frombuffer(buf + bytes(8), dtype=np.uint8)
    sep = padded <= 32  # canonical text: every byte <= 32 is a space or the sentinel
    word_start = ~sep[:n]
    word_start[1:] &= sep[: n - 1]
    starts = np.flatnonzero(word_start[: n - k + 1])
    # first filter: the word's first one or two bytes begin some phrase
    narrow = np.ndarray(shape=(n,), dtype="<u2" if k >= 2 else "u1", buffer=padded,
                        strides=(1,))
    starts = starts[matcher.prefix[narrow[starts]]]
    # then every remaining word start's next 8 bytes as one unaligned little-endian integer
    wide = np.ndarray(shape=(n,), dtype="<u8", buffer=padded, strides=(1,))
    key = wide[starts]
    if k < 8:
        key &= np.uint64((1 << (8 * k)) - 1)
    slot = np.searchsorted(matcher.keys, key)
    np.minimum(slot, matcher.keys.size - 1, out=slot)
    hit = matcher.keys[slot] == key
    cand, cand_slot = starts[hit], slot[hit]
    if cand.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    order = np.argsort(cand_slot, kind="stable")
    cand, cand_slot = cand[order], cand_slot[order]
    bounds = np.searchsorted(cand_slot, np.arange(len(matcher.members) + 1))
    out_s: list[NDArray[np.int64]] = []
    out_e: list[NDArray[np.int64]] = []
    for i, phrases in enumerate(matcher.members):
        pos = cand[bounds[i]:bounds[i + 1]]
        if pos.size == 0:
            continue
        for phrase in phrases:
            length = len(phrase)
            ok = pos[pos + length <= n]
            if length > k and ok.size:
                rest = np.frombuffer(phrase, dtype=np.uint8)[k:]
                window = padded[ok[:, None] + np.arange(k, length)]
                ok = ok[(window == rest).all(axis=1)]
            ok = ok[sep[ok + length]]  # the padding past the end reads as a separator
            out_s.append(ok)
            out_e.append(ok + length)
    if not out_s:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    return (np.concatenate(out_s).astype(np.int64, copy=False),
            np.concatenate(out_e).astype(np.int64, copy=False))


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
    buf = "".join(tables.pieces[chosen].tolist()).encode("utf-8")
    starts, ends = _find_phrases(buf, _matcher(tuple(grams)))
    covered = np.zeros(flat.size, dtype=bool)
    if starts.size:
        tok_end = np.cumsum(tables.lengths[chosen])
        first = np.searchsorted(tok_end, starts, side="right")  # token holding the first byte
        last = np.searchsorted(tok_end, ends - 1, side="right")  # ... and the last byte
        count = last - first + 1
        # every token index first..last of every span (ragged ranges, no per-span loop)
        covered[np.repeat(first - np.cumsum(count) + count, count)
                + np.arange(int(count.sum()))] = True
    return covered.reshape(n, t + 1)[:, :t] & real


def _detect(tokens: NDArray[Any], lengths: NDArray[Any], vocab: Any,
            params: StrategicGramsParams) -> BoolArray:
    if vocab is None:
        raise ConfigError("planning detector 'strategic_grams' needs a vocab (TokenVocab)")
    return strategic_grams_mask(tokens, lengths, vocab, params.grams)


DETECTORS: tuple[PlanningDetector, ...] = (
    PlanningDetector(name="strategic_grams", fn=_detect, params=StrategicGramsParams,
                     doc="tokens in a strategic phrase (18 default, a mined list, or your own)"),
)


@hookimpl
def textpolicy_register_planning_detectors() -> Iterable[PlanningDetector]:
    return DETECTORS
