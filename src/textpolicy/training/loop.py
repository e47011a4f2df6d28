"""The step loop of one session of a run: train steps, held-out evals, checkpoints, and the
rows they write to the run directory (the set-up, resume checks and entry point,
:func:`~textpolicy.training.session.run_training`, are in :mod:`textpolicy.training.session`).

Per step ``s`` (0-based):

1. a fresh sampling client from the current weights (reused from the eval that just ran on the
   same weights, if any);
2. the step's ``batch_size`` prompts are all submitted (``sample(num_samples=group_size)``)
   before any is awaited, each with its own seed derived from ``(seed, step, group)``;
3. completions are decoded and graded (``task.grade_many``); the Rollouts hold ALL completions,
   uniform-reward groups included;
4. the pipeline runs once; the loss-aggregation mode is folded into the token advantages;
5. one datum per completion whose token advantages are not all zero (next-token shifted by
   ``build_rl_datum``); ``forward_backward`` and ``optim_step`` are submitted back to back and
   then awaited (a step without trainable datum trains nothing and still logs a row);
6. at the boundary ``k = s + 1``: the held-out eval at ``k`` when due (its rows go to
   eval.jsonl), the step's rows (generations, steps, metrics) are written and fsynced, then a
   checkpoint at ``k`` when due (state first, the checkpoint row last).

Eval at step ``k`` means after ``k`` training steps (0 = the initial model). The metrics row of
step ``s`` carries ``eval_pass@1`` (and ``eval_pass@<n>``) of the eval at ``s`` — the weights its
samples came from — and the last row also carries ``final_eval_pass@1`` of the eval at
``max_steps``. Resume: see :mod:`textpolicy.training.runfiles`.
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from numpy.typing import NDArray

from textpolicy.engines.base import (
    AdamParams,
    Datum,
    SampledSequence,
    SamplingClient,
    SamplingParams,
    Tokenizer,
    TrainingClient,
    build_rl_datum,
    build_sft_datum,
)
from textpolicy.errors import EngineError
from textpolicy.rollouts import Rollouts
from textpolicy.tasks.base import Example, Task
from textpolicy.training.config import TrainConfig
from textpolicy.training.data import DataOrder
from textpolicy.training.diagnostics import (
    DUPLICATE_WARN_EXCESS,
    duplicate_completion_rate,
    expected_duplicate_rate,
    mean_token_entropy,
    sampler_learner_kl,
)
from textpolicy.training.evaluation import EvalResult, result_from_rows, run_eval
from textpolicy.training.progress import Reporter
from textpolicy.training.runfiles import (
    CHECKPOINT_DIR,
    EVAL,
    GENERATIONS,
    METRICS,
    STEPS,
    RunFiles,
    fsync_tree,
    read_jsonl,
)
from textpolicy.training.seeds import step_rng, train_sampling_seed

#: how many top-k logprobs are requested when the pipeline's signal is ``entropy`` and the
#: vocabulary is larger than ``EXACT_ENTROPY_MAX_VOCAB`` (the entropy is then a lower bound).
ENTROPY_TOPK = 20
#: vocabularies up to this size are requested in full: the entropy signal is exact.
EXACT_ENTROPY_MAX_VOCAB = 256


def entropy_topk(tokenizer: Any) -> int:
    """Top-k logprobs to request for the ``entropy`` signal: the whole vocabulary when it has
    at most ``EXACT_ENTROPY_MAX_VOCAB`` tokens (exact entropy), else ``ENTROPY_TOPK``."""
    try:
        size = len(tokenizer)
    except TypeError:
        return ENTROPY_TOPK
    return size if 0 < size <= EXACT_ENTROPY_MAX_VOCAB else ENTROPY_TOPK

#: the keys of every metrics row (eval keys are added on eval steps).
METRIC_KEYS: tuple[str, ...] = (
    "step", "loss", "mean_reward", "correct_rate", "running_correct_rate",
    "max_token_hit_rate", "sepa_lambda", "sepa_gate_open", "num_datums", "step_time_s",
    "condition", "lr", "mean_completion_tokens", "planning_token_share",
    "credit_moved_share", "temperature", "duplicate_completion_rate", "expected_duplicate_rate",
    "kl_sampler_learner_k1",
    "kl_sampler_learner_k3", "importance_ratio_mean", "kl_tokens", "mean_token_entropy",
    "entropy_estimator",
)


@attrs.frozen
class RunOutcome:
    """What :func:`~textpolicy.training.session.run_training` returns.

    Attributes:
        log_dir: the run directory.
        steps_done: training steps completed (over every session of the run).
        status: ``"finished"`` (``max_steps`` reached) or ``"stopped"`` (``stop`` was set;
            re-run to resume).
        resumed_from: the checkpoint step this session started from (None: fresh start).
        final_eval: pass@k of the final held-out eval, when one ran.
        last_metrics: the last metrics row written in this session (None if none).
        note: a human-readable remark (e.g. why nothing was done).
    """

    log_dir: str
    steps_done: int
    status: str
    resumed_from: int | None = None
    final_eval: Mapping[str, float] | None = None
    last_metrics: Mapping[str, Any] | None = None
    note: str = ""


# ---------------------------------------------------------------------------------------------
# Datums


def build_datum(loss: str, prompt_ids: Sequence[int], completion_ids: Sequence[int],
                sampler_logprobs: Sequence[float] | NDArray[Any],
                token_advantages: Sequence[float] | NDArray[Any]) -> Datum:
    """The datum of one completion for the run's ``loss`` (next-token shifted).

    ``importance_sampling`` / ``ppo``: :func:`build_rl_datum` (target tokens, sampler logprobs,
    advantages). ``cross_entropy``: advantage-weighted log-likelihood, ``-Σ A_t·logp`` —
    weights 0 on the prompt targets and the token advantages on the completion targets (the
    on-policy policy gradient; without weights a cross-entropy datum would fit every prompt
    and completion token whatever its advantage).
    """
    if loss != "cross_entropy":
        return build_rl_datum(prompt_ids, completion_ids, sampler_logprobs, token_advantages)
    base = build_sft_datum(prompt_ids, completion_ids)  # validates the shapes
    adv = np.asarray(token_advantages, dtype=np.float32).reshape(-1)
    if adv.shape != (len(completion_ids),):
        raise EngineError(f"datum: completion has {len(completion_ids)} tokens but "
                          f"{adv.shape[0]} advantages")
    full = [int(t) for t in prompt_ids] + [int(t) for t in completion_ids]
    weights = np.concatenate([np.zeros(len(prompt_ids) - 1, dtype=np.float32), adv])
    return Datum(model_input=full[:-1],
                 loss_fn_inputs={"target_tokens": base.loss_fn_inputs["target_tokens"],
                                 "weights": weights})


def completion_text(task: Task, tokenizer: Tokenizer, tokens: Sequence[int]) -> str:
    """The text a completion is graded (and logged) as: decoded without special tokens,
    unless the task sets ``grade_special_tokens = True`` (then with them, so a grader can
    require the eos token and reject stray pad/bos tokens)."""
    keep = bool(getattr(task, "grade_special_tokens", False))
    return tokenizer.decode(list(tokens), skip_special_tokens=not keep)

# ---------------------------------------------------------------------------------------------
# The run


def _eval_due(config: TrainConfig, k: int) -> bool:
    return config.eval_every > 0 and (k % config.eval_every == 0 or k == config.max_steps)


def _checkpoint_due(config: TrainConfig, k: int) -> bool:
    return k == config.max_steps or (config.save_every > 0 and k % config.save_every == 0)


class Run:
    """State of one session of one run (between ``run_training``'s setup and teardown)."""

    def __init__(self, config: TrainConfig, task: Task, pipeline: Any, files: RunFiles,
                 tc: TrainingClient, reporter: Reporter, condition: str,
                 local_states: bool, examples: tuple[DataOrder, list[Example]]) -> None:
        self.config = config
        self.local_states = local_states
        self.task = task
        self.pipeline = pipeline
        self.files = files
        self.tc = tc
        self.reporter = reporter
        self.condition = condition
        self.tok: Tokenizer = tc.get_tokenizer()
        eos = getattr(self.tok, "eos_token_id", None)
        self.stop_ids: tuple[int, ...] = (int(eos),) if eos is not None else ()
        self.data, self.eval_examples = examples
        self._prompt_cache: dict[str, list[int]] = {}
        # Every arm gets the vocab, so planning_token_share is logged (and comparable) even
        # for pipelines whose stages never read the planning mask (grpo, maxrl).
        from textpolicy.vocab import TokenVocab

        self.vocab: Any = TokenVocab.from_tokenizer(self.tok)
        self.topk = (entropy_topk(self.tok)
                     if getattr(pipeline, "signal", "surprisal") == "entropy" else 0)
        self.correct_total = 0
        self.completions_total = 0
        self.sampler: SamplingClient | None = None  # a sampler on the current weights
        try:
            vocab_size: int | None = len(self.tok)  # type: ignore[arg-type]
        except TypeError:
            vocab_size = None
        # top-k covering the vocabulary makes the logged entropy exact (else a lower bound)
        self.topk_exact = self.topk > 0 and vocab_size is not None and self.topk >= vocab_size
        self.warned_duplicates = False

    # -- helpers ------------------------------------------------------------------------------
    def prompt_ids(self, ex: Example) -> list[int]:
        ids = self._prompt_cache.get(ex.id)
        if ids is None:
            ids = list(self.task.render_prompt(ex, self.tok))
            self._prompt_cache[ex.id] = ids
        return ids

    def current_sampler(self, k: int) -> SamplingClient:
        if self.sampler is None:
            self.sampler = self.tc.sampling_client(f"step{k}")
        return self.sampler

    def evaluate(self, k: int) -> EvalResult:
        examples = self.eval_examples
        prompts = {ex.id: self.prompt_ids(ex) for ex in examples}
        result = run_eval(
            self.current_sampler(k), self.task, self.tok, examples, prompts, step=k,
            samples=self.config.eval_samples, temperature=self.config.eval_temperature,
            max_tokens=self.config.max_tokens, seed=self.config.seed,
            stop_token_ids=self.stop_ids)
        self.files.append(EVAL, result.rows)
        return result

    def checkpoint(self, k: int) -> dict[str, Any]:
        name = f"step_{k}"
        target = (str((self.files.root / CHECKPOINT_DIR / name).resolve())
                  if self.local_states else name)
        state_path = str(self.tc.save_state(target).result())
        fsync_tree(state_path)
        root = self.files.root.resolve()
        if self.local_states and Path(state_path).is_relative_to(root):
            state_path = Path(state_path).relative_to(root).as_posix()  # relocatable runs
        sampler_path = None
        save_sampler = getattr(self.tc, "save_weights_for_sampler", None)
        if callable(save_sampler):
            sampler_path = str(save_sampler(name).result())
        row = {
            "step": k,
            "name": name,
            "state_path": state_path,
            "sampler_path": sampler_path,
            "pipeline_state": self.pipeline.state_dict(),
            "data_cursor": k * self.config.batch_size,
            "loop_state": {"correct_total": self.correct_total,
                           "completions_total": self.completions_total},
            "saved_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
        self.files.append_checkpoint(row)
        return row

    # -- one training step --------------------------------------------------------------------
    def train_step(self, step: int) -> tuple[dict[str, Any], list[dict[str, Any]],
                                             dict[str, Any], float]:
        cfg = self.config
        t0 = time.perf_counter()
        sampler = self.current_sampler(step)
        batch = self.data.batch(step, cfg.batch_size)
        prompts = [self.prompt_ids(ex) for ex in batch]
        futures = [
            sampler.sample(p, cfg.group_size,
                           SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                                          seed=train_sampling_seed(cfg.seed, step, g),
                                          stop_token_ids=self.stop_ids),  # type: ignore[arg-type]
                           topk_logprobs=self.topk)
            for g, p in enumerate(prompts)]
        groups: list[list[SampledSequence]] = [f.result() for f in futures]
        self.sampler = None  # the weights are about to change
        for g, seqs in enumerate(groups):
            if len(seqs) != cfg.group_size:
                raise EngineError(
                    f"step {step}: the engine returned {len(seqs)} samples for prompt {g}, "
                    f"expected {cfg.group_size}")
        flat = [(g, j, seq) for g, seqs in enumerate(groups) for j, seq in enumerate(seqs)]
        texts = [completion_text(self.task, self.tok, seq.tokens) for _g, _j, seq in flat]
        grades = self.task.grade_many(
            [(batch[g], text) for (g, _j, _s), text in zip(flat, texts, strict=True)])
        rollouts = Rollouts.from_lists(
            group_ids=[g for g, _j, _s in flat],
            rewards=[gr.reward for gr in grades],
            correct=[gr.correct for gr in grades],
            tokens=[seq.tokens for _g, _j, seq in flat],
            logprobs=[seq.logprobs for _g, _j, seq in flat],
            topk_logprobs=(
                [[[lp for _id, lp in pos] for pos in (seq.topk_logprobs or ())]
                 for _g, _j, seq in flat] if self.topk else None),
        )
        result = self.pipeline(rollouts, step=step, vocab=self.vocab,
                               rng=step_rng(cfg.seed, step))
        from textpolicy.pipeline import aggregate_advantages

        adv = aggregate_advantages(result.token_advantages, rollouts.lengths,
                                   cfg.loss_aggregation, horizon=cfg.max_tokens)
        lengths = rollouts.lengths
        trainable = (np.abs(adv) > 0).any(axis=1) & (lengths > 0)
        datums: list[Datum] = [
            build_datum(cfg.loss, prompts[flat[i][0]], flat[i][2].tokens,
                        flat[i][2].logprobs, adv[i, : lengths[i]])
            for i in np.flatnonzero(trainable)]
        loss = 0.0
        learner_lp: Sequence[NDArray[Any]] | None = None
        if datums:
            fb = self.tc.forward_backward(datums, cfg.loss)
            opt = self.tc.optim_step(AdamParams(learning_rate=cfg.lr))
            fb_result = fb.result()
            loss = float(fb_result.loss)
            learner_lp = fb_result.logprobs  # the forward pass's, on the sampler's weights
            if learner_lp is not None and [len(a) for a in learner_lp] != [
                    len(d.model_input) for d in datums]:
                learner_lp = None  # not one logprob per target: the KL is logged as null
            opt.result()
        step_time = time.perf_counter() - t0
        rows_trained = np.flatnonzero(trainable)
        # completion targets are each datum's last len(completion) positions
        kl = sampler_learner_kl(
            [np.asarray(flat[i][2].logprobs) for i in rows_trained] if learner_lp else [],
            [np.asarray(lp)[len(lp) - lengths[i]:]
             for i, lp in zip(rows_trained, learner_lp, strict=True)] if learner_lp else [])
        entropy, entropy_estimator = mean_token_entropy(rollouts, exact=self.topk_exact)
        duplicates = duplicate_completion_rate(rollouts.group_ids, rollouts.tokens, lengths)
        by_chance = expected_duplicate_rate(rollouts.group_ids, rollouts.logprobs)
        if duplicates - by_chance > DUPLICATE_WARN_EXCESS and not self.warned_duplicates:
            self.warned_duplicates = True
            self.reporter.note(
                f"warning: step {step}: {duplicates:.0%} of completions are token-identical "
                f"to another of their group, {by_chance:.0%} expected from the sampler's "
                f"logprobs: the sampler is collapsing groups (see duplicate_completion_rate "
                f"in metrics.jsonl; warned once per session)")

        n = rollouts.num_completions
        correct = rollouts.correct
        n_correct = int(correct.sum())
        self.correct_total += n_correct
        self.completions_total += n
        diag = result.diagnostics
        metrics: dict[str, Any] = {
            "step": step,
            "loss": loss,
            "mean_reward": float(rollouts.rewards.mean()) if n else 0.0,
            "correct_rate": n_correct / n if n else 0.0,
            "running_correct_rate": (self.correct_total / self.completions_total
                                     if self.completions_total else 0.0),
            "max_token_hit_rate": (sum(seq.stop_reason == "length" for _g, _j, seq in flat) / n
                                   if n else 0.0),
            "sepa_lambda": float(diag.get("sepa_lambda", 0.0)),
            "sepa_gate_open": float(diag.get("sepa_gate_open", 0.0)),
            "num_datums": len(datums),
            "step_time_s": step_time,
            "condition": self.condition,
            "lr": cfg.lr,
            "mean_completion_tokens": float(lengths.mean()) if n else 0.0,
            "planning_token_share": float(diag.get("planning_token_share", 0.0)),
            "credit_moved_share": float(diag.get("credit_moved_share", 0.0)),
            "temperature": cfg.temperature,
            "duplicate_completion_rate": duplicates,
            "expected_duplicate_rate": by_chance,
            **kl,
            "mean_token_entropy": entropy,
            "entropy_estimator": entropy_estimator,
        }
        generations = [
            {"step": step, "prompt_id": batch[g].id, "prompt": batch[g].prompt,
             "completion": texts[i], "reward": float(grades[i].reward),
             "num_tokens": len(seq.tokens),
             "metadata": {"correctness": bool(grades[i].correct), "group": g, "sample": j,
                          "stop_reason": seq.stop_reason}}
            for i, (g, j, seq) in enumerate(flat)]
        steps_row = {"step": step, "mean_reward": metrics["mean_reward"],
                     "correct_count": n_correct, "total_count": n, "condition": self.condition}
        return metrics, generations, steps_row, step_time


def train_steps(run: Run, start: int, *, resumed: bool,
           on_step: Callable[[dict[str, Any]], None] | None,
           stop: threading.Event | None) -> RunOutcome:
    """Train ``run`` from step ``start`` to ``max_steps`` (or until ``stop`` is set), as the
    module docstring describes; ``resumed``: ``start`` is a checkpoint's step."""
    cfg = run.config
    files = run.files
    run.reporter.start(total=cfg.max_steps, done=start,
                       description=f"{run.condition} seed {cfg.seed}")
    if cfg.temperature != 1.0 and start == 0 and not resumed:
        run.reporter.note(
            f"note: sampling at temperature {cfg.temperature}; the importance-sampling loss "
            f"uses the sampler's logprobs at that temperature (see docs/training.md)")

    pending: EvalResult | None = None  # the eval at the step about to be trained
    if _eval_due(cfg, start):
        rows = [r for r in read_jsonl(files.path(EVAL)) if r.get("step") == start]
        if rows:
            pending = result_from_rows(start, rows, cfg.eval_samples)
        else:
            pending = run.evaluate(start)
            files.sync()
    last_row: dict[str, Any] | None = None
    final_eval: dict[str, float] | None = None
    steps_done = start
    last_checkpoint = start if resumed else -1
    for step in range(start, cfg.max_steps):
        if stop is not None and stop.is_set():
            break
        metrics, generations, steps_row, _t = run.train_step(step)
        k = step + 1
        next_eval = run.evaluate(k) if _eval_due(cfg, k) else None
        if pending is not None:
            metrics.update(pending.metrics())
        if k == cfg.max_steps and next_eval is not None:
            metrics.update(next_eval.metrics(prefix="final_eval_"))
            final_eval = next_eval.metrics(prefix="")
        files.append(GENERATIONS, generations)
        files.append(STEPS, [steps_row])
        files.append(METRICS, [metrics])
        files.sync()
        steps_done = k
        pending = next_eval
        last_row = metrics
        if on_step is not None:
            on_step(dict(metrics))
        run.reporter.update(metrics)
        if _checkpoint_due(cfg, k) or (stop is not None and stop.is_set()):
            run.checkpoint(k)
            last_checkpoint = k
    if steps_done < cfg.max_steps and last_checkpoint != steps_done:
        run.checkpoint(steps_done)
    status = "finished" if steps_done >= cfg.max_steps else "stopped"
    if status == "stopped":
        run.reporter.note(f"stopped at step {steps_done} with a checkpoint; run the same "
                          f"command again to resume")
    return RunOutcome(log_dir=cfg.log_dir, steps_done=steps_done, status=status,
                      resumed_from=start if resumed else None, final_eval=final_eval,
                      last_metrics=last_row)


__all__ = [
    "CHECKPOINT_DIR",
    "METRIC_KEYS",
    "Run",
    "RunOutcome",
    "build_datum",
    "completion_text",
    "entropy_topk",
    "train_steps",
]
