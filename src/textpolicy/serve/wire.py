"""Tinker wire formats: decode the SDK's requests, encode the responses it expects.

The schemas are the SDK's own (``tinker.proto.tinker_public_pb2`` and the pydantic request
types); this module only converts between them and textpolicy's engine records
(``textpolicy.engines.base``). ForwardBackwardOutput and SampleResponse go back as protobuf
(the 0.38 SDK accepts nothing else for them); every other result is JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from textpolicy.engines.base import Datum, SampledSequence, SamplingParams

PROTO_CONTENT_TYPE = "application/x-protobuf"

_DTYPES: dict[int, Any] = {}


def _pb() -> Any:
    from tinker.proto import tinker_public_pb2

    return tinker_public_pb2


def _dtype_table() -> dict[int, Any]:
    if not _DTYPES:
        pb = _pb()
        _DTYPES.update({
            pb.DTYPE_FLOAT32: np.float32,
            pb.DTYPE_INT64: np.int64,
            pb.DTYPE_INT32: np.int32,
        })
    return _DTYPES


class WireError(ValueError):
    """A request the server cannot decode (answered as a user error)."""


def _tensor_to_numpy(msg: Any) -> np.ndarray:
    table = _dtype_table()
    if msg.dtype not in table:
        raise WireError(f"unsupported tensor dtype {msg.dtype}")
    dtype = table[msg.dtype]
    shape = [int(s) for s in msg.shape]
    if msg.HasField("sparse_csr"):
        values = np.frombuffer(msg.sparse_csr.values, dtype=dtype)
        crow = np.frombuffer(msg.sparse_csr.crow_indices, dtype=np.int64)
        col = np.frombuffer(msg.sparse_csr.col_indices, dtype=np.int64)
        if len(shape) != 2:
            raise WireError("sparse tensors must be 2-D")
        dense = np.zeros(shape, dtype=dtype)
        rows = np.repeat(np.arange(shape[0]), np.diff(crow))
        dense[rows, col] = values
        return dense.reshape(-1)
    return np.frombuffer(msg.dense, dtype=dtype).copy()


#: the largest decompressed forward_backward body (a tiny zstd frame can claim gigabytes)
MAX_DECOMPRESSED_BYTES = 256 << 20


def _unzstd(body: bytes, max_bytes: int) -> bytes:
    """zstd-decompress ``body`` by streaming, stopping once ``max_bytes`` are exceeded (the
    frame's declared size is not trusted)."""
    import zstandard

    reader = zstandard.ZstdDecompressor().stream_reader(body)
    chunks: list[bytes] = []
    total = 0
    try:
        while True:
            chunk = reader.read(1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes:
                raise WireError(f"zstd body decompresses to more than {max_bytes:,} bytes")
            chunks.append(chunk)
    except zstandard.ZstdError as exc:
        raise WireError(f"malformed zstd body: {exc}") from None
    return b"".join(chunks)


def decode_forward_backward(body: bytes, content_encoding: str | None = None, *,
                            max_bytes: int = MAX_DECOMPRESSED_BYTES) -> dict[str, Any]:
    """Decode a protobuf ForwardBackwardRequest (optionally zstd-compressed, at most
    ``max_bytes`` once decompressed; ``WireError`` for more, or for a malformed frame).

    Returns ``{"model_id", "seq_id", "loss_fn", "loss_fn_config", "forward_only", "datums"}``
    with the datums as ``textpolicy.engines.base.Datum``.
    """
    if content_encoding and content_encoding.lower() == "zstd":
        body = _unzstd(body, max_bytes)
    pb = _pb()
    msg = pb.ForwardBackwardRequest()
    try:
        msg.ParseFromString(body)
    except Exception as exc:
        raise WireError(f"malformed ForwardBackwardRequest: {exc}") from None
    config: dict[str, float] = {k: float(v) for k, v in msg.loss_fn_config.items()}
    for key, value in msg.loss_fn_config_v2.items():
        if value.WhichOneof("value") == "number":
            config[key] = float(value.number)
        else:
            raise WireError(f"loss_fn_config[{key!r}]: only numeric values are supported")
    datums: list[Datum] = []
    for d in msg.data:
        tokens: list[int] = []
        for chunk in d.model_input:
            if chunk.WhichOneof("chunk") != "encoded_text":
                raise WireError("only encoded_text model input chunks are supported")
            tokens.extend(np.frombuffer(chunk.encoded_text.tokens, dtype=np.int32).tolist())
        inputs = {name: _tensor_to_numpy(t) for name, t in d.loss_fn_inputs.items()}
        try:
            datums.append(Datum(model_input=tokens, loss_fn_inputs=inputs))
        except Exception as exc:
            raise WireError(str(exc)) from None
    return {
        "model_id": msg.model_id,
        "seq_id": int(msg.seq_id),
        "loss_fn": msg.loss_fn,
        "loss_fn_config": config or None,
        "forward_only": bool(msg.forward_only),
        "datums": datums,
    }


def encode_forward_backward_output(metrics: Mapping[str, float], num_datums: int,
                                   logprobs: Sequence[Any] | None = None) -> bytes:
    """A ForwardBackwardOutput with the metrics (reduction-suffixed keys) and one ArrayRecord
    carrying the datum count (the SDK weights ``:mean`` metrics by it) and, when given, each
    datum's learner ``logprobs`` (float32, as Tinker's ``loss_fn_outputs[i]["logprobs"]``)."""
    pb = _pb()
    out = pb.ForwardBackwardOutput(loss_fn_output_type="ArrayRecord")
    for key, value in metrics.items():
        out.metrics[key] = float(value)
    record = out.loss_fn_outputs.add(type_tag="ArrayRecord", num_datums=int(num_datums))
    if logprobs is not None:
        arrays = [np.asarray(a, dtype=np.float32).reshape(-1) for a in logprobs]
        sizes = np.array([0] + [a.size * 4 for a in arrays], dtype=np.int64)  # byte offsets
        field = record.fields["logprobs"]
        field.data = (np.concatenate(arrays) if arrays else np.zeros(0, np.float32)).tobytes()
        field.offsets = np.cumsum(sizes).tobytes()
        field.dtype = pb.DTYPE_FLOAT32
    data: bytes = out.SerializeToString()
    return data


def tinker_metrics(loss: float, metrics: Mapping[str, float]) -> dict[str, float]:
    """Engine metrics → Tinker's reduction-suffixed keys (``loss:sum`` first)."""
    out = {"loss:sum": float(loss)}
    for key, value in metrics.items():
        name = key if ":" in key else f"{key}:mean"
        if name != "loss:sum":
            out[name] = float(value)
    return out


def encode_sample_response(
    sequences: Sequence[SampledSequence],
    *,
    topk: int = 0,
    prompt_logprobs: Sequence[float] | None = None,
) -> bytes:
    """A protobuf SampleResponse for the given sequences (tokens int32, logprobs float32)."""
    pb = _pb()
    out = pb.SampleResponse()
    for seq in sequences:
        s = out.sequences.add()
        s.stop_reason = pb.STOP_REASON_STOP if seq.stop_reason == "stop" else pb.STOP_REASON_LENGTH
        s.tokens = np.asarray(seq.tokens, dtype=np.int32).tobytes()
        s.logprobs = np.asarray(seq.logprobs, dtype=np.float32).tobytes()
        if topk > 0 and seq.topk_logprobs is not None:
            n = len(seq.topk_logprobs)
            ids = np.zeros((n, topk), dtype=np.int32)
            lps = np.full((n, topk), -99999.0, dtype=np.float32)
            for i, row in enumerate(seq.topk_logprobs):
                for j, (tok, lp) in enumerate(row[:topk]):
                    ids[i, j] = tok
                    lps[i, j] = lp
            s.topk_sampled_logprobs.token_ids = ids.tobytes()
            s.topk_sampled_logprobs.logprobs = lps.tobytes()
            s.topk_sampled_logprobs.k = topk
            s.topk_sampled_logprobs.length = n
    if prompt_logprobs is not None:
        prompt_lp = np.asarray(prompt_logprobs, dtype=np.float32).copy()
        if prompt_lp.size:
            prompt_lp[0] = np.nan  # the first prompt token has no context
        out.prompt_logprobs = prompt_lp.tobytes()
    data: bytes = out.SerializeToString()
    return data


def sampling_params_from_wire(params: Any) -> SamplingParams:
    """The SDK's SamplingParams (pydantic) → textpolicy's. Stop strings are not supported
    (the engine stops on token ids)."""
    stop = params.stop
    stop_ids: tuple[int, ...] = ()
    if stop is not None:
        if isinstance(stop, str) or any(isinstance(s, str) for s in stop):
            raise WireError("stop strings are not supported by tp serve; pass stop token ids")
        stop_ids = tuple(int(s) for s in stop)
    if params.max_tokens is None:
        raise WireError("sampling_params.max_tokens is required")
    return SamplingParams(
        max_tokens=int(params.max_tokens),
        temperature=float(params.temperature),
        top_p=float(params.top_p),
        top_k=int(params.top_k),
        seed=None if params.seed is None else int(params.seed),
        stop_token_ids=stop_ids,  # type: ignore[arg-type]
    )
