"""`tp serve`'s wire formats against the SDK's own encoders/decoders, and its fault plan."""

from __future__ import annotations

import numpy as np
import pytest

from textpolicy.engines.base import SampledSequence, build_rl_datum
from textpolicy.engines.tinker_engine import to_sdk_datum
from textpolicy.errors import ConfigError
from textpolicy.serve.faults import FaultPlan, FaultRule
from textpolicy.serve.wire import (
    decode_forward_backward,
    encode_forward_backward_output,
    encode_sample_response,
    tinker_metrics,
)


@pytest.mark.parametrize("compress", [False, True])
def test_forward_backward_request_round_trip(compress: bool) -> None:
    import zstandard
    from tinker import types
    from tinker.proto.request_conv import forward_backward_request_to_proto

    ours = [build_rl_datum([1, 2, 3], [4, 5], [-0.5, -1.5], [1.0, 2.0]),
            build_rl_datum([7], [8, 9, 10], [-0.1, -0.2, -0.3], [-1.0, 0.0, 1.0])]
    request = types.ForwardBackwardRequest(
        forward_backward_input=types.ForwardBackwardInput(
            data=[to_sdk_datum(d) for d in ours], loss_fn="ppo",
            loss_fn_config={"clip_low_threshold": 0.8}),
        model_id="s:train:0", seq_id=7)
    body = forward_backward_request_to_proto(request).SerializeToString()
    if compress:
        body = zstandard.ZstdCompressor().compress(body)
    decoded = decode_forward_backward(body, "zstd" if compress else None)
    assert (decoded["model_id"], decoded["seq_id"], decoded["loss_fn"]) == ("s:train:0", 7,
                                                                           "ppo")
    assert decoded["loss_fn_config"] == {"clip_low_threshold": pytest.approx(0.8)}
    for got, want in zip(decoded["datums"], ours, strict=True):
        assert got.model_input == want.model_input
        assert set(got.loss_fn_inputs) == set(want.loss_fn_inputs)
        for key, value in want.loss_fn_inputs.items():
            np.testing.assert_array_equal(got.loss_fn_inputs[key], value)
            assert got.loss_fn_inputs[key].dtype == value.dtype


def test_sample_response_decodes_in_the_sdk() -> None:
    from tinker.proto.response_conv import deserialize_sample_response

    seqs = [SampledSequence(tokens=(5, 6, 2), logprobs=(-0.1, -0.2, -0.3), stop_reason="stop",
                            topk_logprobs=(((5, -0.1), (9, -2.0)),) * 3),
            SampledSequence(tokens=(7,), logprobs=(-1.0,), stop_reason="length",
                            topk_logprobs=(((7, -1.0),),))]
    response = deserialize_sample_response(
        encode_sample_response(seqs, topk=2, prompt_logprobs=[0.0, -1.0, -2.0]))
    a, b = response.sequences
    assert a.tokens == [5, 6, 2] and a.stop_reason == "stop"
    assert a.logprobs == pytest.approx([-0.1, -0.2, -0.3])
    assert a.topk_logprobs is not None and a.topk_logprobs[0] == [(5, pytest.approx(-0.1)),
                                                                  (9, pytest.approx(-2.0))]
    assert b.tokens == [7] and b.stop_reason == "length"
    assert response.prompt_logprobs is not None
    assert response.prompt_logprobs[0] is None  # the first prompt token has no context
    assert response.prompt_logprobs[1:] == pytest.approx([-1.0, -2.0])


def test_forward_backward_output_decodes_and_combines_in_the_sdk() -> None:
    from tinker.lib.chunked_fwdbwd_helpers import combine_fwd_bwd_output_results
    from tinker.proto.response_conv import deserialize_forward_backward_output

    metrics = tinker_metrics(3.5, {"clip_fraction": 0.25})
    assert metrics == {"loss:sum": 3.5, "clip_fraction:mean": 0.25}
    out = deserialize_forward_backward_output(encode_forward_backward_output(metrics, 4))
    assert out.metrics == {"loss:sum": 3.5, "clip_fraction:mean": 0.25}
    assert len(out.loss_fn_outputs) == 4
    combined = combine_fwd_bwd_output_results([out])  # weights :mean metrics by datum count
    assert combined.metrics["loss:sum"] == 3.5


def test_fault_rules_count_per_endpoint_and_overall() -> None:
    plan = FaultPlan(fail=[FaultRule.parse("3", flag="--fail-request")],
                     poison=[FaultRule.parse("optim_step:2", flag="--poison-request")])
    seen = [plan.count(e) for e in ("create_model", "session_heartbeat", "optim_step",
                                    "telemetry", "retrieve_future", "optim_step")]
    # heartbeat and telemetry are not counted (their number depends on timing)
    assert seen == [(0, False), (0, False), (0, False), (0, False), (500, False), (0, True)]


def test_fault_rules_carry_an_http_status() -> None:
    plan = FaultPlan(fail=[FaultRule.parse(t, flag="--fail-request")
                           for t in ("forward_backward:2:503", "1:429")])
    assert [plan.count("forward_backward") for _ in range(2)] == [(429, False), (503, False)]
    for bad in ("forward_backward:2:404", "forward_backward:2:x", "a:b:2:503"):
        with pytest.raises(ConfigError, match="--fail-request"):
            FaultRule.parse(bad, flag="--fail-request")


@pytest.mark.parametrize("text", ["0", "x", "forward_backward:", "forward_backward:-1", ""])
def test_bad_fault_rules_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="--fail-request"):
        FaultRule.parse(text, flag="--fail-request")
