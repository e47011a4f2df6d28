"""The Tinker API over a textpolicy engine: sessions, models, samplers, checkpoints, futures.

Each session gets its own engine and worker thread (``SessionWorker``), so separate clients
(e.g. the probes of a parallel sweep) run side by side while one client's requests run in
order. A model's requests are applied in ``seq_id`` order whatever order they arrive in; a
repeated ``seq_id`` (a retried POST) gets the first request's future back.

Checkpoints are named ``tinker://{model_id}/weights/{name}`` and map to the engine's own
paths; the map is kept in ``<state_dir>/checkpoints.json`` so a restarted server (same
state dir) can still resume them. Plain local paths are accepted as well.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from textpolicy import strictjson
from textpolicy.engines.base import AdamParams, Engine, SamplingClient, TrainingClient
from textpolicy.errors import EngineError
from textpolicy.serve.futures import Category, FutureTable, ServerFuture
from textpolicy.serve.wire import (
    WireError,
    encode_forward_backward_output,
    encode_sample_response,
    sampling_params_from_wire,
    tinker_metrics,
)
from textpolicy.serve.worker import SampleJob, SessionWorker

log = logging.getLogger(__name__)

EngineFactory = Callable[[], Engine]

#: ephemeral samplers kept per session (a training loop uses only its newest one)
KEEP_EPHEMERAL_SAMPLERS = 4

#: model loading (transformers' from_pretrained, peft) is not thread-safe: sessions load one
#: at a time; everything else of different sessions runs side by side
_LOAD_LOCK = threading.RLock()


class ApiError(Exception):
    """Answered as an HTTP error with a JSON body (not a failed future)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _UserError(Exception):
    """A failed future in Tinker's ``User`` category (bad input, unknown name)."""


@attrs.define(eq=False)
class _Model:
    model_id: str
    base_model: str
    lora_rank: int | None
    client: TrainingClient | None = None
    next_seq: int = 1
    pending: dict[int, tuple[Callable[[], None], ServerFuture]] = attrs.field(factory=dict)
    seen: dict[int, str] = attrs.field(factory=dict)
    poisoned: str | None = None
    failed: str | None = None  # creation failed
    tokenizer_id: str | None = None


@attrs.define(eq=False)
class _Sampler:
    sampler_id: str
    base_model: str
    client: SamplingClient
    model_path: str | None = None


class _Session:
    def __init__(self, session_id: str, engine_factory: EngineFactory, gather_s: float) -> None:
        self.session_id = session_id
        self.worker = SessionWorker(session_id.split("-")[-1][:8], gather_s)
        self.lock = threading.Lock()
        self.models: dict[str, _Model] = {}
        self.finished = False
        self.last_seen = time.monotonic()
        self.samplers: deque[str] = deque()  # ephemeral samplers, oldest first
        self._engine_factory = engine_factory
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        """The session's engine, made on first use (on the worker thread)."""
        if self._engine is None:
            with _LOAD_LOCK:
                self._engine = self._engine_factory()
        return self._engine

    def close(self) -> None:
        def shutdown() -> None:
            for model in self.models.values():
                if model.client is not None:
                    try:
                        model.client.close()
                    except Exception:
                        log.exception("tp serve: closing a training client failed")
            if self._engine is not None:
                self._engine.close()

        self.worker.submit(shutdown)
        self.worker.stop()


