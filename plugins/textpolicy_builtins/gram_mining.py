"""Mine candidate strategic grams from correct solutions (``tp mine-grams``).

The HICRA paper (Wang et al. 2025, arXiv 2509.03646) takes *strategic grams* to be 3–5-word
n-grams that successful solutions share: phrases such as "we can use the fact that" that steer
a solution rather than carry its arithmetic. This module finds such candidates by **document
frequency** — how many distinct correct solutions use a phrase at least once — with these rules:

* **math content cannot qualify**: ``$…$``, ``$$…$$``, ``\\(…\\)``, ``\\[…\\]`` and
  ``\\begin{…}…\\end{…}`` spans and every LaTeX command are removed, and a gram is made only of
  consecutive *plain words*: letters (an inner apostrophe allowed: ``let's``), not a digit, not a
  one-letter variable (``x``, ``n``, ``i``; the article ``a`` stays), not a number word
  (``two``, ``hundred``). A removed span, a non-qualifying word and sentence punctuation
  (``. ! ? ; :``, brackets, operators, line breaks) all end a run, so no gram spans across
  math; commas do not (the detector reads ``wait, let me`` as ``wait let me``);
* **spread**: a gram must occur in at least ``min_share`` of the solutions and in solutions of
  at least ``min_prompts`` distinct prompts (eight samples of one problem sharing its wording
  do not make a strategy);
* **not one subject's wording**: when the solutions carry a subject (MATH's ``type``), a gram
  whose share in its most frequent subject exceeds ``max_subject_ratio`` × its overall share is
  dropped ("ways to choose" lives in counting, "we know that" everywhere);
* **not topic wording**: with background text (the problem statements), a gram that the
  problems use as well — at a share above ``max_background_ratio`` × its solution share — is
  dropped: "the number of ways" is the problems' topic, "we can use the fact that" is the
  solvers' move. (The paper clusters grams semantically instead; this contrast is ours.);
* **no redundancy**: grams are taken by document frequency (longer first on ties) and one that
  contains, sits inside, or overlaps all but one word of an already chosen gram is skipped,
  since the detector would mark (nearly) the same tokens.

Words are compared in the detector's canonical form (lower case, typographic apostrophes
folded), so every mined phrase is one :func:`~textpolicy_builtins.planning.canonical_phrase`
would produce and ``strategic_grams`` matches it wherever it occurs.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

from textpolicy.errors import ConfigError

_MATH_SPAN = re.compile(
    r"\$\$.*?\$\$|\$.*?\$|\\\[.*?\\\]|\\\(.*?\\\)|\\begin\{([^}]*)\}.*?\\end\{\1\}", re.S)
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+|\\.")
# what ends a run of words: sentence punctuation, brackets, operators, quotes, line breaks
_BREAK = re.compile(r"[.!?;:()\[\]{}=<>+*/^_|\\\"\n\r\t\u2013\u2014-]+|\x00")
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")
_NUMBER_WORDS_TEXT = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy "
    "eighty ninety hundred thousand million billion")
NUMBER_WORDS = frozenset(_NUMBER_WORDS_TEXT.split())


@attrs.frozen
class Solution:
    """One correct solution: its text, the prompt it answers (distinct-prompt counting) and
    optionally its subject."""

    text: str
    prompt: str
    subject: str | None = None


@attrs.frozen
class MinedGram:
    """One candidate: the phrase, in how many solutions (and distinct prompts) it occurs, and
    the share of background documents that use it."""

    phrase: str
    solutions: int
    prompts: int
    solution_share: float
    background_share: float


@attrs.frozen
class MiningResult:
    grams: tuple[MinedGram, ...]
    documents: int  # correct solutions read
    prompts: int  # distinct prompts among them
    background_documents: int
    candidates: int  # distinct n-grams seen before any filter


def _plain_word(word: str) -> str | None:
    """The canonical word if it may take part in a gram, else None (math content)."""
    w = word.lower()
    if len(w) == 1 and w != "a":
        return None  # a variable (x, n, i) — the article "a" stays
    if w in NUMBER_WORDS:
        return None
    return w


def word_runs(text: str) -> list[list[str]]:
    """The runs of consecutive plain words of ``text`` (math removed; see the module doc)."""
    text = text.replace("\u2019", "'").replace("\u02bc", "'")
    text = _MATH_SPAN.sub("\x00", text)
    text = _LATEX_COMMAND.sub("\x00", text)
    runs: list[list[str]] = []
    for segment in _BREAK.split(text):
        run: list[str] = []
        for raw in segment.replace(",", " ").split():
            m = _WORD.fullmatch(raw.strip("'"))
            word = _plain_word(m.group(0)) if m else None
            if word is None:
                if run:
                    runs.append(run)
                run = []
            else:
                run.append(word)
        if run:
            runs.append(run)
    return runs


def document_grams(text: str, min_n: int = 3, max_n: int = 5) -> set[str]:
    """Every distinct ``min_n``..``max_n``-word gram of ``text`` (each counted once)."""
    out: set[str] = set()
    for run in word_runs(text):
        for n in range(min_n, min(max_n, len(run)) + 1):
            out.update(" ".join(run[i:i + n]) for i in range(len(run) - n + 1))
    return out


def _redundant(words: tuple[str, ...], chosen: Sequence[tuple[str, ...]]) -> bool:
    text = " " + " ".join(words) + " "
    for other in chosen:
        other_text = " " + " ".join(other) + " "
        if other_text in text or text in other_text:
            return True
        k = min(len(words), len(other)) - 1  # overlap all but one word at either edge
        if k >= 2 and (words[:k] == other[-k:] or words[-k:] == other[:k]):
            return True
    return False


def mine_grams(
    documents: Iterable[Solution],
    background: Iterable[str] = (),
    *,
    min_n: int = 3,
    max_n: int = 5,
    min_share: float = 0.01,
    min_prompts: int = 3,
    max_background_ratio: float = 0.25,
    max_subject_ratio: float = 3.0,
    top: int = 64,
) -> MiningResult:
    """Candidate strategic grams of ``documents`` (correct solutions).

    ``background``: texts whose wording is topic, not strategy (the problem statements).
    Returns at most ``top`` grams, by solution document frequency."""
    if not 1 <= min_n <= max_n:
        raise ConfigError(f"mine-grams: need 1 <= min_n <= max_n, got {min_n}..{max_n}")
    if not 0.0 < min_share <= 1.0:
        raise ConfigError(f"mine-grams: min_share must be in (0, 1], got {min_share}")
    if min_prompts < 1 or top < 1:
        raise ConfigError("mine-grams: min_prompts and top must be >= 1")
    if max_background_ratio < 0 or max_subject_ratio < 1:
        raise ConfigError("mine-grams: need max_background_ratio >= 0, max_subject_ratio >= 1")
    df: Counter[str] = Counter()
    by_prompt: dict[str, set[str]] = {}
    by_subject: dict[str, Counter[str]] = {}
    subject_docs: Counter[str] = Counter()
    n_docs = 0
    for doc in documents:
        grams = document_grams(doc.text, min_n, max_n)
        n_docs += 1
        df.update(grams)
        by_prompt.setdefault(doc.prompt, set()).update(grams)
        if doc.subject is not None:
            by_subject.setdefault(doc.subject, Counter()).update(grams)
            subject_docs[doc.subject] += 1
    if n_docs == 0:
        raise ConfigError("mine-grams: no correct solutions to mine")
    prompt_df: Counter[str] = Counter()
    for grams in by_prompt.values():
        prompt_df.update(grams)
    threshold = max(1, -(-min_share * n_docs // 1))
    frequent = {g: c for g, c in df.items()
                if c >= threshold and prompt_df[g] >= min_prompts}
    bg_df: Counter[str] = Counter()
    n_bg = 0
    for text in background:
        n_bg += 1
        bg_df.update(document_grams(text, min_n, max_n) & frequent.keys())
    ranked = sorted(frequent.items(), key=lambda kv: (-kv[1], -kv[0].count(" "), kv[0]))
    chosen: list[tuple[str, ...]] = []
    out: list[MinedGram] = []
    for phrase, count in ranked:
        share = count / n_docs
        bg_share = bg_df[phrase] / n_bg if n_bg else 0.0
        if bg_share > max_background_ratio * share:
            continue
        if len(by_subject) > 1:
            peak = max(c[phrase] / subject_docs[s] for s, c in by_subject.items())
            if peak > max_subject_ratio * share:
                continue
        words = tuple(phrase.split(" "))
        if _redundant(words, chosen):
            continue
        chosen.append(words)
        out.append(MinedGram(phrase=phrase, solutions=count, prompts=prompt_df[phrase],
                             solution_share=share, background_share=bg_share))
        if len(out) >= top:
            break
    return MiningResult(grams=tuple(out), documents=n_docs, prompts=len(by_prompt),
                        background_documents=n_bg, candidates=len(df))


# --------------------------------------------------------------------------------------------
# Reading solutions

_TEXT_FIELDS = ("completion", "solution", "response", "text")
_CORRECT_FIELDS = ("correct", "score")
_PROMPT_FIELDS = ("prompt_id", "unique_id", "idx", "id")
_SUBJECT_FIELDS = ("subject", "type")
_BACKGROUND_FIELDS = ("problem", "question", "prompt")


@attrs.frozen
class Fields:
    """Which JSONL fields hold what (None: the first of the usual names that a row has)."""

    text: str | None = None
    correct: str | None = None
    prompt: str | None = None
    subject: str | None = None
    background: str | None = None


def _pick(row: dict[str, object], chosen: str | None, usual: tuple[str, ...]) -> str | None:
    if chosen is not None:
        return chosen
    return next((k for k in usual if k in row), None)


def _texts(value: object, where: str, field: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"{where}: field {field!r} must be a string or a list of strings, "
                      f"got {type(value).__name__}")


def _flags(value: object, n: int, where: str, field: str) -> list[bool]:
    values = value if isinstance(value, list) else [value]
    if len(values) != n or not all(isinstance(v, bool | int | float) for v in values):
        raise ConfigError(f"{where}: field {field!r} must be {n} true/false value(s) (one per "
                          f"text), got {value!r:.80}")
    return [bool(v) for v in values]


def _jsonl_rows(path: Path) -> Iterable[tuple[str, dict[str, object]]]:
    import json

    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{where}: not a JSON line ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ConfigError(f"{where}: a row must be a JSON object")
            yield where, row


def read_solutions(path: Path, fields: Fields = Fields()) -> tuple[list[Solution], list[str]]:
    """Correct solutions and background texts (problem statements) from ``path``:

    * a run directory: ``emergence/generations.jsonl``, completions whose
      ``metadata.correctness`` is true (else ``reward > 0``), background = the distinct prompts;
    * a ``.jsonl`` file: ``fields.text`` (a string or a list of strings per row; default the
      first of completion/solution/response/text), kept where ``fields.correct`` (a flag or a
      list of flags; default correct/score when present, else every row) is true, prompt key
      ``fields.prompt`` (default prompt_id/unique_id/idx/id, else the row), subject
      ``fields.subject`` (default subject/type), background ``fields.background`` (default
      problem/question/prompt);
    * any other file: UTF-8 text, each non-empty line one solution (no background)."""
    path = Path(path)
    if path.is_dir():
        gen = path / "emergence" / "generations.jsonl"
        if not gen.is_file():
            raise ConfigError(f"{path}: a run directory needs emergence/generations.jsonl")
        sols: list[Solution] = []
        prompts: dict[str, str] = {}
        for where, row in _jsonl_rows(gen):
            meta = row.get("metadata")
            flag = meta.get("correctness") if isinstance(meta, dict) else None
            correct = bool(flag) if flag is not None else float(row.get("reward") or 0) > 0  # type: ignore[arg-type]
            text = row.get("completion")
            if not isinstance(text, str):
                raise ConfigError(f"{where}: generations row without a 'completion' string")
            key = str(row.get("prompt_id"))
            prompt = row.get("prompt")
            if isinstance(prompt, str):
                prompts.setdefault(key, prompt)
            if correct:
                sols.append(Solution(text=text, prompt=key))
        return sols, list(prompts.values())
    if not path.is_file():
        raise ConfigError(f"{path}: no such file or run directory")
    if path.suffix != ".jsonl":
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text") from None
        return [Solution(text=t, prompt=str(i)) for i, t in enumerate(lines) if t.strip()], []
    sols = []
    background: list[str] = []
    for index, (where, row) in enumerate(_jsonl_rows(path)):
        text_f = _pick(row, fields.text, _TEXT_FIELDS)
        if text_f is None or text_f not in row:
            wanted = fields.text or " / ".join(_TEXT_FIELDS)
            raise ConfigError(f"{where}: no text field {wanted!r} (choose one with --text-field)")
        texts = _texts(row[text_f], where, text_f)
        correct_f = _pick(row, fields.correct, _CORRECT_FIELDS)
        if correct_f is None:
            flags = [True] * len(texts)
        elif correct_f not in row:
            raise ConfigError(f"{where}: no correctness field {correct_f!r}")
        else:
            flags = _flags(row[correct_f], len(texts), where, correct_f)
        prompt_f = _pick(row, fields.prompt, _PROMPT_FIELDS)
        key = str(row[prompt_f]) if prompt_f is not None and prompt_f in row else str(index)
        subject_f = _pick(row, fields.subject, _SUBJECT_FIELDS)
        subject = row.get(subject_f) if subject_f is not None else None
        sols.extend(Solution(text=t, prompt=key,
                             subject=None if subject is None else str(subject))
                    for t, ok in zip(texts, flags, strict=True) if ok)
        bg_f = _pick(row, fields.background, _BACKGROUND_FIELDS)
        if bg_f is not None and isinstance(row.get(bg_f), str):
            background.append(str(row[bg_f]))
    return sols, background


# --------------------------------------------------------------------------------------------
# The phrase file


def format_grams_file(result: MiningResult, header: Sequence[str]) -> str:
    """The phrase file ``strategic_grams`` reads with ``grams_file``: one phrase a line, ``#``
    starts a comment (here: the provenance header and each phrase's counts)."""
    lines = [f"# {h}" for h in header]
    lines.append(f"# {result.documents} correct solutions of {result.prompts} prompts, "
                 f"{result.background_documents} background texts, "
                 f"{result.candidates} distinct n-grams seen; {len(result.grams)} kept")
    lines.append("# phrase\t# solutions using it (share), distinct prompts, background share")
    for g in result.grams:
        lines.append(f"{g.phrase}\t# {g.solutions} ({g.solution_share:.2%}), {g.prompts} "
                     f"prompts, background {g.background_share:.2%}")
    return "\n".join(lines) + "\n"
