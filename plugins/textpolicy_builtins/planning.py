"""Built-in planning detector ``strategic_grams``: tokens that take part in a strategic phrase.

What is searched: each completion's text in a canonical form — every token id mapped to its
piece through a :class:`~textpolicy.vocab.TokenVocab` (lower-cased, typographic ``’`` folded to
``'``, every run of spaces, newlines or punctuation one space), a piece that follows one ending
in a space losing its leading space, so a separator run split over tokens (``,`` + `` let``)
still reads as one space. Phrases match at word starts and whole words only (``key insight``
does not fire inside ``monkey insight``; ``Wait, let me`` matches ``wait let me``), every
overlapping occurrence, never across completions; every token from the one holding a phrase's
first byte to the one holding its last is marked, so a word split into sub-tokens (``Ġan`` +
``other``) is covered in full and tokens before the phrase never are.

How (no text is built, no per-token Python): the phrases become a byte trie, and once per
(vocabulary, phrases) every piece is walked from its word starts and every (trie node, piece)
pair that stays in the trie is tabulated (≈ 0.3 s for a 49 k vocabulary). A call gathers one
table entry per token to find the few tokens where a phrase can start (a few per cent of real
text), then advances those walks a token a step by a sorted-key look-up, all vectorised; a
phrase that ends where a piece ends counts when the next non-empty piece starts with a
separator (or the completion ends).

Phrases: ``grams`` (a list, or ``"default"`` / ``"math"`` for a shipped list) or ``grams_file``
(what ``tp mine-grams`` writes; see :mod:`textpolicy_builtins.gram_mining`).
"""

from __future__ import annotations

import bisect
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


# -- the detector -------------------------------------------------------------------------------
#
# Hand-written: no numpy/stdlib routine searches many literals over a token stream whose text
# depends on the neighbouring token. Token i adds its canonical piece, or that piece without its
# leading space when the canonical piece of token i - 1 ends with a space ("stripped"), so a
# token id has two "variants": index ``id`` and ``id + V + 1`` (id ``V`` is the empty piece of
# ids outside the vocabulary). Building the text instead costs a Python object per token
# (≈ 15 ms per 524 k tokens, more than the whole search below).

_DEAD = -1


@attrs.frozen(eq=False)
class _Trie:
    """The canonical phrases as a byte trie (node 0 is the root)."""

    children: tuple[dict[int, int], ...]
    terminal: tuple[bool, ...]

    def walk(self, node: int, text: bytes, *, at_start: bool) -> tuple[int, bool, bool]:
        """Walk ``text`` from ``node``: (the node reached, or ``_DEAD`` when the walk leaves
        the trie or reaches a node with no children; whether a phrase ended inside ``text``
        followed by a separator; whether a phrase ends exactly at ``text``'s end). The
        separator check at ``text``'s first byte is the previous piece's (``at_start=False``
        while continuing a walk: that case was reported as "ends exactly" then)."""
        inside = False
        for i, byte in enumerate(text):
            if byte <= 32 and self.terminal[node] and (i or at_start):
                inside = True
            child = self.children[node].get(byte)
            if child is None:
                return _DEAD, inside, False
            node = child
        return (node if self.children[node] else _DEAD), inside, self.terminal[node]


@functools.lru_cache(maxsize=32)
def _trie(phrases: tuple[str, ...]) -> _Trie:
    children: list[dict[int, int]] = [{}]
    terminal = [False]
    for phrase in {canonical_phrase(g).encode("utf-8") for g in phrases} - {b""}:
        node = 0
        for byte in phrase:
            nxt = children[node].get(byte)
            if nxt is None:
                nxt = len(children)
                children[node][byte] = nxt
                children.append({})
                terminal.append(False)
            node = nxt
        terminal[node] = True
    return _Trie(children=tuple(children), terminal=tuple(terminal))


@functools.lru_cache(maxsize=8)
def _canonical_pieces(vocab: TokenVocab) -> tuple[bytes, ...]:
    """Every piece variant's canonical UTF-8 text: ids ``0..V`` (``V``: empty), then the same
    without a leading space."""
    canon = [_SEP_RUN.sub(" ", p).encode("utf-8") for p in vocab.normalized.tolist()] + [b""]
    return (*canon, *(c[1:] if c.startswith(b" ") else c for c in canon))


