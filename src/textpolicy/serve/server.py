"""The HTTP layer of ``tp serve``: Tinker's REST paths over ``TinkerService``.

Stdlib ``ThreadingHTTPServer`` with HTTP/1.1 keep-alive. Every request needs an ``X-API-Key``
with Tinker's ``tml-`` prefix (any such key is accepted; nothing is checked or stored).
``retrieve_future`` long-polls: it holds the request until the future is done or
``long_poll_s`` passes, then answers 408 (the SDK's "try again").

Hardening (a listener anyone on the host can reach): the path and the key are checked before
a byte of the body is read (a request without a key costs nothing); a body larger than
``max_body_bytes`` gets 413 and a malformed ``Content-Length`` 400, both closing the
connection; a zstd body may not decompress to more than ``MAX_DECOMPRESSED_BYTES``; at most
``max_threads`` connections are served at once (the rest wait in the listen backlog) and an
idle connection is dropped after ``IDLE_TIMEOUT_S``; malformed JSON, protobuf or zstd is a 400;
a client that disconnects is one log line.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from textpolicy import strictjson
from textpolicy.serve.errors import ApiError
from textpolicy.serve.faults import FaultPlan
from textpolicy.serve.futures import ServerFuture
from textpolicy.serve.service import TinkerService
from textpolicy.serve.sessions import EngineFactory
from textpolicy.serve.wire import (
    MAX_DECOMPRESSED_BYTES,
    PROTO_CONTENT_TYPE,
    WireError,
    decode_forward_backward,
)

log = logging.getLogger(__name__)

PREFIX = "/api/v1/"
#: default body limit: a forward_backward of a real batch is a few MB
MAX_BODY_BYTES = 64 << 20
#: default number of connections served at once (the SDK keeps up to ~100 open)
MAX_THREADS = 128
#: a connection that sends nothing for this long is closed (slow or idle clients)
IDLE_TIMEOUT_S = 120.0

CLIENT_CONFIG: dict[str, Any] = {
    "pjwt_auth_enabled": False,
    "credential_default_source": "api_key",
    "use_pyqwest_transport": False,
    "parallel_fwdbwd_chunks": False,
    "proto_compress_fwdbwd": False,
    # one forward_backward request per call: the engine sees the whole batch at once
    "fwdbwd_max_chunk_len": 1 << 30,
    "fwdbwd_max_chunk_bytes_count": 1 << 40,
    "sample_use_retrieve_futures": False,
    "custom_loss_server_side": False,
    "sample_join_sampling_session": False,
}


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = IDLE_TIMEOUT_S  # socket timeout of every read

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    # ----------------------------------------------------------------- framing
    def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value: Mapping[str, Any]) -> None:
        self._reply(status, strictjson.dumps(value).encode())

    def _body(self) -> bytes:
        """The request body, after checking its declared length (``_BadRequest``)."""
        raw = self.headers.get("Content-Length")
        if raw is None:
            if self.headers.get("Transfer-Encoding"):
                raise _BadRequest(411, "tp serve needs a Content-Length (no chunked bodies)")
            return b""
        text = raw.strip()
        if not text.isdigit() or len(text) > 18:
            raise _BadRequest(400, f"malformed Content-Length {raw[:40]!r}")
        length = int(text)
        if length > self.server.max_body_bytes:
            raise _BadRequest(413, f"body of {length:,} bytes; tp serve accepts at most "
                                   f"{self.server.max_body_bytes:,} (tp serve --max-body-mb)")
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            raise _BadRequest(400, f"body ended after {len(body):,} of {length:,} bytes")
        return body

    def _refuse(self, status: int, message: str) -> None:
        """Answer and close: the unread body must not be taken for the next request."""
        self.close_connection = True
        self.send_response(status)
        body = strictjson.dumps({"error": message}).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        if not path.startswith(PREFIX):
            self._refuse(404, f"no such path {path[:200]}")
            return
        endpoint = path[len(PREFIX):]
        key = self.headers.get("X-API-Key") or ""
        if not key.startswith(("tml-", "eyJ")):  # before the body: costs the client nothing
            self._refuse(401, "missing or malformed X-API-Key (expected tml-...)")
            return
        try:
            body = self._body()
        except _BadRequest as exc:
            self._refuse(exc.status, str(exc))
            return
        faults = self.server.faults
        if faults.delay_s > 0:
            time.sleep(faults.delay_s)
        counted = endpoint.split("/")[0] if endpoint.startswith("sessions/") else endpoint
        fail, poison = faults.count(counted)
        if fail:
            self._json(fail, {"error": f"injected HTTP {fail} for {endpoint} "
                                      "(tp serve --fail-request)"})
            return
        try:
            self._dispatch(method, endpoint, body, poison)
        except (ConnectionError, TimeoutError):
            raise  # the client is gone: handle_error logs one line
        except ApiError as exc:
            self._json(exc.status, {"error": str(exc)})
        except (WireError, ValueError, KeyError, TypeError) as exc:
            self._json(400, {"error": f"bad request to {endpoint}: {exc}"})
        except Exception as exc:  # the server must survive anything a client sends
            log.exception("tp serve: %s failed", endpoint)
            self._json(500, {"error": f"{type(exc).__name__}: {exc}"})

    def _future(self, fut: ServerFuture, **extra: Any) -> None:
        self._json(200, {"request_id": fut.request_id, **extra})

    def _dispatch(self, method: str, endpoint: str, raw: bytes, poison: bool) -> None:
        svc = self.server.service
        if method == "GET":
            if endpoint.startswith("samplers/"):
                self._json(200, svc.get_sampler(endpoint[len("samplers/"):]))
            elif endpoint == "healthz":
                self._json(200, {"status": "ok"})
            else:
                self._json(404, {"error": f"no such endpoint GET {endpoint}"})
            return
        if endpoint == "forward_backward":
            decoded = decode_forward_backward(raw, self.headers.get("Content-Encoding"),
                                              max_bytes=self.server.max_decompressed_bytes)
            fut = svc.forward_backward(decoded, poison=poison)
            self._future(fut, model_id=decoded["model_id"])
            return
        parsed = json.loads(raw) if raw else {}
        if not isinstance(parsed, dict):
            raise ValueError(f"expected a JSON object, got {type(parsed).__name__}")
        body: dict[str, Any] = parsed
        if endpoint == "retrieve_future":
            self._retrieve(str(body.get("request_id", "")))
        elif endpoint == "client/config":
            self._json(200, CLIENT_CONFIG)
        elif endpoint == "client/dynamic_config":
            self._json(404, {"error": "not supported"})  # the SDK keeps its defaults
        elif endpoint == "create_session":
            self._json(200, svc.create_session(body))
        elif endpoint == "session_heartbeat":
            self._json(200, svc.heartbeat(body))
        elif endpoint == "telemetry":
            self._json(200, {"status": "accepted"})
        elif endpoint == "create_model":
            self._future(svc.create_model(body, poison=poison))
        elif endpoint == "get_info":
            self._json(200, svc.get_info(body))
        elif endpoint == "optim_step":
            self._future(svc.optim_step(body, poison=poison), model_id=body.get("model_id"))
        elif endpoint == "save_weights":
            self._future(svc.save_weights(body, poison=poison), model_id=body.get("model_id"))
        elif endpoint == "save_weights_for_sampler":
            self._future(svc.save_weights_for_sampler(body, poison=poison),
                         model_id=body.get("model_id"))
        elif endpoint == "load_weights":
            self._future(svc.load_weights(body, poison=poison))
        elif endpoint == "create_sampling_session":
            self._json(200, svc.create_sampling_session(body))
        elif endpoint == "asample":
            fut, num = svc.asample(body, poison=poison,
                                   duplicate=self.server.faults.duplicate_samples)
            self._future(fut, sample_sequence_ids=[f"{fut.request_id}:{i}" for i in range(num)])
        elif endpoint.startswith("sessions/") and endpoint.endswith("/finish"):
            self._json(200, svc.finish_session(endpoint.split("/")[1]))
        else:
            self._json(404, {"error": f"tp serve does not implement {endpoint}"})

    def _retrieve(self, request_id: str) -> None:
        svc = self.server.service
        fut = svc.futures.get(request_id)
        if fut is None:
            self._json(404, {"error": f"unknown request_id {request_id!r}"})
            return
        if not fut.wait(self.server.long_poll_s):
            self._json(408, {"type": "try_again", "request_id": request_id,
                             "queue_state": "active"})
            return
        if fut.error is not None:
            message, category = fut.error
            self._json(200, {"error": message, "category": category})
        elif fut.proto is not None:
            self._reply(200, fut.proto, PROTO_CONTENT_TYPE)
        else:
            self._json(200, fut.json or {})
        svc.futures.mark_retrieved(request_id)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], service: TinkerService, faults: FaultPlan,
                 *, long_poll_s: float, verbose: bool, max_body_bytes: int = MAX_BODY_BYTES,
                 max_threads: int = MAX_THREADS,
                 max_decompressed_bytes: int = MAX_DECOMPRESSED_BYTES) -> None:
        super().__init__(address, _Handler)
        self.service = service
        self.faults = faults
        self.long_poll_s = long_poll_s
        self.verbose = verbose
        self.max_body_bytes = max_body_bytes
        self.max_decompressed_bytes = max_decompressed_bytes
        self._slots = threading.BoundedSemaphore(max_threads)

    def process_request(self, request: Any, client_address: Any) -> None:
        # at most max_threads connections at once: the accept loop waits for a free slot,
        # and further clients wait in the kernel's listen backlog
        self._slots.acquire()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):  # the client left or stalled
            log.warning("tp serve: client %s:%s disconnected (%s)", *client_address[:2],
                        type(exc).__name__)
            return
        super().handle_error(request, client_address)


class TinkerServer:
    """A running ``tp serve``: ``start()`` binds and serves in a background thread."""

    def __init__(
        self,
        engine_factory: EngineFactory,
        *,
        models: Mapping[str, str],
        state_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultPlan | None = None,
        long_poll_s: float = 20.0,
        gather_s: float = 0.02,
        session_idle_s: float = 300.0,
        verbose: bool = False,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_threads: int = MAX_THREADS,
    ) -> None:
        self.service = TinkerService(engine_factory, models=models, state_dir=state_dir,
                                     gather_s=gather_s)
        self._httpd = _Server((host, port), self.service, faults or FaultPlan(),
                              long_poll_s=long_poll_s, verbose=verbose,
                              max_body_bytes=max_body_bytes, max_threads=max_threads)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.session_idle_s = session_idle_s
        threading.Thread(target=self._reaper, name="tp-serve-reaper", daemon=True).start()

    def _reaper(self) -> None:
        while not self._stopping.wait(min(60.0, self.session_idle_s / 2)):
            self.service.reap(self.session_idle_s)

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> TinkerServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="tp-serve-http",
                                        daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self.service.close()
