"""The ``math`` task: MATH problems, answers graded by ``textpolicy.grading``.

Data comes through ``datasets``: hub ids when online (train ``EleutherAI/hendrycks_math``
subject configs, splits train + test; eval ``HuggingFaceH4/MATH-500``), or local jsonl/parquet
files (``train_files`` / ``eval_files``). With local files, ``HF_HUB_OFFLINE=1``, or a hub that
does not accept one quick connection (``hub_unreachable``, said once in one line), the hub is
put in offline mode while loading: a cached hub id loads from the cache, an uncached one fails
in milliseconds with a ``TaskError`` naming the dataset instead of retrying for ~24 s.

Default splits: test = MATH-500 (the campaign endpoint); validation = ``validation_size``
problems carved from MATH minus MATH-500 by a fixed seeded rule (the smallest
``sha256(f"{validation_seed}:{unique_id}")``; where the LR sweep selects); train = the rest of
MATH minus MATH-500 (problems are matched by ``unique_id`` and by problem text, so no problem is
in two splits). Training examples are filtered by subject, put in a canonical
order (sorted by id) and shuffled by ``numpy.random.default_rng(seed)``: the order depends only
on the seed, so every arm of a campaign sees the same order. Gold answers are the ``answer``
field when present, else the last ``\\boxed{}`` of the solution; rows with no extractable gold
are dropped at load time and counted (``describe()["rejected_gold"]``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from textpolicy.engines.base import Tokenizer
from textpolicy.errors import ConfigError, TaskError
from textpolicy.grading import GradeRequest, MathGrader, extract_boxed
from textpolicy.tasks.base import Example, Grade, check_split

log = logging.getLogger(__name__)

DEFAULT_MODEL = "Qwen/Qwen3-4B-Instruct-2507"
TRAIN_HUB = "EleutherAI/hendrycks_math"
SAMPLE_DIR = Path(__file__).parent / "data"
EVAL_HUB = "HuggingFaceH4/MATH-500"
ALL_SUBJECTS: tuple[str, ...] = (
    "algebra", "counting_and_probability", "geometry", "intermediate_algebra",
    "number_theory", "prealgebra", "precalculus")
SEED_SUBJECTS: tuple[str, ...] = (
    "intermediate_algebra", "precalculus", "number_theory", "counting_and_probability",
    "geometry")
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
_LIST_HINT = re.compile(r"\bcommas\b|comma-separated", re.I)


def _subjects(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = ALL_SUBJECTS if value.strip().lower() == "all" else value.split(",")
    out = tuple(dict.fromkeys(normalize_subject(v) for v in value if str(v).strip()))
    if out == ("all",):
        return ALL_SUBJECTS
    bad = [s for s in out if s not in ALL_SUBJECTS]
    if bad or not out:
        raise ValueError(f"subjects: unknown subject {bad[0] if bad else '(none)'!r}; allowed: "
                         f"'all' or {', '.join(ALL_SUBJECTS)}")
    return out


def _files(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str | os.PathLike):
        return (os.fspath(value),)
    return tuple(os.fspath(v) for v in value)


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


@attrs.frozen
class MathParams:
    """Parameters of the ``math`` task (spec ``[task]`` keys / ``task_params``).

    ``train_files``/``eval_files``: local ``.jsonl`` or ``.parquet`` files (win over the hub
    ids). ``subjects``: ``"all"``, a comma list or a list (default: the seed's five).
    ``format_weight`` w: reward = correct + w·(format_ok − 1), i.e. a completion without a
    ``\\boxed{}`` answer gets −w. ``max_examples`` keeps a seed-independent subset of the
    training pool. ``eval_same_subjects`` restricts eval to ``subjects`` (default: all 500).
    ``validation_size`` problems of the training pool (MATH minus MATH-500, after the subject
    filter) form the validation split, chosen by the smallest ``sha256(f"{validation_seed}:
    {unique_id}")`` — fixed, the same for every seed and arm (default: 500, or a tenth of the
    pool when that is smaller; 0: no validation split).
    ``sample``: use the bundled offline sample (280 MATH-train and 133 MATH-500 problems of
    levels 1–2, ``textpolicy/tasks/data``) instead of files or the hub, to try the workflow.
    """

    train_dataset: str = TRAIN_HUB
    eval_dataset: str = EVAL_HUB
    train_files: tuple[str, ...] = attrs.field(default=(), converter=_files)
    eval_files: tuple[str, ...] = attrs.field(default=(), converter=_files)
    train_splits: tuple[str, ...] = attrs.field(default=("train", "test"), converter=tuple)
    dataset_revision: str | None = None
    subjects: tuple[str, ...] = attrs.field(default=SEED_SUBJECTS, converter=_subjects)
    exclude_eval_from_train: bool = True
    eval_same_subjects: bool = False
    max_examples: int | None = attrs.field(default=None, validator=_positive)
    format_weight: float = attrs.field(default=0.0, validator=_non_negative)
    instruction: str = INSTRUCTION
    validation_size: int | None = attrs.field(default=None, validator=_non_negative)
    validation_seed: int = attrs.field(default=0, validator=_non_negative)
    grader_workers: int = attrs.field(default=2, validator=_positive)
    grader_deadline_s: float = attrs.field(default=12.0, validator=_positive)
    sample: bool = False


def normalize_subject(value: Any) -> str:
    """``"Counting & Probability"`` → ``counting_and_probability``."""
    s = str(value).strip().lower().replace("&", "and")
    return re.sub(r"[^a-z]+", "_", s).strip("_")


def _norm_problem(text: str) -> str:
    return " ".join(text.split())


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").strip() or "https://huggingface.co"


@functools.lru_cache(maxsize=1)
def hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached from here (None: it can), decided once per
    process with one quick connection and said once in one line."""
    from textpolicy.netcheck import unreachable

    why = unreachable(hub_endpoint())
    if why is not None:
        log.warning("Hugging Face hub unreachable (%s): datasets load from the local cache only "
                    "(set HF_HUB_OFFLINE=1 to skip this check)", why)
    return why


@contextlib.contextmanager
def _hub_offline(force: bool) -> Iterator[bool]:
    """Offline mode for ``datasets`` while loading, when forced, when ``HF_HUB_OFFLINE`` is set
    or when the hub cannot be reached (instead of ≈ 20 s of retries)."""
    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    offline = force or env or hub_unreachable() is not None
    if not offline:
        yield False
        return
    import datasets

    saved = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = True
    try:
        yield True
    finally:
        datasets.config.HF_HUB_OFFLINE = saved


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_files(key: str, files: Sequence[str]) -> None:
    from textpolicy.errors import ConfigError

    for f in files:
        if not Path(f).is_file():
            raise ConfigError(f"task 'math': {key}: no such file {f!r} (give .jsonl or .parquet "
                              "files of MATH rows)")
        if Path(f).suffix not in (".jsonl", ".json", ".parquet"):
            raise ConfigError(f"task 'math': {key}: {f!r} is not a .jsonl/.json/.parquet file")


def _load_files(files: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """``(source stem, row)`` for every row of local jsonl/parquet files."""
    import datasets

    out: list[tuple[str, dict[str, Any]]] = []
    for f in files:
        builder = "parquet" if f.endswith(".parquet") else "json"
        try:
            ds = datasets.load_dataset(builder, data_files=[f], split="train")
        except Exception as exc:
            raise TaskError(f"task 'math': cannot read {f!r}: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
        stem = Path(f).stem
        out.extend((stem, dict(row)) for row in ds)
    return out


def _load_hub(name: str, config: str | None, split: str, revision: str | None,
              offline: bool) -> Any:
    import datasets

    try:
        return datasets.load_dataset(name, config, split=split, revision=revision)
    except Exception as exc:
        where = f"{name}" + (f" (config {config!r}, split {split!r})" if config else
                             f" (split {split!r})")
        hint = ("hub offline (unreachable, HF_HUB_OFFLINE or local files given) and not in "
                "the local datasets cache: give local files with train_files=/eval_files="
                if offline else "check the id and your network")
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TaskError(f"task 'math': cannot load dataset {where}: {first[:200]}; {hint}"
                        ) from None


def _hub_revision(name: str, revision: str | None, offline: bool) -> str | None:
    if offline:
        return revision
    try:
        from huggingface_hub import HfApi

        return str(HfApi().dataset_info(name, revision=revision, timeout=10).sha)
    except Exception:
        return revision


DEFAULT_VALIDATION_SIZE = 500


def _carve_validation(pool: list[Example], test: Sequence[Example], size: int | None,
                      seed: int) -> tuple[list[Example], list[Example]]:
    """(train, validation): ``size`` problems of ``pool`` that are not test problems, chosen by
    the smallest ``sha256(f"{seed}:{id}")`` (in that order); train keeps the rest of ``pool``
    minus any problem whose text is a validation problem's. ``size=None``: 500, or a tenth of
    the candidates when that is smaller."""
    if size == 0:
        return pool, []
    test_ids = {e.id for e in test}
    test_text = {_norm_problem(e.prompt) for e in test}
    candidates = [e for e in pool
                  if e.id not in test_ids and _norm_problem(e.prompt) not in test_text]
    if size is None:
        size = min(DEFAULT_VALIDATION_SIZE, len(candidates) // 10)
        if size == 0:
            return pool, []
    ranked = sorted(candidates,
                    key=lambda e: hashlib.sha256(f"{seed}:{e.id}".encode()).hexdigest())
    validation = ranked[:size]
    ids = {e.id for e in validation}
    texts = {_norm_problem(e.prompt) for e in validation}
    train = [e for e in pool if e.id not in ids and _norm_problem(e.prompt) not in texts]
    if len(validation) < size or not train:
        raise TaskError(f"task 'math': validation_size={size} leaves no training examples "
                        f"(the pool has {len(candidates)} problems outside the eval set); "
                        "lower validation_size")
    return train, validation


class MathTask:
    """MATH problems with the ``textpolicy.grading`` stack (see the module docstring)."""

    name = "math"
    default_model = DEFAULT_MODEL

    def __init__(self, params: MathParams | None = None, *,
                 grader: MathGrader | None = None) -> None:
        self.params = params or MathParams()
        if self.params.sample and (self.params.train_files or self.params.eval_files):
            raise ConfigError("task 'math': sample = true uses the bundled sample; drop "
                              "train_files/eval_files (or set sample = false)")
        _check_files("train_files", self.params.train_files)
        _check_files("eval_files", self.params.eval_files)
        self.grader = grader or MathGrader(self.params.grader_workers,
                                           deadline_s=self.params.grader_deadline_s)
        self._train: list[Example] | None = None
        self._eval: list[Example] | None = None
        self._validation: list[Example] = []
        self._fingerprint: dict[str, Any] = {}
        self.rejected_gold: dict[str, int] = {"train": 0, "eval": 0}
        self.excluded_eval_overlap = 0
        self.timeouts = 0

    # -- loading ---------------------------------------------------------------------------
    def _rows(self, which: str) -> list[tuple[str, dict[str, Any]]]:
        p = self.params
        files = p.train_files if which == "train" else p.eval_files
        if p.sample:
            files = (str(SAMPLE_DIR / f"math_sample_{'train' if which == 'train' else 'test'}"
                         ".jsonl"),)
        offline_forced = bool(p.train_files or p.eval_files or p.sample)
        if files:
            with _hub_offline(True):
                rows = _load_files(files)
            self._fingerprint[f"{which}_files"] = {
                Path(f).name: {"path": os.path.abspath(f), "sha256": _sha256(f)} for f in files}
            return rows
        name = p.train_dataset if which == "train" else p.eval_dataset
        rows = []
        with _hub_offline(offline_forced) as offline:
            if which == "train":
                for subject in p.subjects:
                    for split in p.train_splits:
                        ds = _load_hub(name, subject, split, p.dataset_revision, offline)
                        rows.extend((f"{split}/{subject}", {**dict(r), "subject": subject})
                                    for r in ds)
            else:
                ds = _load_hub(name, None, "test", p.dataset_revision, offline)
                rows.extend(("test", dict(r)) for r in ds)
            self._fingerprint[f"{which}_hub"] = {
                "dataset": name, "revision": _hub_revision(name, p.dataset_revision, offline)}
        return rows

    def _examples(self, which: str, rows: list[tuple[str, dict[str, Any]]]) -> list[Example]:
        out: list[Example] = []
        seen: set[str] = set()
        for i, (source, row) in enumerate(rows):
            problem = str(row.get("problem") or row.get("question") or "")
            solution = str(row.get("solution") or "")
            subject = normalize_subject(row.get("subject") or row.get("type") or "")
            uid = str(row.get("unique_id") or f"{source}/{i}")
            if uid in seen:
                uid = f"{uid}#{i}"
            seen.add(uid)
            answer = row.get("answer")
            gold = str(answer).strip() if answer not in (None, "") else extract_boxed(solution)
            if not problem or not gold:
                self.rejected_gold[which] += 1
                log.warning("math: %s row %s has no extractable gold answer; skipped", which, uid)
                continue
            out.append(Example(
                id=uid, prompt=problem, answer=gold,
                metadata={"subject": subject, "level": str(row.get("level", "")),
                          "list_answer": bool(_LIST_HINT.search(problem))}))
        return out

    def _load(self) -> None:
        if self._train is not None and self._eval is not None:
            return
        p = self.params
        eval_all = self._examples("eval", self._rows("eval"))
        if p.eval_same_subjects:
            eval_all = [e for e in eval_all if e.metadata["subject"] in p.subjects]
        train = self._examples("train", self._rows("train"))
        train = [e for e in train if e.metadata["subject"] in p.subjects]
        if p.exclude_eval_from_train:
            ids = {e.id for e in eval_all}
            problems = {_norm_problem(e.prompt) for e in eval_all}
            kept = [e for e in train if e.id not in ids and _norm_problem(e.prompt) not in problems]
            self.excluded_eval_overlap = len(train) - len(kept)
            train = kept
        train.sort(key=lambda e: e.id)
        train, self._validation = _carve_validation(train, eval_all, p.validation_size,
                                                    p.validation_seed)
        if p.max_examples is not None and len(train) > p.max_examples:
            keep = np.sort(np.random.default_rng(0).permutation(len(train))[: p.max_examples])
            train = [train[i] for i in keep]
        if not train:
            raise TaskError(f"task 'math': no training examples for subjects "
                            f"{', '.join(p.subjects)}")
        if sum(self.rejected_gold.values()):
            log.warning("math: rejected %d train / %d eval rows without an extractable gold answer",
                        self.rejected_gold["train"], self.rejected_gold["eval"])
        self._train, self._eval = train, eval_all
        h = hashlib.sha256()
        for split, exs in (("train", train), ("eval", eval_all),
                           ("validation", self._validation)):
            for e in exs:
                h.update(f"{split}\x00{e.id}\x00{e.prompt}\x00{e.answer}\x00".encode())
        self._fingerprint["content_sha256"] = h.hexdigest()

    # -- Task interface --------------------------------------------------------------------
    def train_examples(self, seed: int) -> Sequence[Example]:
        self._load()
        assert self._train is not None
        order = np.random.default_rng(seed).permutation(len(self._train))
        return [self._train[i] for i in order]

    def eval_examples(self, limit: int | None = None, split: str = "test"
                      ) -> Sequence[Example]:
        self._load()
        assert self._eval is not None
        if check_split(self.name, split) == "validation" and not self._validation:
            from textpolicy.errors import ConfigError

            raise ConfigError("task 'math': validation_size = 0: there is no validation split "
                              "to evaluate; set validation_size > 0")
        pool = self._eval if split == "test" else self._validation
        return list(pool if limit is None else pool[:limit])

    def prompt_text(self, example: Example) -> str:
        return f"{example.prompt}\n\n{self.params.instruction}"

    def render_prompt(self, example: Example, tokenizer: Tokenizer) -> list[int]:
        text = self.prompt_text(example)
        if getattr(tokenizer, "chat_template", None):
            rendered = tokenizer.apply_chat_template(  # type: ignore[attr-defined]
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
            return list(tokenizer.encode(str(rendered), add_special_tokens=False))
        return list(tokenizer.encode(text + "\n"))

    def grade(self, example: Example, completion: str) -> Grade:
        return self.grade_many([(example, completion)])[0]

    def grade_many(self, pairs: Sequence[tuple[Example, str]]) -> list[Grade]:
        boxes = [extract_boxed(completion) for _ex, completion in pairs]
        requests = [GradeRequest(box or "", ex.answer, bool(ex.metadata.get("list_answer")))
                    for (ex, _c), box in zip(pairs, boxes, strict=True)]
        results = self.grader.grade_many(requests)
        w = self.params.format_weight
        grades = []
        for box, res in zip(boxes, results, strict=True):
            format_ok = bool(box)
            correct = format_ok and res.correct
            self.timeouts += res.timed_out
            grades.append(Grade(reward=float(correct) + w * (float(format_ok) - 1.0),
                                correct=correct, format_ok=format_ok, timed_out=res.timed_out))
        return grades

    def fingerprint(self) -> Mapping[str, Any]:
        self._load()
        return dict(self._fingerprint)

    def describe(self) -> Mapping[str, Any]:
        self._load()
        assert self._train is not None and self._eval is not None
        params = attrs.asdict(self.params)
        params["subjects"] = list(self.params.subjects)
        return {
            "name": self.name,
            "params": params,
            "train_size": len(self._train),
            "eval_size": len(self._eval),
            "validation_size": len(self._validation),
            "split": (f"test = the eval set ({len(self._eval)}); validation = "
                      f"{len(self._validation)} of MATH minus the eval set by the smallest "
                      f"sha256('{self.params.validation_seed}:' + id); train = the rest"),
            "rejected_gold": dict(self.rejected_gold),
            "excluded_eval_overlap": self.excluded_eval_overlap,
            "reward": "correct + format_weight * (format_ok - 1)",
            "grader": self.grader.describe(),
        }

    def close(self) -> None:
        self.grader.close()