@attrs.frozen(eq=False)
class _Automaton:
    """Tables of one (vocabulary, phrases) pair. Per id (``[V + 1]``): ``ends_sep`` (the
    canonical piece ends with a space: the next token takes its stripped variant),
    ``first_sep`` / ``last_sep`` (its first / last byte is a separator) and ``may_start`` (the
    piece holds a word start from which a phrase can begin); per variant (``[variants]``, so an
    id indexes its unstripped variant): ``empty`` (the variant adds no byte — also a piece that
    is one separator, ``,`` or `` ``, after a piece ending in a space).

    Walk starts per id (CSR: ``start_ptr[i]:start_ptr[i + 1]``): the node reached, "ended
    inside", "ends at the end" (see :meth:`_Trie.walk`) and ``start_head`` (the start is the
    piece's first byte: a word start only when the byte before it, in an earlier token, is a
    separator). Starts are tabulated on the unstripped variant only: stripping removes a
    leading space, so the stripped variant's word starts are the same bytes followed by the
    same text (its first byte follows a space in any case). Continuations: ``keys`` (sorted
    ``node * variants + variant``) with the same three results."""

    size: int
    variants: int
    ends_sep: NDArray[np.bool_]
    first_sep: NDArray[np.bool_]
    last_sep: NDArray[np.bool_]
    empty: NDArray[np.bool_]
    may_start: NDArray[np.bool_]
    start_ptr: NDArray[np.int64]
    start_head: NDArray[np.bool_]
    start_node: NDArray[np.int64]
    start_inside: NDArray[np.bool_]
    start_at_end: NDArray[np.bool_]
    keys: NDArray[np.int64]
    next_node: NDArray[np.int64]
    next_inside: NDArray[np.bool_]
    next_at_end: NDArray[np.bool_]


def _walk_starts(trie: _Trie, text: bytes, roots: dict[int, int]) -> list[tuple[int, int, bool,
                                                                                 bool]]:
    """(start byte, node, ended inside, ends at the end) of every word start of ``text`` from
    which a phrase can begin."""
    out = []
    for p, byte in enumerate(text):
        if byte in roots and (p == 0 or text[p - 1] <= 32):
            node, inside, at_end = trie.walk(0, text[p:], at_start=True)
            if node != _DEAD or inside or at_end:
                out.append((p, node, inside, at_end))
    return out


def _continuations(trie: _Trie, texts: tuple[bytes, ...]) -> dict[tuple[int, int],
                                                                  tuple[int, bool, bool]]:
    """Every (live node, variant) whose walk stays alive or completes a phrase: the variants
    whose text is a path of the trie below the node, or such a path to a phrase's end followed
    by a separator and anything."""
    by_text: dict[bytes, list[int]] = {}
    for j, text in enumerate(texts):
        if text:
            by_text.setdefault(text, []).append(j)
    ordered = sorted(by_text)
    out: dict[tuple[int, int], tuple[int, bool, bool]] = {}
    for node in range(1, len(trie.children)):
        if not trie.children[node]:
            continue
        matching: set[bytes] = set()
        stack: list[tuple[int, bytes]] = [(node, b"")]
        while stack:
            at, path = stack.pop()
            if path in by_text:
                matching.add(path)
            if trie.terminal[at] and path:
                for sep in (b" ", b"\x00"):
                    prefix = path + sep
                    i = bisect.bisect_left(ordered, prefix)
                    while i < len(ordered) and ordered[i].startswith(prefix):
                        matching.add(ordered[i])
                        i += 1
            stack.extend((child, path + bytes((byte,)))
                         for byte, child in trie.children[at].items())
        for text in matching:
            result = trie.walk(node, text, at_start=False)
            if result[0] != _DEAD or result[1] or result[2]:
                for j in by_text[text]:
                    out[(node, j)] = result
    return out


