"""Pipeline API: loading, composition, parameters, state, diagnostics, aggregation, vocab."""

from __future__ import annotations

import json

import numpy as np
import pytest

import textpolicy as tp
from textpolicy.errors import ConfigError, RolloutError, UnknownComponentError
from textpolicy.pipeline import aggregate_advantages, build_pipeline, split_pipeline_list
from textpolicy.rollouts import Rollouts
from textpolicy.testing import check_stage, make_rollouts, word_vocab
from textpolicy.vocab import TokenVocab

VOCAB = word_vocab()


def _batch(seed: int = 0, rewards: list[float] | None = None) -> Rollouts:
    rewards = rewards if rewards is not None else [1, 0, 0, 0, 1, 1, 0, 1]
    rng = np.random.default_rng(seed)
    toks = [rng.integers(4, 20, size=int(L)).tolist() for L in rng.integers(4, 12, size=8)]
    for i in range(0, 8, 2):
        toks[i][:3] = [1, 2, 3]  # "let me think"
    return make_rollouts(rewards=rewards, group_size=4, tokens=toks, seed=seed)


# ---- names ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "canonical", "stages"), [
    ("grpo", "grpo", ("grpo",)),
    ("grpo+none", "grpo", ("grpo",)),
    ("maxrl+none", "maxrl", ("maxrl",)),
    ("full", "full", ("maxrl", "sepa", "gtpo", "hicra")),
    ("maxrl+gtpo_sepa_hicra", "full", ("maxrl", "sepa", "gtpo", "hicra")),
    ("grpo+gtpo_sepa_hicra", "grpo+gtpo_sepa_hicra", ("grpo", "sepa", "gtpo", "hicra")),
    ("grpo+gtpo_sepa", "grpo+gtpo_sepa", ("grpo", "sepa", "gtpo")),
    ("maxrl+gtpo_hicra", "maxrl+gtpo_hicra", ("maxrl", "gtpo", "hicra")),
    ("maxrl+gtpo", "maxrl+gtpo", ("maxrl", "gtpo")),
    ("maxrl > gtpo > hicra", "maxrl,gtpo,hicra", ("maxrl", "gtpo", "hicra")),
    ("maxrl,gtpo,hicra", "maxrl,gtpo,hicra", ("maxrl", "gtpo", "hicra")),
    (" maxrl, gtpo ,hicra ", "maxrl,gtpo,hicra", ("maxrl", "gtpo", "hicra")),
    ("grpo,sepa>gtpo", "grpo,sepa,gtpo", ("grpo", "sepa", "gtpo")),
])
def test_names_aliases_and_compositions(name: str, canonical: str,
                                        stages: tuple[str, ...]) -> None:
    p = tp.load_pipeline(name)
    assert p.name == canonical
    assert p.stage_names == stages
    assert p.describe()["name"] == canonical


