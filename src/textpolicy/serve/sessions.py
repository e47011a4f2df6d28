"""The state behind ``tp serve``: sessions, their engines and models, samplers, checkpoints.

Each session gets its own engine and worker thread (``SessionWorker``), so separate clients
(e.g. the probes of a parallel sweep) run side by side while one client's requests run in
order. :class:`ServiceState` holds every session, model and sampler the server knows and finds
them by id; the protocol (:mod:`textpolicy.serve.service`) decodes requests into calls on it.

Checkpoints are named ``tinker://{model_id}/weights/{name}`` and map to the engine's own
paths; the map is kept in ``<state_dir>/checkpoints.json`` so a restarted server (same
state dir) can still resume them. Plain local paths are accepted as well, when they lie under
the state directory.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from textpolicy import strictjson
from textpolicy.engines.base import LOAD_LOCK, Engine, SamplingClient, TrainingClient
from textpolicy.serve.errors import ApiError, UserError
from textpolicy.serve.futures import ServerFuture
from textpolicy.serve.worker import SessionWorker

log = logging.getLogger(__name__)

EngineFactory = Callable[[], Engine]

#: ephemeral samplers kept per session (a training loop uses only its newest one)
KEEP_EPHEMERAL_SAMPLERS = 4



@attrs.define(eq=False)
class Model:
    """A training client of a session, with its ``seq_id`` queue (``pending``, ``seen``)."""

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
class Sampler:
    """A sampling client, known by its sampler id (and its ``model_path`` once saved)."""

    sampler_id: str
    base_model: str
    client: SamplingClient
    model_path: str | None = None


class Session:
    """One client's session: its engine (made on first use), worker thread, models and
    ephemeral samplers."""

    def __init__(self, session_id: str, engine_factory: EngineFactory, gather_s: float) -> None:
        self.session_id = session_id
        self.worker = SessionWorker(session_id.split("-")[-1][:8], gather_s)
        self.lock = threading.Lock()
        self.models: dict[str, Model] = {}
        self.finished = False
        self.last_seen = time.monotonic()
        self.samplers: deque[str] = deque()  # ephemeral samplers, oldest first
        self._engine_factory = engine_factory
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        """The session's engine, made on first use (on the worker thread)."""
        if self._engine is None:
            with LOAD_LOCK:
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


def sanitize(text: str) -> str:
    """``text`` with every run of characters unsafe in a file name replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


class ServiceState:
    """Every session, model, sampler and saved checkpoint of one server, found by id."""

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
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._model_session: dict[str, str] = {}
        self._samplers: dict[str, Sampler] = {}
        self._sampler_paths: dict[str, Sampler] = {}
        self._checkpoint_file = self.state_dir / "checkpoints.json"
        self._checkpoints: dict[str, str] = {}
        if self._checkpoint_file.exists():
            self._checkpoints = json.loads(self._checkpoint_file.read_text())

    # ----------------------------------------------------------------- sessions
    def _session(self, session_id: str) -> Session:
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            raise ApiError(404, f"unknown session {session_id!r}")
        if session.finished:
            raise ApiError(410, f"session {session_id!r} has finished")
        session.last_seen = time.monotonic()
        return session

    def _end_session(self, session: Session) -> None:
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
        raise UserError(f"unknown base model {name!r}; this server serves: {known}")

    def _model(self, model_id: str) -> tuple[Session, Model]:
        with self._lock:
            session_id = self._model_session.get(model_id)
        if session_id is None:
            raise ApiError(404, f"unknown model {model_id!r}")
        session = self._session(session_id)
        return session, session.models[model_id]

    def _register_model(self, session: Session, model: Model) -> None:
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
        target = self.state_dir / "tokenizers" / sanitize(base_model)
        with LOAD_LOCK:
            if not (target / "tokenizer_config.json").exists():
                target.mkdir(parents=True, exist_ok=True)
                save(str(target))
        return str(target.resolve())

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
            raise UserError(f"unknown checkpoint path {path[:200]!r}")
        resolved = Path(local).resolve()
        if not resolved.is_relative_to(self.state_dir.resolve()) or not resolved.exists():
            raise UserError(f"checkpoint path {path[:200]!r}: tp serve loads only the "
                             f"checkpoints under its own state directory")
        return str(resolved)

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


__all__ = [
    "KEEP_EPHEMERAL_SAMPLERS",
    "EngineFactory",
    "Model",
    "Sampler",
    "ServiceState",
    "Session",
    "sanitize",
]