@functools.lru_cache(maxsize=8)
def _automaton(vocab: TokenVocab, phrases: tuple[str, ...]) -> _Automaton:
    trie = _trie(phrases)
    texts = _canonical_pieces(vocab)
    size = len(vocab)
    ids = size + 1
    variants = 2 * ids
    canon = texts[:ids]
    roots = trie.children[0]
    ptr = np.zeros(ids + 1, dtype=np.int64)
    head: list[bool] = []
    node: list[int] = []
    inside: list[bool] = []
    at_end: list[bool] = []
    for j, text in enumerate(canon):
        found = _walk_starts(trie, text, roots) if text else []
        for p, nd, ins, end in found:
            head.append(p == 0)
            node.append(nd)
            inside.append(ins)
            at_end.append(end)
        ptr[j + 1] = len(node)
    counts = np.diff(ptr)
    cont = _continuations(trie, texts)
    keys = np.asarray([nd * variants + j for nd, j in cont], dtype=np.int64)
    order = np.argsort(keys)
    results = list(cont.values())
    return _Automaton(
        size=size, variants=variants,
        ends_sep=np.fromiter((c.endswith(b" ") for c in canon), dtype=bool, count=ids),
        first_sep=np.fromiter((bool(c) and c[0] <= 32 for c in canon), dtype=bool, count=ids),
        last_sep=np.fromiter((bool(c) and c[-1] <= 32 for c in canon), dtype=bool, count=ids),
        empty=np.fromiter((not c for c in texts), dtype=bool, count=variants),
        may_start=counts > 0,
        start_ptr=ptr, start_head=np.asarray(head, dtype=bool),
        start_node=np.asarray(node, dtype=np.int64), start_inside=np.asarray(inside, dtype=bool),
        start_at_end=np.asarray(at_end, dtype=bool),
        keys=keys[order],
        next_node=np.asarray([r[0] for r in results], dtype=np.int64).reshape(-1)[order],
        next_inside=np.asarray([r[1] for r in results], dtype=bool).reshape(-1)[order],
        next_at_end=np.asarray([r[2] for r in results], dtype=bool).reshape(-1)[order])


def _ragged(starts: NDArray[np.int64], counts: NDArray[np.int64]) -> NDArray[np.int64]:
    """``starts[i] + 0 .. counts[i] - 1`` for every i, concatenated."""
    total = int(counts.sum())
    return np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(total)