def _sanitize(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


class TinkerService:
    """Everything the HTTP layer dispatches to."""

    def __init__(
        self,
        engine_factory: EngineFactory,
        *,
        models: Mapping[str, str],
        state_dir: Path,
        gather_s: float = 0.02,
    ) -> None:
        self.engine_factory = engine_factory
        self.models = dict(models)  # served name -> engine name or checkpoint path
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.gather_s = gather_s
        self.futures = FutureTable()
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        self._model_session: dict[str, str] = {}
        self._samplers: dict[str, _Sampler] = {}
        self._sampler_paths: dict[str, _Sampler] = {}
        self._checkpoint_file = self.state_dir / "checkpoints.json"
        self._checkpoints: dict[str, str] = {}
        if self._checkpoint_file.exists():
            self._checkpoints = json.loads(self._checkpoint_file.read_text())

    # ----------------------------------------------------------------- sessions
    def create_session(self, body: Mapping[str, Any]) -> dict[str, Any]:
        session_id = f"session-{uuid.uuid4().hex[:12]}"
        with self._lock:
            self._sessions[session_id] = _Session(session_id, self.engine_factory, self.gather_s)
        return {"type": "create_session", "session_id": session_id}

    def _session(self, session_id: str) -> _Session:
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            raise ApiError(404, f"unknown session {session_id!r}")
        if session.finished:
            raise ApiError(410, f"session {session_id!r} has finished")
        session.last_seen = time.monotonic()
        return session

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

    def _end_session(self, session: _Session) -> None:
        """Finish a session: release its engine, models and samplers."""
        if session.finished:
            return
        session.finished = True
        prefix = f"{session.session_id}:"
        with self._lock:
            for sampler_id in [k for k in self._samplers if k.startswith(prefix)]:
                del self._samplers[sampler_id]
            for path in [k for k, v in self._sampler_paths.items()
                         if v.sampler_id.startswith(prefix)]:
                del self._sampler_paths[path]
        session.close()

    def reap(self, idle_s: float) -> int:
        """Finish sessions not heard from for ``idle_s`` seconds (a client that died without
        closing; live SDK clients heartbeat every 10 s). Returns how many were finished."""
        now = time.monotonic()
        with self._lock:
            idle = [s for s in self._sessions.values()
                    if not s.finished and now - s.last_seen > idle_s]
        for session in idle:
            log.warning("tp serve: finishing idle session %s", session.session_id)
            self._end_session(session)
        return len(idle)

    def close(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            self._end_session(session)

    # ------------------------------------------------------------------- models
    def _resolve_base(self, name: str) -> str:
        if name in self.models:
            return self.models[name]
        known = ", ".join(sorted(self.models))
        raise _UserError(f"unknown base model {name!r}; this server serves: {known}")

    def _model(self, model_id: str) -> tuple[_Session, _Model]:
        with self._lock:
            session_id = self._model_session.get(model_id)
        if session_id is None:
            raise ApiError(404, f"unknown model {model_id!r}")
        session = self._session(session_id)
        return session, session.models[model_id]

    def _register_model(self, session: _Session, model: _Model) -> None:
        with session.lock:
            if model.model_id in session.models:
                raise ApiError(409, f"model {model.model_id!r} already exists")
            session.models[model.model_id] = model
        with self._lock:
            self._model_session[model.model_id] = session.session_id

    def _tokenizer_dir(self, base_model: str, client: TrainingClient) -> str | None:
        """A local directory the SDK's ``get_tokenizer`` can load (AutoTokenizer)."""
        tok = client.get_tokenizer()
        name = getattr(tok, "name_or_path", None)
        if isinstance(name, str) and name and (Path(name) / "tokenizer_config.json").exists():
            return str(Path(name).resolve())
        save = getattr(tok, "save_pretrained", None)
        if save is None:
            return None
        target = self.state_dir / "tokenizers" / _sanitize(base_model)
        with _LOAD_LOCK:
            if not (target / "tokenizer_config.json").exists():
                target.mkdir(parents=True, exist_ok=True)
                save(str(target))
        return str(target.resolve())

    def create_model(self, body: Mapping[str, Any], *, poison: bool) -> ServerFuture:
        import tinker.types as tt

        request = tt.CreateModelRequest.model_validate(body)
        session = self._session(request.session_id)
        model_id = f"{request.session_id}:train:{request.model_seq_id}"
        lora = request.lora_config
        # LoRA rank 0 (or no LoRA config) is a full fine-tune here; Tinker itself refuses it
        model = _Model(model_id, request.base_model, (lora.rank or None) if lora else None)
        self._register_model(session, model)
        fut = self.futures.new()
        seed = 0 if lora is None or lora.seed is None else int(lora.seed)

        def create() -> dict[str, Any]:
            engine_name = self._resolve_base(request.base_model)
            with _LOAD_LOCK:
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
        model: _Model | None = None,
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
            except (_UserError, WireError, EngineError) as exc:
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
        work: Callable[[_Model], Any],
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

        def work(model: _Model) -> bytes:
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

        def work(model: _Model) -> dict[str, Any]:
            assert model.client is not None
            model.client.optim_step(adam).result()
            return {"metrics": {}}

        return self._enqueue_model_op(
            str(body["model_id"]), body.get("seq_id"), work, poison=poison)

    # -------------------------------------------------------------- checkpoints
    def _remember_checkpoint(self, tinker_path: str, local_path: str) -> None:
        with self._lock:
            self._checkpoints[tinker_path] = local_path
            tmp = self._checkpoint_file.with_suffix(".tmp")
            tmp.write_text(strictjson.dumps(self._checkpoints, indent=1, sort_keys=True))
            os.replace(tmp, self._checkpoint_file)

    def _local_path(self, path: str) -> str:
        """The folder of a checkpoint: a ``tinker://`` name this server saved, or a folder
        under its own state directory — never anything else on the machine."""
        with self._lock:
            local = self._checkpoints.get(path)
        if local is None and not path.startswith("tinker://"):
            local = path
        if local is None:
            raise _UserError(f"unknown checkpoint path {path[:200]!r}")
        resolved = Path(local).resolve()
        if not resolved.is_relative_to(self.state_dir.resolve()) or not resolved.exists():
            raise _UserError(f"checkpoint path {path[:200]!r}: tp serve loads only the "
                             f"checkpoints under its own state directory")
        return str(resolved)

    def save_weights(self, body: Mapping[str, Any], *, poison: bool) -> ServerFuture:
        model_id = str(body["model_id"])
        name = str(body.get("path") or f"state-{uuid.uuid4().hex[:8]}")

        def work(model: _Model) -> dict[str, Any]:
            assert model.client is not None
            local = model.client.save_state(_sanitize(f"{model_id}-{name}")).result()
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
            model = _Model(model_id, str(body.get("base_model") or ""), None)
            self._register_model(session, model)
            fut = self.futures.new()

            def create() -> dict[str, Any]:
                local = self._local_path(path)
                with _LOAD_LOCK:
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

        def work(model: _Model) -> dict[str, Any]:
            session, _ = self._model(model.model_id)
            old = model.client
            with _LOAD_LOCK:
                model.client = session.engine.resume_training_client(self._local_path(path))
            if old is not None:
                old.close()
            return {"type": "load_weights", "path": path, "model_id": model.model_id}

        return self._enqueue_model_op(
            str(body["model_id"]), body.get("seq_id"), work, poison=poison)

    def _checkpoint_meta(self, path: str) -> dict[str, Any]:
        """Base model and LoRA rank of the model that saved ``path`` (if this server knows)."""
        match = re.match(r"tinker://(.+):train:\d+/weights/", path)
        if match is None:
            return {}
        model_id = path[len("tinker://"):].split("/weights/")[0]
        with self._lock:
            session_id = self._model_session.get(model_id)
            session = self._sessions.get(session_id) if session_id else None
        model = session.models.get(model_id) if session is not None else None
        if model is None:
            return {}
        return {"base_model": model.base_model, "lora_rank": model.lora_rank}

    # ----------------------------------------------------------------- sampling
    def save_weights_for_sampler(self, body: Mapping[str, Any], *, poison: bool) -> ServerFuture:
        model_id = str(body["model_id"])
        name = body.get("path")
        seq = body.get("sampling_session_seq_id")

        def work(model: _Model) -> dict[str, Any]:
            assert model.client is not None
            session_id = model_id.split(":train:")[0]
            label = name if name is not None else f"s{seq}"
            client = model.client.sampling_client(_sanitize(f"{model_id}-{label}"))
            sampler_id = f"{session_id}:sample:{seq if seq is not None else uuid.uuid4().hex}"
            sampler = _Sampler(sampler_id, model.base_model, client)
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
            sampler = _Sampler(sampler_id, known.base_model, known.client, known.model_path)
        elif base_model is not None:
            try:
                engine_name = self._resolve_base(str(base_model))
            except _UserError as exc:
                raise ApiError(400, str(exc)) from None

            def make() -> SamplingClient:
                with _LOAD_LOCK:
                    client = session.engine.create_training_client(engine_name, lora_rank=None,
                                                                   seed=0)
                return client.sampling_client(f"{_sanitize(str(base_model))}-base")

            sampler = _Sampler(sampler_id, str(base_model), session.worker.call(make))
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