@pytest.mark.parametrize(("name", "message"), [
    ("ful", "unknown pipeline 'ful' (did you mean 'full'?)"),
    ("maxrl>gtpoo", "unknown advantage stage 'gtpoo' (did you mean 'gtpo'?)"),
    ("maxrl>>gtpo", "empty stage name"),
    ("maxrl,gtpoo", "unknown advantage stage 'gtpoo' (did you mean 'gtpo'?)"),
    ("maxrl,,gtpo", "empty stage name"),
    ("maxrl,gtpo,", "empty stage name"),
    ("gtpo,hicra", "first stage 'gtpo' is token-level"),
    ("maxrl,grpo", "stage 'grpo' is episode-level"),
    ("gtpo>hicra", "first stage 'gtpo' is token-level"),
    ("maxrl>grpo", "stage 'grpo' is episode-level"),
    ("", "non-empty"),
])
def test_bad_names(name: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        tp.load_pipeline(name)
    assert message in str(info.value)


def test_comma_and_arrow_compositions_are_the_same_pipeline() -> None:
    rollouts = make_rollouts(rewards=[1, 0, 0, 1, 1, 0, 0, 0], group_size=4, length=6)
    comma = tp.load_pipeline("maxrl,gtpo,hicra", gtpo={"beta": 0.3})
    arrow = tp.load_pipeline("maxrl>gtpo>hicra", gtpo={"beta": 0.3})
    assert comma.describe() == arrow.describe()
    a = comma(rollouts, step=0, vocab=word_vocab()).token_advantages
    b = arrow(rollouts, step=0, vocab=word_vocab()).token_advantages
    assert np.array_equal(a, b) and np.abs(a).sum() > 0


@pytest.mark.parametrize(("text", "pipelines"), [
    ("grpo,full", ["grpo", "full"]),
    ("grpo,maxrl,gtpo,hicra", ["grpo", "maxrl,gtpo,hicra"]),
    ("maxrl,gtpo,grpo,sepa,gtpo", ["maxrl,gtpo", "grpo,sepa,gtpo"]),
    ("grpo, maxrl>gtpo ,full", ["grpo", "maxrl>gtpo", "full"]),
    ("maxrl+gtpo,hicra", ["maxrl+gtpo,hicra"]),     # hicra continues; load_pipeline judges it
    ("gtpo,hicra", ["gtpo,hicra"]),                 # no pipeline before: its own, then refused
    ("grpo,gtpoo", ["grpo", "gtpoo"]),              # unknown: its own, then "did you mean"
    ("grpo,,full,", ["grpo", "full"]),
])
def test_split_pipeline_list_keeps_compositions_whole(text: str, pipelines: list[str]) -> None:
    assert split_pipeline_list(text) == pipelines


def test_unknown_name_is_unknown_component_error() -> None:
    with pytest.raises(UnknownComponentError):
        tp.load_pipeline("nope")


# ---- parameters -------------------------------------------------------------------------------

@pytest.mark.parametrize(("overrides", "message"), [
    ({"hicra": {"alpha": 0.3}}, "parameters for 'hicra', which is not one of its stages"),
    ({"gtpo": {"bta": 0.1}}, "unknown parameter 'bta' (did you mean 'beta'?)"),
    ({"gtpo": {"beta": "x"}}, "beta must be a number >= 0.0, got 'x'"),
    ({"gtpo": {"beta": -1}}, "beta must be a number >= 0.0, got -1"),
    ({"gtpo": {"signal": "entropie"}}, "signal must be one of surprisal, entropy"),
    ({"gtpo": {"beta": True}}, "beta must be a number"),
    ({"gtpo": 0.1}, "must be a mapping"),
    ({"planning": {"grams": "let me think"}}, "grams must be a list of phrases"),
    ({"planning": {"detector": "strategic_gram"}}, "did you mean 'strategic_grams'"),
])
def test_bad_parameters(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        tp.load_pipeline("maxrl+gtpo", **overrides)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_sepa_parameters_and_scheduler() -> None:
    with pytest.raises(ConfigError, match="unknown scheduler 'lineal'"):
        tp.load_pipeline("full", sepa={"schedule": "lineal"})
    with pytest.raises(ConfigError, match="ramp_steps must be an integer >= 0"):
        tp.load_pipeline("full", sepa={"ramp_steps": 1.5})
    p = tp.load_pipeline("full", sepa={"schedule": "auto", "auto_warmup": 3})
    d = p.describe()
    assert d["scheduler"]["name"] == "auto"
    assert d["scheduler"]["params"]["auto_warmup"] == 3


def test_ignore_unknown_stages() -> None:
    p = build_pipeline("grpo", {"sepa": {"ramp_steps": 5}, "gtpo": {"beta": 0.2}},
                       ignore_unknown_stages=True)
    assert p.stage_names == ("grpo",)


def test_int_accepted_for_float_parameters() -> None:
    p = tp.load_pipeline("maxrl+gtpo", gtpo={"beta": 0})
    assert p.describe()["stages"][1]["params"] == {"beta": 0.0, "signal": "surprisal"}


# ---- the call ---------------------------------------------------------------------------------

def test_needs_vocab_and_missing_mask() -> None:
    assert tp.load_pipeline("full").needs_vocab
    assert tp.load_pipeline("grpo+gtpo_hicra").needs_vocab
    assert not tp.load_pipeline("grpo").needs_vocab
    assert not tp.load_pipeline("maxrl+gtpo").needs_vocab
    with pytest.raises(ConfigError, match="needs a planning mask"):
        tp.load_pipeline("full")(_batch(), step=0)
    r = _batch()
    res = tp.load_pipeline("grpo")(r, step=0)
    assert res.planning_mask is None and res.diagnostics["planning_token_share"] == 0.0
    # with a vocab, even grpo reports the planning share (comparable across arms)
    res = tp.load_pipeline("grpo")(r, step=0, vocab=VOCAB)
    assert res.diagnostics["planning_token_share"] == pytest.approx(12 / r.lengths.sum())


def test_given_planning_mask_is_used() -> None:
    r = _batch()
    plan = np.zeros_like(r.tokens, dtype=bool)
    plan[:, 5] = True
    res = tp.load_pipeline("maxrl+gtpo_hicra")(r.with_planning_mask(plan), step=0)
    assert res.planning_mask is not None
    np.testing.assert_array_equal(res.planning_mask, plan & r.mask)


@pytest.mark.parametrize("step", [-1, 1.5, "3", True])
def test_bad_step(step: object) -> None:
    with pytest.raises(ConfigError, match="step must be an integer >= 0"):
        tp.load_pipeline("grpo")(_batch(), step=step)  # type: ignore[arg-type]


def test_diagnostics_and_gate() -> None:
    p = tp.load_pipeline("full")  # gate 0.1, delay 10, ramp 100
    none_correct = _batch(rewards=[0] * 8)
    res = p(none_correct, step=50, vocab=VOCAB)
    assert res.diagnostics["sepa_gate_open"] == 0.0 and res.diagnostics["sepa_lambda"] == 0.0
    assert np.all(res.token_advantages == 0)
    assert res.diagnostics["credit_moved_share"] == 0.0
    res = p(_batch(), step=60, vocab=VOCAB)
    assert res.diagnostics["sepa_gate_open"] == 1.0
    assert res.diagnostics["sepa_lambda"] == pytest.approx(0.5)
    assert res.diagnostics["credit_moved_share"] > 0
    assert set(res.diagnostics) == {"sepa_lambda", "sepa_gate_open", "planning_token_share",
                                    "credit_moved_share"}
    json.dumps(res.diagnostics)
    # grpo moves no credit between tokens
    assert tp.load_pipeline("grpo")(_batch(), step=0).diagnostics["credit_moved_share"] == 0


def test_state_dict_round_trip_resumes_identically() -> None:
    params = {"sepa": {"schedule": "auto", "auto_warmup": 2, "auto_decay": 0.5,
                       "correct_rate_gate": 0.5}}
    a = tp.load_pipeline("full", **params)
    batches = [_batch(seed=s, rewards=rw) for s, rw in
               enumerate([[0] * 8, [1, 0, 0, 0, 1, 1, 0, 1], [1, 0] * 4, [1] * 8])]
    for step, b in enumerate(batches[:2]):
        a(b, step=step, vocab=VOCAB)
    state = json.loads(json.dumps(a.state_dict()))
    assert state["scheduler"]["observations"] == 2 and state["scheduler"]["gate_open"]
    b_pipe = tp.load_pipeline("full", **params)
    b_pipe.load_state_dict(state)
    for step, b in enumerate(batches[2:], start=2):
        ra = a(b, step=step, vocab=VOCAB)
        rb = b_pipe(b, step=step, vocab=VOCAB)
        np.testing.assert_array_equal(ra.token_advantages, rb.token_advantages)
        assert ra.diagnostics == rb.diagnostics
    # a fresh pipeline (no state) would have a closed gate at first
    fresh = tp.load_pipeline("full", **params)(batches[2], step=2, vocab=VOCAB)
    assert fresh.diagnostics["sepa_gate_open"] == 1.0  # 50% correct opens it immediately
    with pytest.raises(ConfigError, match="pipeline state"):
        b_pipe.load_state_dict({"version": 99})
    with pytest.raises(ConfigError, match="scheduler 'auto': invalid state"):
        b_pipe.load_state_dict({"version": 1, "scheduler": {"kind": "linear"}})


def test_scheduler_observed_once_per_call() -> None:
    p = tp.load_pipeline("full")
    for step in range(3):
        p(_batch(seed=step), step=step, vocab=VOCAB)
    assert p.state_dict()["scheduler"]["observations"] == 3
    assert p.state_dict()["calls"] == 3


def test_describe_is_json() -> None:
    d = tp.load_pipeline("full", planning={"grams": ["let me think"]}).describe()
    assert json.loads(json.dumps(d)) == d
    assert d["planning"] == {"detector": "strategic_grams",
                             "params": {"grams": ["let me think"], "grams_file": None},
                             "required": True}
    assert [s["name"] for s in d["stages"]] == ["maxrl", "sepa", "gtpo", "hicra"]


def test_entropy_signal() -> None:
    lp = np.array([np.log([0.5, 0.25, 0.25]), [0.0, -np.inf, -np.inf]])
    topk = [[lp[0].tolist(), lp[1].tolist()]]
    r = Rollouts.from_lists(group_ids=[0], rewards=[1.0], tokens=[[1, 2]],
                            logprobs=[[-0.7, 0.0]], topk_logprobs=topk)
    from textpolicy.pipeline import token_signal

    h = token_signal(r, "entropy")
    np.testing.assert_allclose(h[0], [1.5 * np.log(2), 0.0])
    no_topk = make_rollouts(rewards=[1, 0])
    with pytest.raises(RolloutError, match="needs top-k logprobs"):
        tp.load_pipeline("maxrl+gtpo", gtpo={"signal": "entropy"})(no_topk, step=0)
    p = tp.load_pipeline("maxrl+gtpo", gtpo={"signal": "entropy"})
    assert p.signal == "entropy"


# ---- aggregation ------------------------------------------------------------------------------

def test_aggregate_advantages() -> None:
    adv = np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    lens = np.array([2, 1, 0])
    np.testing.assert_array_equal(aggregate_advantages(adv, lens, "token-sum"), adv)
    np.testing.assert_allclose(aggregate_advantages(adv, lens, "token-mean"), adv / 3)
    np.testing.assert_allclose(aggregate_advantages(adv, lens, "seq-mean-token-mean"),
                               [[0.25, 0.5, 0], [1.5, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(aggregate_advantages(adv, lens, "seq-mean-token-sum-norm"),
                               adv / (3 * 2))
    np.testing.assert_allclose(
        aggregate_advantages(adv, lens, "seq-mean-token-sum-norm", horizon=10), adv / 20)
    with pytest.raises(ConfigError, match="did you mean 'token-mean'"):
        aggregate_advantages(adv, lens, "token-men")
    with pytest.raises(RolloutError):
        aggregate_advantages(adv, np.array([1, 2]), "token-sum")
    np.testing.assert_array_equal(
        aggregate_advantages(np.zeros((1, 0)), np.array([0]), "token-mean"), np.zeros((1, 0)))


# ---- rollouts validation ----------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tokens": [[1, 2]], "logprobs": [[-1.0]]}, "2 tokens but 1 logprobs"),
    ({"rewards": [float("nan")]}, "must be finite"),
    ({"rewards": [float("inf")]}, "must be finite"),
    ({"logprobs": [[-1.0, 0.5]]}, "must be <= 0"),
    ({"logprobs": [[-1.0, float("nan")]]}, "must be finite"),
    ({"group_ids": [0, 1]}, "group_ids has 2 entries but rewards has 1"),
    ({"planning_mask": [[True]]}, "planning mask of 1"),
])
def test_rollout_validation(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"group_ids": [0], "rewards": [1.0], "tokens": [[1, 2]],
                               "logprobs": [[-1.0, -2.0]]}
    base.update(kwargs)
    with pytest.raises(RolloutError) as info:
        Rollouts.from_lists(**base)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_empty_and_zero_length_batches() -> None:
    r = Rollouts.from_lists(group_ids=[0, 0], rewards=[1.0, 0.0], tokens=[[], [1, 2]],
                            logprobs=[[], [-1.0, -0.5]])
    res = tp.load_pipeline("full")(r, step=0, vocab=VOCAB)
    assert res.token_advantages.shape == (2, 2)
    assert np.all(res.token_advantages[0] == 0)
    empty = Rollouts.from_lists(group_ids=[], rewards=[], tokens=[], logprobs=[])
    res = tp.load_pipeline("full")(empty, step=0, vocab=VOCAB)
    assert res.token_advantages.shape == (0, 0)


# ---- testing helpers --------------------------------------------------------------------------

@pytest.mark.parametrize("stage", ["grpo", "maxrl", "sepa", "gtpo", "hicra"])
def test_builtin_stages_pass_check_stage(stage: str) -> None:
    check_stage(stage)


# ---- vocab ------------------------------------------------------------------------------------

def test_vocab_schemes() -> None:
    assert TokenVocab.from_pieces(["Ġan", "other", "Ċ", "ĠcafÃ©"]).pieces == (
        " an", "other", "\n", " café")
    assert TokenVocab.from_pieces(["▁an", "other", "<0x0A>", "<0xE2>"]).pieces == (
        " an", "other", "\n", "\ufffd")
    assert TokenVocab.from_pieces(["an", "##other", "way"]).pieces == (" an", "other", " way")
    v = TokenVocab.from_words(["let", "me"])
    assert v.decode([0, 1, 99]) == " let me"
    assert len(v) == 2
    with pytest.raises(ConfigError):
        TokenVocab("abc")


def test_vocab_from_tokenizer_matches_decode() -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|end|>"],
                                  show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = ["Wait, let me think. That's not right!\nAnother way to solve x = 3 — café."] * 50
    raw.train_from_iterator(text, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|end|>")
    vocab = TokenVocab.from_tokenizer(tok)
    ids = tok.encode(text[0])
    assert vocab.decode(ids) == tok.decode(ids)
    assert vocab.pieces[tok.convert_tokens_to_ids("<|end|>")] == "<|end|>"
    from textpolicy_builtins.planning import strategic_grams_mask

    mask = strategic_grams_mask(np.array([ids]), np.array([len(ids)]), vocab)[0]
    marked = "".join(vocab.pieces[i] for i, m in zip(ids, mask, strict=True) if m)
    assert "Wait" in marked and "let me think" in marked and "That's not right" in marked
    assert "Another way to" in marked and "solve" not in marked