def _separated_before(auto: _Automaton, flat: NDArray[np.int64], pos: NDArray[np.int64],
                      col: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Whether the byte before token ``pos`` (in the text of its completion) is a separator:
    the last byte of the nearest earlier token with a non-empty piece, or the completion's
    start."""
    out = np.ones(pos.size, dtype=bool)
    todo = np.flatnonzero(col > 0)
    back = pos[todo] - 1
    left = col[todo] - 1
    while todo.size:
        prev = flat[back]
        settled = ~auto.empty[prev]
        out[todo[settled]] = auto.last_sep[prev[settled]]
        keep = ~settled & (left > 0)  # at the completion's start: a separator (out stays True)
        todo, back, left = todo[keep], back[keep] - 1, left[keep] - 1
    return out


def _separated_after(auto: _Automaton, flat: NDArray[np.int64], pos: NDArray[np.int64],
                     col: NDArray[np.int64], length: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Whether the byte after token ``pos`` is a separator: the first byte of the next token
    with a non-empty piece (its unstripped variant: ``pos``'s piece ends in a word byte), or
    the completion's end."""
    out = np.ones(pos.size, dtype=bool)
    todo = np.flatnonzero(col + 1 < length)
    ahead, at = pos[todo] + 1, col[todo] + 1
    while todo.size:
        nxt = flat[ahead]
        settled = ~auto.empty[nxt]
        out[todo[settled]] = auto.first_sep[nxt[settled]]
        keep = ~settled & (at + 1 < length[todo])
        todo, ahead, at = todo[keep], ahead[keep] + 1, at[keep] + 1
    return out


def strategic_grams_mask(tokens: NDArray[Any], lengths: NDArray[Any], vocab: TokenVocab,
                         grams: Sequence[str] = DEFAULT_GRAMS) -> BoolArray:
    """bool ``[N, T]``: True on tokens that take part in one of ``grams``."""
    if not isinstance(vocab, TokenVocab):
        raise ConfigError(
            f"strategic_grams needs a textpolicy.vocab.TokenVocab, got {type(vocab).__name__}")
    tok = np.asarray(tokens, dtype=np.int64)
    lens = np.clip(np.asarray(lengths, dtype=np.int64).reshape(-1), 0, tok.shape[1])
    n, t = tok.shape
    if n == 0 or t == 0:
        return np.zeros((n, t), dtype=bool)
    auto = _automaton(vocab, tuple(grams))
    v = auto.size
    flat = tok.reshape(-1)
    if flat.min() < 0 or flat.max() >= v:  # ids outside the vocabulary add ""
        flat = np.where((flat >= 0) & (flat < v), flat, v)

    # 1. the tokens where a phrase can start, and their piece variant
    pos = np.flatnonzero(auto.may_start[flat])
    row, col = np.divmod(pos, t)
    real = col < lens[row]
    pos, row, col = pos[real], row[real], col[real]
    ids = flat[pos]  # a start's walk is the same in either variant (see _Automaton)
    count = auto.start_ptr[ids + 1] - auto.start_ptr[ids]
    entry = _ragged(auto.start_ptr[ids], count)
    pos, row, col = np.repeat(pos, count), np.repeat(row, count), np.repeat(col, count)
    head = auto.start_head[entry]
    if head.any():  # a start at an unstripped piece's first byte: word start or not
        ok = np.ones(entry.size, dtype=bool)
        ok[head] = _separated_before(auto, flat, pos[head], col[head])
        entry, pos, row, col = entry[ok], pos[ok], row[ok], col[ok]

    # 2. advance every live walk one token a step; collect (first, last) token spans
    first: list[NDArray[np.int64]] = [pos[auto.start_inside[entry]]]
    last: list[NDArray[np.int64]] = [first[0]]
    at_end = auto.start_at_end[entry]
    end_first, end_last, end_col, end_row = [pos[at_end]], [pos[at_end]], [col[at_end]], [
        row[at_end]]
    node = auto.start_node[entry]
    live = node != _DEAD
    start, cur, col, row, node = pos[live], pos[live], col[live], row[live], node[live]
    while start.size:
        go = col + 1 < lens[row]  # the completion's end stops a walk
        start, cur, col, row, node = start[go], cur[go] + 1, col[go] + 1, row[go], node[go]
        nxt = flat[cur]
        variant = nxt + auto.variants // 2 * auto.ends_sep[flat[cur - 1]]
        gap = auto.empty[variant]  # no byte added: the walk stays where it is
        key = node * auto.variants + variant
        slot = np.minimum(np.searchsorted(auto.keys, key), auto.keys.size - 1)
        found = (auto.keys[slot] == key) if auto.keys.size else np.zeros(key.size, dtype=bool)
        step = found & ~gap
        hit = slot[step]
        inside = auto.next_inside[hit]
        first.append(start[step][inside])
        last.append(cur[step][inside])
        ends = auto.next_at_end[hit]
        end_first.append(start[step][ends])
        end_last.append(cur[step][ends])
        end_col.append(col[step][ends])
        end_row.append(row[step][ends])
        moved = np.where(step, auto.next_node[slot] if auto.keys.size else _DEAD, _DEAD)
        node = np.where(gap, node, moved)
        keep = node != _DEAD
        start, cur, col, row, node = start[keep], cur[keep], col[keep], row[keep], node[keep]

    # 3. a phrase that ends with a piece counts when a separator (or the end) follows it
    e_last = np.concatenate(end_last)
    if e_last.size:
        e_row = np.concatenate(end_row)
        ok = _separated_after(auto, flat, e_last, np.concatenate(end_col), lens[e_row])
        first.append(np.concatenate(end_first)[ok])
        last.append(e_last[ok])
    span_first, span_last = np.concatenate(first), np.concatenate(last)
    covered = np.zeros(n * t, dtype=bool)
    if span_first.size:
        covered[_ragged(span_first, span_last - span_first + 1)] = True
    return covered.reshape(n, t)


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
