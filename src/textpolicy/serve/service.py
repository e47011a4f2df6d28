"""The Tinker API's endpoints over :class:`~textpolicy.serve.sessions.ServiceState`: each
request decoded, dispatched and answered (a JSON body, or a future with its request id).

A model's requests are applied in ``seq_id`` order whatever order they arrive in; a
repeated ``seq_id`` (a retried POST) gets the first request's future back. A request's value
(dict → JSON, bytes → protobuf) or error lands in its future; sessions, models, samplers and
the checkpoint map are :mod:`textpolicy.serve.sessions`'.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from textpolicy.engines.base import AdamParams, SamplingClient
from textpolicy.errors import EngineError
from textpolicy.serve.errors import ApiError, UserError
from textpolicy.serve.futures import Category, FutureTable, ServerFuture
from textpolicy.serve.sessions import (
    KEEP_EPHEMERAL_SAMPLERS,
    EngineFactory,
    Model,
    Sampler,
    ServiceState,
    Session,
    sanitize,
)
from textpolicy.serve.wire import (
    WireError,
    encode_forward_backward_output,
    encode_sample_response,
    sampling_params_from_wire,
    tinker_metrics,
)
from textpolicy.serve.worker import SampleJob

log = logging.getLogger(__name__)


class TinkerService(ServiceState):
    """Everything the HTTP layer dispatches to."""

    def __init__(
        self,
        engine_factory: EngineFactory,
        *,
        models: Mapping[str, str],
        state_dir: Path,
        gather_s: float = 0.02,
    ) -> None:
        super().__init__(engine_factory, models=models, state_dir=state_dir, gather_s=gather_s)
        self.futures = FutureTable()

    # ----------------------------------------------------------------- sessions
    def create_session(self, body: Mapping[str, Any]) -> dict[str, Any]:
        session_id = f"session-{uuid.uuid4().hex[:12]}"
        with self._lock:
            self._sessions[session_id] = Session(session_id, self.engine_factory, self.gather_s)
        return {"type": "create_session", "session_id": session_id}

    def heartbeat(self, body: Mapping[str, Any]) -> dict[str, Any]:
        self._session(str(body.get("session_id", "")))
        return {"type": "session_heartbeat"}

    def finish_session(self, session_id: str) -> dict[str, Any]:
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            raise ApiError(404, f"unknown session {session_id!r}")
        self._end_session(session)
        return {}

    # ------------------------------------------------------------------- models
    def create_model(self, body: Mapping[str, Any], *, poison: bool) -> ServerFuture:
        import tinker.types as tt

        request = tt.CreateModelRequest.model_validate(body)
        session = self._session(request.session_id)
        model_id = f"{request.session_id}:train:{request.model_seq_id}"
        lora = request.lora_config
        # LoRA rank 0 (or no LoRA config) is a full fine-tune here; Tinker itself refuses it
        model = Model(model_id, request.base_model, (lora.rank or None) if lora else None)
        self._register_model(session, model)
        fut = self.futures.new()
        seed = 0 if lora is None or lora.seed is None else int(lora.seed)

        def create() -> dict[str, Any]:
            engine_name = self._resolve_base(request.base_model)
            client = session.engine.create_training_client(
                engine_name, lora_rank=model.lora_rank, seed=seed)
            model.client = client
            model.tokenizer_id = self._tokenizer_dir(request.base_model, client)
            return {"type": "create_model", "model_id": model_id}

        session.worker.submit(self._job(fut, create, model=model, poison=poison, creating=True))
        return fut

    def get_info(self, body: Mapping[str, Any]) -> dict[str, Any]:
        _session, model = self._model(str(body.get("model_id", "")))
        if model.client is None:
            raise ApiError(409, f"model {model.model_id!r} is not ready: {model.failed}")
        return {
            "type": "get_info",
            "model_id": model.model_id,
            "model_name": model.base_model,
            "is_lora": model.lora_rank is not None,
            "lora_rank": model.lora_rank,
            "model_data": {"arch": "textpolicy-local", "model_name": model.base_model,
                           "tokenizer_id": model.tokenizer_id},
        }

    # --------------------------------------------------------------- job helper
    def _job(
        self,
        fut: ServerFuture,
        work: Callable[[], Any],
        *,
        model: Model | None = None,
        poison: bool = False,
        creating: bool = False,
    ) -> Callable[[], None]:
        """Wrap ``work`` so that its value (dict → JSON, bytes → protobuf) or its error lands
        in ``fut``; apply poisoning."""

        def run() -> None:
            if model is not None and not creating:
                if model.failed is not None:
                    fut.set_error(f"model {model.model_id} was never created: {model.failed}",
                                  "User")
                    return
                if model.poisoned is not None:
                    fut.set_error(f"model {model.model_id} is poisoned by an earlier failed "
                                  f"request ({model.poisoned}); create a new training client "
                                  "from the last saved state", "Server")
                    return
            if poison:
                message = f"injected failure of {fut.request_id} (tp serve --poison-request)"
                if model is not None:
                    model.poisoned = message
                fut.set_error(message, "Server")
                return
            category: Category
            try:
                value = work()
            except (UserError, WireError, EngineError) as exc:
                message, category = str(exc), "User"
            except Exception as exc:
                log.exception("tp serve: request %s failed", fut.request_id)
                message, category = f"{type(exc).__name__}: {exc}", "Server"
            else:
                if isinstance(value, bytes):
                    fut.set_proto(value)
                else:
                    fut.set_json(value)
                return
            if creating and model is not None:
                model.failed = message
            fut.set_error(message, category)

        return run

    def _enqueue_model_op(
        self,
        model_id: str,
        seq_id: int | None,
        work: Callable[[Model], Any],
        *,
        poison: bool,
    ) -> ServerFuture:
        """Queue ``work`` for the model; run ops in seq_id order."""
        session, model = self._model(model_id)
        with session.lock:
            if seq_id is None:
                seq_id = model.next_seq + len(model.pending)
            previous = model.seen.get(seq_id)
            if previous is not None:
                existing = self.futures.get(previous)
                if existing is not None:
                    return existing
            if seq_id < model.next_seq:
                raise ApiError(409, f"seq_id {seq_id} of {model_id} was already applied")
            fut = self.futures.new()
            model.seen[seq_id] = fut.request_id
            model.pending[seq_id] = (
                self._job(fut, lambda: work(model), model=model, poison=poison), fut)
            while model.next_seq in model.pending:
                job, _ = model.pending.pop(model.next_seq)
                model.next_seq += 1
                session.worker.submit(job)
        return fut

    # ----------------------------------------------------------------- training
    def forward_backward(self, decoded: Mapping[str, Any], *, poison: bool) -> ServerFuture:
        if decoded["forward_only"]:
            raise ApiError(400, "tp serve does not implement forward-only passes")
        datums = decoded["datums"]

        def work(model: Model) -> bytes:
            assert model.client is not None
            result = model.client.forward_backward(
                datums, decoded["loss_fn"], decoded["loss_fn_config"]).result()
            return encode_forward_backward_output(
                tinker_metrics(result.loss, result.metrics), len(datums), result.logprobs)

        return self._enqueue_model_op(decoded["model_id"], decoded["seq_id"], work, poison=poison)

    def optim_step(self, body: Mapping[str, Any], *, poison: bool) -> ServerFuture:
        params = body.get("adam_params")
        if not isinstance(params, Mapping):
            raise ApiError(400, "optim_step: only adam_params are supported by tp serve")
        adam = AdamParams(
            learning_rate=float(params.get("learning_rate", 1e-4)),
            beta1=float(params.get("beta1", 0.9)),
            beta2=float(params.get("beta2", 0.95)),
            eps=float(params.get("eps", 1e-12)),
            weight_decay=float(params.get("weight_decay", 0.0)),
            grad_clip_norm=float(params.get("grad_clip_norm", 0.0)),
        )

        def work(model: Model) -> dict[str, Any]:
            assert model.client is not None
            model.client.optim_step(adam).result()
            return {"metrics": {}}

        return self._enqueue_model_op(
            str(body["model_id"]), body.get("seq_id"), work, poison=poison)

    # -------------------------------------------------------------- checkpoints
    def save_weights(self, body: Mapping[str, Any], *, poison: bool) -> ServerFuture:
        model_id = str(body["model_id"])
        name = str(body.get("path") or f"state-{uuid.uuid4().hex[:8]}")

        def work(model: Model) -> dict[str, Any]:
            assert model.client is not None
            local = model.client.save_state(sanitize(f"{model_id}-{name}")).result()
            tinker_path = f"tinker://{model_id}/weights/{name}"
            self._remember_checkpoint(tinker_path, str(local))
            return {"type": "save_weights", "path": tinker_path}

        return self._enqueue_model_op(model_id, body.get("seq_id"), work, poison=poison)

    def load_weights(self, body: Mapping[str, Any], *, poison: bool) -> ServerFuture:
        path = str(body["path"])
        if not body.get("optimizer"):
            raise ApiError(400, "tp serve restores weights together with the optimizer state "
                                "only: use create_training_client_from_state_with_optimizer")
        if body.get("model_id") is None:
            # a new training client from a checkpoint (seq id 0 of a new model)
            session = self._session(str(body["session_id"]))
            model_id = f"{body['session_id']}:train:{body['model_seq_id']}"
            model = Model(model_id, str(body.get("base_model") or ""), None)
            self._register_model(session, model)
            fut = self.futures.new()

            def create() -> dict[str, Any]:
                local = self._local_path(path)
                client = session.engine.resume_training_client(local)
                model.client = client
                meta = self._checkpoint_meta(path)
                engine_base = str(getattr(client, "base_model", "") or "")
                served = {v: k for k, v in self.models.items()}.get(engine_base, engine_base)
                model.base_model = model.base_model or meta.get("base_model") or served
                model.lora_rank = meta.get("lora_rank", getattr(client, "lora_rank", None))
                model.tokenizer_id = self._tokenizer_dir(model.base_model or "checkpoint", client)
                return {"type": "load_weights", "path": path, "model_id": model_id}

            session.worker.submit(
                self._job(fut, create, model=model, poison=poison, creating=True))
            return fut

        def work(model: Model) -> dict[str, Any]:
            session, _ = self._model(model.model_id)
            old = model.client
            model.client = session.engine.resume_training_client(self._local_path(path))
            if old is not None:
                old.close()
            return {"type": "load_weights", "path": path, "model_id": model.model_id}

        return self._enqueue_model_op(
            str(body["model_id"]), body.get("seq_id"), work, poison=poison)

    # ----------------------------------------------------------------- sampling
    def save_weights_for_sampler(self, body: Mapping[str, Any], *, poison: bool) -> ServerFuture:
        model_id = str(body["model_id"])
        name = body.get("path")
        seq = body.get("sampling_session_seq_id")

        def work(model: Model) -> dict[str, Any]:
            assert model.client is not None
            session_id = model_id.split(":train:")[0]
            label = name if name is not None else f"s{seq}"
            client = model.client.sampling_client(sanitize(f"{model_id}-{label}"))
            sampler_id = f"{session_id}:sample:{seq if seq is not None else uuid.uuid4().hex}"
            sampler = Sampler(sampler_id, model.base_model, client)
            with self._lock:
                self._samplers[sampler_id] = sampler
                if name is None:  # ephemeral: keep the last few (each holds a weight snapshot)
                    session = self._sessions[session_id]
                    session.samplers.append(sampler_id)
                    while len(session.samplers) > KEEP_EPHEMERAL_SAMPLERS:
                        self._samplers.pop(session.samplers.popleft(), None)
            if name is not None:
                tinker_path = f"tinker://{model_id}/sampler_weights/{name}"
                sampler.model_path = tinker_path
                with self._lock:
                    self._sampler_paths[tinker_path] = sampler
                return {"type": "save_weights_for_sampler", "path": tinker_path}
            return {"type": "save_weights_for_sampler", "sampling_session_id": sampler_id}

        return self._enqueue_model_op(model_id, body.get("seq_id"), work, poison=poison)

    def create_sampling_session(self, body: Mapping[str, Any]) -> dict[str, Any]:
        session = self._session(str(body["session_id"]))
        sampler_id = f"{session.session_id}:sample:{body['sampling_session_seq_id']}"
        model_path = body.get("model_path")
        base_model = body.get("base_model")
        if model_path is not None:
            with self._lock:
                known = self._sampler_paths.get(str(model_path))
            if known is None:
                raise ApiError(404, f"unknown sampler weights {model_path!r}")
            sampler = Sampler(sampler_id, known.base_model, known.client, known.model_path)
        elif base_model is not None:
            try:
                engine_name = self._resolve_base(str(base_model))
            except UserError as exc:
                raise ApiError(400, str(exc)) from None

            def make() -> SamplingClient:
                client = session.engine.create_training_client(engine_name, lora_rank=None,
                                                               seed=0)
                return client.sampling_client(f"{sanitize(str(base_model))}-base")

            sampler = Sampler(sampler_id, str(base_model), session.worker.call(make))
        else:
            raise ApiError(400, "create_sampling_session needs model_path or base_model")
        with self._lock:
            self._samplers[sampler_id] = sampler
        return {"type": "create_sampling_session", "sampling_session_id": sampler_id}

    def get_sampler(self, sampler_id: str) -> dict[str, Any]:
        with self._lock:
            sampler = self._samplers.get(sampler_id)
        if sampler is None:
            raise ApiError(404, f"unknown sampler {sampler_id!r}")
        return {"sampler_id": sampler_id, "base_model": sampler.base_model,
                "model_path": sampler.model_path}

    def asample(self, body: Mapping[str, Any], *, poison: bool,
                duplicate: str = "off") -> tuple[ServerFuture, int]:
        """A sampling request; ``duplicate`` is the ``--duplicate-samples`` fault
        (:mod:`textpolicy.serve.faults`)."""
        import tinker.types as tt

        request = tt.SampleRequest.model_validate(body)
        sampler_id = request.sampling_session_id
        if sampler_id is None:
            raise ApiError(400, "asample needs a sampling_session_id")
        with self._lock:
            sampler = self._samplers.get(sampler_id)
        if sampler is None:
            raise ApiError(404, f"unknown sampling session {sampler_id!r}")
        session = self._session(sampler_id.split(":sample:")[0])
        try:
            params = sampling_params_from_wire(request.sampling_params)
        except WireError as exc:
            raise ApiError(400, str(exc)) from None
        prompt = request.prompt.to_ints()
        num = int(request.num_samples)
        topk = int(request.topk_sample_logprobs or 0)
        want_prompt_lp = bool(request.prompt_logprobs)
        copies = 1
        if duplicate == "all" or (duplicate == "seeded" and params.seed is not None):
            copies, num = num, 1
            if duplicate == "all":
                params = attrs.evolve(params, seed=0)
        fut = self.futures.new()

        def submit() -> Callable[[], None]:
            if poison:
                fut.set_error(f"injected failure of {fut.request_id} "
                              "(tp serve --poison-request)", "Server")
                return lambda: None
            try:
                pending = sampler.client.sample(prompt, num, params, topk_logprobs=topk)
                lp_pending = (sampler.client.compute_logprobs([prompt]) if want_prompt_lp
                              else None)
            except Exception as exc:
                category: Category = "User" if isinstance(exc, EngineError) else "Server"
                fut.set_error(f"{type(exc).__name__}: {exc}", category)
                return lambda: None

            def finish() -> None:
                def work() -> bytes:
                    seqs = pending.result() * copies
                    prompt_lp = lp_pending.result()[0] if lp_pending is not None else None
                    return encode_sample_response(seqs, topk=topk, prompt_logprobs=prompt_lp)

                self._job(fut, work)()

            return finish

        session.worker.submit_sample(SampleJob((sampler_id, int(request.seq_id or 0)), submit))
        return fut, num * copies


__all__ = ["TinkerService"]
