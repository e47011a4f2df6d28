"""TokenVocab: the text each token id contributes to decoded text (for planning detectors).

Detectors match phrases on text, but stages work on token ids. A ``TokenVocab`` maps every id
to its *piece*: the characters it adds when a completion is decoded, with byte-level BPE
(``Ġan`` → ``" an"``, ``Ċ`` → ``"\\n"``), SentencePiece (``▁an`` → ``" an"``, ``<0x0A>`` →
``"\\n"``) and WordPiece (``##other`` → ``"other"``) conventions resolved. Concatenating the
pieces of a completion gives its text, so a character span found in that text maps back to the
tokens that cover it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from textpolicy.errors import ConfigError

Scheme = Literal["auto", "byte-level", "sentencepiece", "wordpiece", "plain"]

__all__ = ["TokenVocab", "byte_level_alphabet"]

_SP_BYTE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def byte_level_alphabet() -> dict[str, int]:
    """The byte-level BPE alphabet (GPT-2 convention): printable character → byte value.

    Bytes ``!``..``~``, ``¡``..``¬`` and ``®``..``ÿ`` stand for themselves; every other byte
    ``b`` is written as ``chr(256 + k)`` where ``k`` counts those other bytes in order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    kept = set(keep)
    table = {chr(b): b for b in keep}
    k = 0
    for b in range(256):
        if b not in kept:
            table[chr(256 + k)] = b
            k += 1
    return table


def _decode_byte_level(piece: str, alphabet: dict[str, int]) -> str:
    out = bytearray()
    for ch in piece:
        b = alphabet.get(ch)
        if b is None:
            out.extend(ch.encode("utf-8"))
        else:
            out.append(b)
    return out.decode("utf-8", errors="replace")


def _decode_sentencepiece(piece: str) -> str:
    m = _SP_BYTE.match(piece)
    if m:
        value = int(m.group(1), 16)
        return chr(value) if value < 0x80 else "\ufffd"
    return piece.replace("▁", " ")


def _detect_scheme(pieces: Sequence[str]) -> Scheme:
    sample = pieces if len(pieces) <= 50_000 else list(pieces[:50_000])
    if any("Ġ" in p or "Ċ" in p for p in sample):
        return "byte-level"
    if any("▁" in p for p in sample):
        return "sentencepiece"
    if any(p.startswith("##") for p in sample):
        return "wordpiece"
    return "plain"


class TokenVocab:
    """Token id → piece text. Build with one of the named constructors.

    ``pieces[i]`` is the text token ``i`` adds to decoded text; ``normalized`` holds the pieces
    lower-cased with typographic apostrophes folded to ``'`` (what detectors match on), and
    ``normalized_lengths`` their lengths. Ids outside the vocabulary decode to ``""``.
    """

    __slots__ = ("_norm_lengths", "_normalized", "pieces")

    def __init__(self, pieces: Sequence[str]) -> None:
        if isinstance(pieces, str) or not all(isinstance(p, str) for p in pieces):
            raise ConfigError("TokenVocab pieces must be a sequence of strings")
        self.pieces: tuple[str, ...] = tuple(pieces)
        norm = [_normalize(p) for p in self.pieces]
        self._normalized = np.empty(len(norm), dtype=object)
        self._normalized[:] = norm
        self._norm_lengths = np.fromiter((len(p) for p in norm), dtype=np.int64,
                                         count=len(norm))

    # -- constructors -------------------------------------------------------------------------

    @classmethod
    def from_pieces(cls, pieces: Sequence[str], *, scheme: Scheme = "auto") -> TokenVocab:
        """Pieces as a tokenizer spells them (``Ġan``, ``▁an``, ``##an``, ``<0x0A>``).

        ``scheme="auto"`` picks the convention from the pieces themselves."""
        pieces = list(pieces)
        chosen = _detect_scheme(pieces) if scheme == "auto" else scheme
        if chosen == "byte-level":
            alphabet = byte_level_alphabet()
            return cls([_decode_byte_level(p, alphabet) for p in pieces])
        if chosen == "sentencepiece":
            return cls([_decode_sentencepiece(p) for p in pieces])
        if chosen == "wordpiece":
            return cls([p[2:] if p.startswith("##") else " " + p for p in pieces])
        if chosen == "plain":
            return cls(pieces)
        raise ConfigError(f"unknown vocabulary scheme {scheme!r}")

    @classmethod
    def from_words(cls, words: Sequence[str]) -> TokenVocab:
        """A word-per-token vocabulary: each token is a separate word (joined by spaces)."""
        return cls([" " + w for w in words])

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> TokenVocab:
        """From a Hugging Face tokenizer (fast or slow); added and special tokens included.

        The vocabulary covers ``len(tokenizer)`` ids; special tokens keep their literal text."""
        size = len(tokenizer)
        raw = tokenizer.convert_ids_to_tokens(list(range(size)))
        raw = ["" if p is None else str(p) for p in raw]
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        added: set[int] = set()
        get_added = getattr(tokenizer, "get_added_vocab", None)
        if callable(get_added):
            added = {int(i) for i in get_added().values()}
        scheme = _detect_scheme([p for i, p in enumerate(raw) if i not in added])
        vocab = cls.from_pieces(raw, scheme=scheme)
        pieces = list(vocab.pieces)
        for i in special | added:
            if 0 <= i < size:
                pieces[i] = raw[i]
        return cls(pieces)

    # -- use --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.pieces)

    def __repr__(self) -> str:
        return f"TokenVocab({len(self)} pieces)"

    @property
    def normalized(self) -> NDArray[np.object_]:
        return self._normalized

    @property
    def normalized_lengths(self) -> NDArray[np.int64]:
        return self._norm_lengths

    def decode(self, ids: Sequence[int] | NDArray[Any]) -> str:
        """The text of ``ids`` (ids outside the vocabulary contribute nothing)."""
        n = len(self.pieces)
        return "".join(self.pieces[i] if 0 <= i < n else "" for i in map(int, ids))


def _normalize(piece: str) -> str:
    low = piece.lower()
    if len(low) != len(piece):  # e.g. 'İ' lower-cases to two characters: keep offsets simple
        low = "".join(c.lower() if len(c.lower()) == 1 else c for c in piece)
    return low.replace("\u2019", "'").replace("\u02bc", "'")
