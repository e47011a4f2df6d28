"""The ``tinker`` engine: textpolicy's engine interface on the real ``tinker`` SDK (pinned).

- The SDK's own types: ``ModelInput.from_ints``, ``Datum`` with ``TensorData`` inputs (already
  next-token shifted by ``build_rl_datum``), ``AdamParams``, ``SamplingParams``; the loss is
  Tinker's summed loss (``metrics["loss:sum"]``).
- Every call returns the SDK's future at once: the training loop submits all sampling requests
  of a step before awaiting any, and forward_backward + optim_step back to back; the next
  step's sampler (``save_weights_and_get_sampling_client``) is requested right behind the
  optim_step, so it is ready when the step starts.
- Checkpoints are ``save_state`` (weights + Adam state, a ``tinker://`` path); resume is
  ``create_training_client_from_state_with_optimizer``.
- Recovery: a failed request poisons a Tinker training client. The wrapper keeps the last saved
  state and every weight-changing request made since; when a request fails (server-side, not a
  user error) it makes a new training client from that state (or, before the first save, a fresh
  LoRA client with the same seed), replays the logged requests in order and then the failed
  one, so training continues where it was. At most ``max_recoveries`` times per request.
- A dead service stops the run: every wait polls the SDK future and, while it has no answer,
  checks that something still listens at the base URL (a TCP connect). When nothing has
  listened for ``unreachable_timeout_s`` (engine option, default 120 s) the wait raises
  ``ServiceUnreachable`` instead of waiting out the SDK's own retries (minutes, or forever for
  a request that was accepted by a server that then died); the training loop then stops with
  one line naming the service, how long it was unreachable and the last checkpoint.
- Concurrency and backoff (:mod:`textpolicy.engines.tinker_limits`): with the engine option
  ``max_concurrent = N`` at most N requests are in flight per base URL over all textpolicy
  processes of the machine (lock-file slots; one is held from submission until the SDK's future
  is done); every retry textpolicy makes (a sampling request resubmitted, a training client
  recreated) first waits a full-jitter
  exponential backoff drawn from the engine's own generator (engine option ``backoff_seed``).
  The SDK retries 408/409/429/5xx and dropped connections itself first (1, 2, 4, ... 30 s, up
  to 5 minutes); textpolicy's layer acts only on what the SDK gave up on.
- A session the service no longer knows (``404 unknown ... session``, after a `tp serve`
  restart) is a failed request like any other: the training client is recreated from the
  last saved state and the logged requests are replayed; a sampling request gets a sampler
  recreated from the current training client.
- Credentials: the API key comes only from the environment or the SDK's own credential store
  (``TINKER_API_KEY``, ``TINKER_CREDENTIAL_CMD``, ``~/.tinker/credentials.json``); this module
  never reads it into anything that is written or logged. ``base_url`` (engine option, from
  ``tp train --base-url``) falls back to ``$TINKER_BASE_URL``, then Tinker's production URL.
- Where the key goes: the SDK sends it to ``base_url``. A host that is neither Tinker's own
  service nor this machine (:mod:`textpolicy.urls`; the host as written, never resolved) gets
  it only when the engine option ``trusted_host`` names that host (``tp train --trust-host
  HOST``; a spec's ``engine.options.trusted_host``), and then with a one-line warning on
  stderr naming it. Otherwise the engine refuses before connecting: running someone else's
  spec does not send them your key.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlparse

import attrs
import numpy as np

from textpolicy.engines.base import (
    LOAD_LOCK,
    AdamParams,
    Datum,
    ForwardBackwardResult,
    SampledSequence,
    SamplingParams,
    sample_seed,
)
from textpolicy.engines.tinker_limits import (
    BACKOFF_MAX_ATTEMPTS,
    Backoff,
    Limiter,
    is_retryable,
    machine_slots,
    next_engine_index,
    parse_max_concurrent,
)
from textpolicy.errors import ConfigError, EngineError, ServiceUnreachable
from textpolicy.urls import is_loopback_host, is_tinker_host, redact_url, url_host

log = logging.getLogger(__name__)

PINNED_SDK_VERSION = "0.38.0"
#: how a seeded request for G samples is sent (engine option ``sample_seeds``; see
#: :class:`TinkerSamplingClient`).
SAMPLE_SEEDS = ("per_sample", "none")


def installed_sdk_version() -> str | None:
    try:
        return importlib.metadata.version("tinker")
    except importlib.metadata.PackageNotFoundError:
        return None


def check_sdk_version() -> None:
    """Warn when the installed SDK is not the pinned one (its API changes between minors)."""
    version = installed_sdk_version()
    if version is None:
        raise EngineError("the tinker engine needs the tinker SDK: pip install "
                          f"tinker=={PINNED_SDK_VERSION}")
    if version != PINNED_SDK_VERSION:
        warnings.warn(f"textpolicy is tested with tinker=={PINNED_SDK_VERSION}, but "
                      f"{version} is installed; its API may differ", RuntimeWarning,
                      stacklevel=3)


#: the SDK's production URL and credentials file (tinker.lib.base_url, tinker.lib.credentials)
DEFAULT_BASE_URL = "https://tinker.thinkingmachines.dev/services/tinker-prod"
CREDENTIALS_FILE = "~/.tinker/credentials.json"
NO_KEY = ("no Tinker API key: set TINKER_API_KEY (tml-...), TINKER_CREDENTIAL_CMD, or log in "
          "with `tinker auth`; for `tp serve` use TINKER_API_KEY=tml-local")


def _has_credentials() -> bool:
    if os.environ.get("TINKER_API_KEY") or os.environ.get("TINKER_CREDENTIAL_CMD"):
        return True
    try:
        from tinker.lib.credentials import JsonCredentialStore, default_credentials_path

        return JsonCredentialStore(default_credentials_path()).get_default_key() is not None
    except Exception:
        return False


def check_key_destination(url: str, trusted_host: str | None) -> str | None:
    """Whether the API key may be sent to ``url``: None (Tinker's service or this machine),
    a warning line (a host named by ``trusted_host``), or ``ConfigError``."""
    host = url_host(url)
    shown = redact_url(url)
    if is_tinker_host(host) or is_loopback_host(host):
        return None
    if trusted_host is not None and str(trusted_host).lower().strip("[]") == host:
        return (f"warning: sending the Tinker API key to {host} (base_url {shown}, trusted by "
                f"trusted_host); it is neither Tinker's service nor this machine")
    if trusted_host is not None:
        raise ConfigError(f"engine option trusted_host={trusted_host!r} is not the host of "
                          f"base_url {shown} ({host!r}); name exactly the host to trust")
    raise ConfigError(
        f"base_url {shown} points at {host!r}, which is neither Tinker's service nor this "
        f"machine (localhost, 127.0.0.0/8, ::1), so the Tinker API key would be sent there; "
        f"nothing was sent. If you trust {host}, pass --trust-host {host} (in a spec: "
        f"engine.options.trusted_host = \"{host}\")")


#: seconds between two looks at a pending request's future
POLL_S = 1.0
#: seconds between two checks that a service that answered still listens
PROBE_EVERY_S = 5.0


def _listening(url: str, timeout: float = 2.0) -> bool:
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


class _Watch:
    """How long the service has been unreachable (shared by every wait of one engine)."""

    def __init__(self, url: str, budget_s: float) -> None:
        self.url = url
        self.budget_s = budget_s
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._last_probe = -PROBE_EVERY_S
        self.gave_up = False

    def check(self) -> None:
        """Raise ``ServiceUnreachable`` once nothing has listened for ``budget_s`` (while the
        service answers, it is probed at most every ``PROBE_EVERY_S``)."""
        now = time.monotonic()
        with self._lock:
            if self._down_since is None and now - self._last_probe < PROBE_EVERY_S:
                return
            self._last_probe = now
        up = _listening(self.url)
        now = time.monotonic()
        with self._lock:
            if up:
                self._down_since = None
                return
            if self._down_since is None:
                self._down_since = now
                log.warning("tinker: nothing listens at %s; giving it %.0f s",
                            redact_url(self.url), self.budget_s)
            down = now - self._down_since
            if down >= self.budget_s or self.gave_up:
                self.gave_up = True
                raise ServiceUnreachable(
                    f"the Tinker service at {redact_url(self.url)} was unreachable for "
                    f"{down:.0f} s "
                    f"(engine option unreachable_timeout_s={self.budget_s:g})")

    def wait(self, future: Any, timeout: float | None) -> Any:
        """``future.result(timeout)``; with no timeout, polled so a dead service ends it."""
        if timeout is not None:
            return future.result(timeout)
        while True:
            try:
                return future.result(POLL_S)
            except TimeoutError:
                self.check()


def _check_reachable(url: str, timeout: float = 5.0) -> None:
    """Fail fast (instead of the SDK's minutes of retries) when nothing listens at ``url``."""
    from textpolicy.netcheck import unreachable

    _check_url(url)
    why = unreachable(url, timeout)
    if why is not None:
        raise EngineError(f"cannot reach Tinker at {redact_url(url)}: {why} (is `tp serve` "
                          "running, or --base-url right?)")


def _check_url(url: str) -> None:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"engine option base_url={redact_url(url)!r}: expected "
                          "http(s)://host[:port]")


def service_url(base_url: str | None) -> str:
    """The URL a session would use: the SDK's rule (``tinker.lib.base_url.resolve_base_url``;
    a test keeps the two equal) without importing the SDK, which takes seconds."""
    return (base_url or os.environ.get("TINKER_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def readiness(base_url: str | None, max_recoveries: Any = 3,
              sample_seeds: Any = "per_sample") -> list[str]:
    """What a dry run checks without starting a session: ``ConfigError`` for option values
    the engine refuses; notes for what would stop a run on this machine (no SDK, no API key,
    nothing answering at the service URL)."""
    try:
        recoveries = int(max_recoveries)
    except (TypeError, ValueError):
        recoveries = -1
    if recoveries < 0:
        raise ConfigError(f"engine option max_recoveries={max_recoveries!r}: must be a whole "
                          "number >= 0")
    if sample_seeds not in SAMPLE_SEEDS:
        raise ConfigError(f"engine option sample_seeds={sample_seeds!r}: allowed: "
                          f"{', '.join(SAMPLE_SEEDS)}")
    from textpolicy.netcheck import unreachable

    url = service_url(base_url)
    _check_url(url)
    if installed_sdk_version() is None:
        return [f"the tinker engine needs the tinker SDK: pip install "
                f"tinker=={PINNED_SDK_VERSION}"]
    notes = []
    stored = os.path.isfile(os.path.expanduser(CREDENTIALS_FILE))
    if not (os.environ.get("TINKER_API_KEY") or os.environ.get("TINKER_CREDENTIAL_CMD")
            or (stored and _has_credentials())):
        notes.append(NO_KEY)
    why = unreachable(url)
    if why is not None:
        notes.append(f"cannot reach Tinker at {redact_url(url)}: {why} (is `tp serve` "
                     "running, or --base-url right?)")
    return notes


# ------------------------------------------------------------------------ conversions
def to_sdk_datum(datum: Datum) -> Any:
    from tinker import types

    inputs: dict[str, Any] = {}
    for key, value in datum.loss_fn_inputs.items():
        arr = np.asarray(value)
        arr = arr.astype(np.int64 if np.issubdtype(arr.dtype, np.integer) else np.float32,
                         copy=False)
        inputs[key] = types.TensorData.from_numpy(np.ascontiguousarray(arr))
    return types.Datum(model_input=types.ModelInput.from_ints(list(datum.model_input)),
                       loss_fn_inputs=inputs)


def to_sdk_sampling_params(params: SamplingParams) -> Any:
    from tinker import types

    return types.SamplingParams(
        max_tokens=params.max_tokens,
        seed=params.seed,
        stop=list(params.stop_token_ids) or None,
        temperature=params.temperature,
        top_k=params.top_k,
        top_p=params.top_p,
    )


def to_sdk_adam(params: AdamParams) -> Any:
    from tinker import types

    return types.AdamParams(learning_rate=params.learning_rate, beta1=params.beta1,
                            beta2=params.beta2, eps=params.eps,
                            weight_decay=params.weight_decay,
                            grad_clip_norm=params.grad_clip_norm)


def from_sdk_sequence(seq: Any) -> SampledSequence:
    logprobs = seq.logprobs
    if logprobs is None:
        raise EngineError("Tinker returned a sampled sequence without logprobs")
    topk = seq.topk_logprobs
    topk_tuples = None
    if topk is not None:
        topk_tuples = tuple(tuple((int(t), float(lp)) for t, lp in (row or ())) for row in topk)
    return SampledSequence(tokens=seq.tokens, logprobs=logprobs,
                           stop_reason=seq.stop_reason, topk_logprobs=topk_tuples)


def from_sdk_fb_output(out: Any) -> ForwardBackwardResult:
    metrics = {str(k): float(v) for k, v in out.metrics.items()}
    if "loss:sum" not in metrics:
        raise EngineError(f"Tinker forward_backward returned no loss:sum (metrics: {metrics})")
    outputs = list(getattr(out, "loss_fn_outputs", None) or ())
    logprobs = None
    if outputs and all("logprobs" in o for o in outputs):
        logprobs = tuple(np.asarray(o["logprobs"].to_numpy(), dtype=np.float32).reshape(-1)
                         for o in outputs)
    return ForwardBackwardResult(loss=metrics["loss:sum"], metrics=metrics, logprobs=logprobs)


def _is_user_error(exc: BaseException) -> bool:
    from tinker.lib.telemetry import is_user_error

    return bool(is_user_error(exc))


def _is_lost_session(exc: BaseException) -> bool:
    """A 404 for a session, client or pending request the service does not know (it
    restarted): recoverable by recreating the client, unlike other 4xx answers. The SDK
    raises these as ``NotFoundError`` (``status_code``) or wraps them in a ``ValueError``
    whose message holds the code."""
    text = str(exc).lower()
    is_404 = getattr(exc, "status_code", None) == 404 or "error code: 404" in text
    return is_404 and "unknown" in text and any(
        word in text for word in ("session", "model", "request_id"))


# ------------------------------------------------------------------------------ futures
class _MappedFuture:
    """An SDK future whose value is converted on ``result()``."""

    def __init__(self, fut: Any, convert: Callable[[Any], Any]) -> None:
        self._fut = fut
        self._convert = convert

    def result(self, timeout: float | None = None) -> Any:
        return self._convert(self._fut.result(timeout))


class _Op:
    """One request of a training client; ``send(sdk_client)`` (re)submits it."""

    def __init__(self, kind: str, send: Callable[[Any], Any], *, logged: bool) -> None:
        self.kind = kind
        self.send = send
        self.logged = logged
        self.future: Any = None
        self.generation = -1


class _OpFuture:
    def __init__(self, client: TinkerTrainingClient, op: _Op,
                 convert: Callable[[Any], Any]) -> None:
        self._client = client
        self._op = op
        self._convert = convert

    def result(self, timeout: float | None = None) -> Any:
        return self._convert(self._client._await(self._op, timeout))


# ----------------------------------------------------------------------------- clients
class _Gathered:
    """Futures whose lists of sequences are concatenated on ``result()``."""

    def __init__(self, futures: Sequence[Any]) -> None:
        self._futures = list(futures)

    def result(self, timeout: float | None = None) -> list[SampledSequence]:
        return [seq for f in self._futures for seq in f.result(timeout)]


class TinkerSamplingClient:
    """``sample`` never relies on one sampling seed for the diversity of a group: Tinker's
    ``SamplingParams(seed=X)`` with ``num_samples=N`` can return token-identical sequences
    (tinker-feedback #79) and seeds may have no effect (tinker-cookbook #206). With
    ``sample_seeds="per_sample"`` (default) a seeded request for N samples is sent as N
    requests of one sample, seeded ``sample_seed(seed, j)`` (N round trips in flight at
    once instead of one; the prompt is prefilled N times unless the service caches it); with
    ``"none"`` it is one request for N samples with no seed (not reproducible). Unseeded
    requests are always sent as one."""

    def __init__(self, sdk_client: Any, watch: _Watch | None = None,
                 renew: Callable[[], Any] | None = None,
                 sample_seeds: str = "per_sample", limiter: Limiter | None = None,
                 backoff: Backoff | None = None) -> None:
        self._sc = sdk_client
        self._watch = watch
        self._renew = renew  # a new SDK sampling client on the same weights
        self._sample_seeds = sample_seeds
        self._limiter = limiter or Limiter(None, lambda: None)
        self._backoff = backoff

    def sample(self, prompt_ids: Sequence[int], num_samples: int, params: SamplingParams, *,
               topk_logprobs: int = 0) -> Any:
        from tinker import types

        prompt = types.ModelInput.from_ints(list(prompt_ids))

        def convert(response: Any) -> list[SampledSequence]:
            return [from_sdk_sequence(s) for s in response.sequences]

        def request(n: int, seed: int | None) -> _MappedFuture:
            sdk_params = to_sdk_sampling_params(attrs.evolve(params, seed=seed))

            def submit(renew: bool = False) -> Any:
                if renew and self._renew is not None:  # e.g. the session is gone (404)
                    self._sc = self._renew()
                sc = self._sc
                return self._limiter.submit(lambda: sc.sample(
                    prompt, n, sdk_params, topk_sample_logprobs=topk_logprobs))

            return _MappedFuture(_Retrying(submit(), submit, self._watch, self._backoff),
                                 convert)

        if params.seed is None or self._sample_seeds == "none":
            return request(num_samples, None)
        if num_samples == 1:
            return request(1, params.seed)
        return _Gathered([request(1, sample_seed(params.seed, j))
                          for j in range(num_samples)])

    def compute_logprobs(self, sequences: Sequence[Sequence[int]]) -> Any:
        from tinker import types

        sc = self._sc

        def send(tokens: Sequence[int]) -> Callable[[], Any]:
            return lambda: sc.compute_logprobs(types.ModelInput.from_ints(list(tokens)))

        futures = [self._limiter.submit(send(s)) for s in sequences]

        class _All:
            def result(self, timeout: float | None = None) -> list[list[float]]:
                return [[0.0 if v is None else float(v) for v in f.result(timeout)]
                        for f in futures]

        return _All()


class _Retrying:
    """A sampling future resubmitted when its request failed server-side (a sampling client is
    not poisoned by a failed sample): once, or up to ``BACKOFF_MAX_ATTEMPTS`` times for a busy
    service (429/502/503/504) or a dropped connection, each after a backoff wait."""

    def __init__(self, fut: Any, submit: Callable[[bool], Any], watch: _Watch | None,
                 backoff: Backoff | None = None) -> None:
        self._fut = fut
        self._submit = submit
        self._watch = watch
        self._backoff = backoff

    def _wait(self, timeout: float | None) -> Any:
        if self._watch is None:
            return self._fut.result(timeout)
        return self._watch.wait(self._fut, timeout)

    def result(self, timeout: float | None = None) -> Any:
        attempt = 0
        while True:
            try:
                return self._wait(timeout)
            except (TimeoutError, ServiceUnreachable):
                raise
            except Exception as exc:
                if _is_user_error(exc) and not _is_lost_session(exc):
                    raise EngineError(f"Tinker rejected a sampling request: {exc}") from None
                # once for a failed request; up to BACKOFF_MAX_ATTEMPTS times while the
                # service says it is busy (429/502/503/504) or drops the connection
                limit = BACKOFF_MAX_ATTEMPTS if is_retryable(exc) else 1
                if attempt >= limit:
                    raise EngineError(f"Tinker sampling failed {attempt + 1} times: "
                                      f"{exc}") from None
                _back_off(self._backoff, self._watch, attempt, "a sampling request", exc)
                attempt += 1
                self._fut = self._submit(True)


def _back_off(backoff: Backoff | None, watch: _Watch | None, attempt: int, what: str,
              exc: BaseException) -> None:
    """Wait before retry ``attempt`` (0-based) of ``what``, watching the service meanwhile."""
    delay = backoff.delay(attempt) if backoff is not None else 0.0
    log.warning("tinker: %s failed (%s); retrying in %.2f s (retry %d)", what, exc, delay,
                attempt + 1)
    Backoff.sleep(delay, watch.check if watch is not None else (lambda: None))


class TinkerTrainingClient:
    """A Tinker LoRA training client that survives being poisoned (see the module docs)."""

    def __init__(self, engine: TinkerEngine, sdk_client: Any, *, base_model: str,
                 lora_rank: int, seed: int, state_path: str | None) -> None:
        self._engine = engine
        self._tc = sdk_client
        self._base_model = base_model
        self._lora_rank = lora_rank
        self._seed = seed
        self._state_path = state_path
        self._lock = threading.RLock()
        self._generation = 0
        self._log: list[_Op] = []
        self._tokenizer: Any = None
        self._next_sampler: _Op | None = None
        self.recoveries = 0

    @property
    def sdk_client(self) -> Any:
        return self._tc

    @property
    def model_id(self) -> str:
        return str(self._tc.model_id)

    def get_tokenizer(self) -> Any:
        if self._tokenizer is None:
            try:
                with LOAD_LOCK:  # the SDK loads it with transformers (not thread-safe)
                    self._tokenizer = self._tc.get_tokenizer()
            except Exception as exc:
                raise EngineError(f"cannot load the tokenizer of {self._base_model!r} "
                                  f"through the tinker SDK: {exc}") from None
        return self._tokenizer

    # -- submission ----------------------------------------------------------------------
    def _submit(self, op: _Op) -> _Op:
        with self._lock:
            if op.logged:
                self._log.append(op)
            op.future = self._send(op)
            op.generation = self._generation
        return op

    def _send(self, op: _Op) -> Any:
        tc = self._tc
        return self._engine.limiter.submit(lambda: op.send(tc))

    def _await(self, op: _Op, timeout: float | None) -> Any:
        attempts = 0
        while True:
            future, generation = op.future, op.generation
            try:
                return self._engine.watch.wait(future, timeout)
            except (TimeoutError, ServiceUnreachable):
                raise
            except Exception as exc:
                if _is_user_error(exc) and not _is_lost_session(exc):
                    raise EngineError(f"Tinker rejected {op.kind}: {exc}") from None
                if attempts >= self._engine.max_recoveries:
                    raise EngineError(f"Tinker {op.kind} failed after {attempts} "
                                      f"recoveries: {exc}") from None
                if generation == self._generation:  # not recovered by another wait yet
                    _back_off(self._engine.backoff, self._engine.watch, attempts,
                              f"{op.kind} of training client {self.model_id}", exc)
                attempts += 1
                self._recover(generation, exc)
                if not op.logged:
                    with self._lock:
                        if op.generation != self._generation:
                            op.future = self._send(op)
                            op.generation = self._generation

    def _recover(self, failed_generation: int, exc: BaseException) -> None:
        with self._lock:
            if failed_generation != self._generation:
                return  # another request already recovered; ours was replayed
            source = self._state_path or f"a fresh LoRA client (seed {self._seed})"
            log.warning("tinker: training client %s failed (%s); recreating it from %s and "
                        "replaying %d request(s)", self.model_id, exc, source, len(self._log))
            self._tc = self._engine._new_sdk_client(
                self._state_path, base_model=self._base_model, lora_rank=self._lora_rank,
                seed=self._seed)
            self._generation += 1
            self.recoveries += 1
            self._engine.recoveries += 1
            for op in self._log:
                op.future = self._send(op)
                op.generation = self._generation

    # -- the engine interface ------------------------------------------------------------
    def _submit_sampler(self) -> _Op:
        return self._submit(_Op("save_weights_and_get_sampling_client",
                                lambda tc: tc.save_weights_and_get_sampling_client(),
                                logged=False))

    def sampling_client(self, name: str) -> TinkerSamplingClient:
        """A sampler on the current weights. The one made right after the last optim_step
        (requested back to back with it) is used when there is one, so a step does not wait
        two round trips for its sampler."""
        with self._lock:
            op, self._next_sampler = self._next_sampler, None
        if op is None:
            op = self._submit_sampler()
        return TinkerSamplingClient(self._await(op, None), self._engine.watch,
                                    renew=lambda: self._await(self._submit_sampler(), None),
                                    sample_seeds=self._engine.sample_seeds,
                                    limiter=self._engine.limiter,
                                    backoff=self._engine.backoff)

    def forward_backward(self, datums: Sequence[Datum], loss_fn: str,
                         loss_fn_config: Mapping[str, float] | None = None) -> _OpFuture:
        if not datums:
            raise EngineError("forward_backward: no datums")
        data = [to_sdk_datum(d) for d in datums]
        config = dict(loss_fn_config) if loss_fn_config else None
        op = self._submit(_Op("forward_backward",
                              lambda tc: tc.forward_backward(data, loss_fn, config),
                              logged=True))
        return _OpFuture(self, op, from_sdk_fb_output)

    def optim_step(self, params: AdamParams) -> _OpFuture:
        adam = to_sdk_adam(params)
        with self._lock:
            op = self._submit(_Op("optim_step", lambda tc: tc.optim_step(adam), logged=True))
            # the next step's sampler, in the same queue right behind the update
            self._next_sampler = self._submit_sampler() if self._engine.prefetch_sampler else None
        return _OpFuture(self, op, lambda _resp: None)

    def save_state(self, name: str) -> _OpFuture:
        op = self._submit(_Op("save_state", lambda tc: tc.save_state(name), logged=True))

        def saved(resp: Any) -> str:
            path = str(resp.path)
            with self._lock:
                if op in self._log:  # everything up to this save is now in the state
                    del self._log[: self._log.index(op) + 1]
                self._state_path = path
            return path

        return _OpFuture(self, op, saved)

    def save_weights_for_sampler(self, name: str) -> _OpFuture:
        op = self._submit(_Op("save_weights_for_sampler",
                              lambda tc: tc.save_weights_for_sampler(name), logged=False))
        return _OpFuture(self, op, lambda resp: str(resp.path))

    def close(self) -> None:
        with self._lock:
            self._log.clear()


class TinkerEngine:
    """``tinker`` engine. Options: ``base_url`` (default ``$TINKER_BASE_URL`` or Tinker's
    production URL), ``max_recoveries`` (per request, default 3), ``prefetch_sampler``
    (request the next step's sampler right behind each optim_step; default true),
    ``unreachable_timeout_s`` (how long the service may be unreachable before the run stops;
    default 120), ``max_concurrent`` (requests in flight at once per base URL, shared by all
    textpolicy processes of the machine; default: no cap), ``backoff_seed`` (seed of the
    retry jitter; default 0) and ``sample_seeds`` (``per_sample``, the default, or ``none``:
    how a group is sampled, see :class:`TinkerSamplingClient`; recorded in config.json).

    ``lora_rank=None`` (a full fine-tune) is requested as LoRA rank 0, which `tp serve` runs as
    a full fine-tune and Tinker refuses (it trains LoRA adapters only)."""

    name = "tinker"
    saves_locally = False  # save_state takes a name; Tinker stores the state

    def __init__(self, base_url: str | None = None, max_recoveries: int = 3,
                 prefetch_sampler: bool = True, trusted_host: str | None = None,
                 unreachable_timeout_s: float = 120.0,
                 sample_seeds: str = "per_sample", max_concurrent: Any = None,
                 backoff_seed: Any = 0) -> None:
        check_sdk_version()
        self.max_concurrent = parse_max_concurrent(max_concurrent)
        if isinstance(backoff_seed, bool) or not str(backoff_seed).isdigit():
            raise ConfigError(f"engine option backoff_seed={backoff_seed!r}: must be a whole "
                              "number >= 0")
        self.backoff_seed = int(str(backoff_seed))
        if int(max_recoveries) < 0:
            raise ConfigError(f"engine option max_recoveries={max_recoveries!r}: must be >= 0")
        try:
            budget = float(unreachable_timeout_s)
        except (TypeError, ValueError):
            budget = -1.0
        if not (budget > 0 and budget < float("inf")):
            raise ConfigError(f"engine option unreachable_timeout_s={unreachable_timeout_s!r}: "
                              "must be a finite number of seconds > 0")
        if sample_seeds not in SAMPLE_SEEDS:
            raise ConfigError(f"engine option sample_seeds={sample_seeds!r}: allowed: "
                              f"{', '.join(SAMPLE_SEEDS)}")
        self.sample_seeds = str(sample_seeds)
        self.max_recoveries = int(max_recoveries)
        self.prefetch_sampler = bool(prefetch_sampler)
        self.recoveries = 0  # training-client recoveries, all clients together
        if not _has_credentials():
            raise EngineError(NO_KEY)
        from tinker.lib.base_url import resolve_base_url

        self.base_url = resolve_base_url(base_url)
        parsed = urlparse(self.base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            _check_reachable(self.base_url)  # the one-line message for a malformed URL
        warning = check_key_destination(self.base_url, trusted_host)
        if warning:
            sys.stderr.write(warning + "\n")
            sys.stderr.flush()
        _check_reachable(self.base_url)
        self.watch = _Watch(self.base_url, budget)
        slots = (machine_slots(self.base_url, self.max_concurrent)
                 if self.max_concurrent is not None else None)
        self.limiter = Limiter(slots, self.watch.check, poll_s=POLL_S)
        # each engine of the process draws its own jitter (same seed, distinct streams)
        self.backoff = Backoff([self.backoff_seed, next_engine_index()])
        import tinker

        self._service = tinker.ServiceClient(base_url=self.base_url)
        self._service_lock = threading.Lock()
        self._closed = False

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "base_url": redact_url(self.base_url),
                "tinker_sdk": installed_sdk_version(), "max_recoveries": self.max_recoveries,
                "prefetch_sampler": self.prefetch_sampler,
                "unreachable_timeout_s": self.watch.budget_s,
                "sample_seeds": self.sample_seeds, "max_concurrent": self.max_concurrent}

    @property
    def service_client(self) -> Any:
        return self._service

    def _renew_service(self, stale: Any) -> None:
        """A new session for a service that no longer knows ours (`tp serve` restarted)."""
        import tinker

        with self._service_lock:
            if self._service is stale:
                log.warning("tinker: the service at %s does not know this session any more; "
                            "starting a new session", redact_url(self.base_url))
                self._service = tinker.ServiceClient(base_url=self.base_url)

    def _new_sdk_client(self, state_path: str | None, *, base_model: str, lora_rank: int,
                        seed: int) -> Any:
        service = self._service
        try:
            return self._create_sdk_client(state_path, base_model=base_model,
                                           lora_rank=lora_rank, seed=seed)
        except EngineError as exc:
            if not isinstance(exc.__cause__, Exception) or not _is_lost_session(exc.__cause__):
                raise
        self._renew_service(service)
        return self._create_sdk_client(state_path, base_model=base_model, lora_rank=lora_rank,
                                       seed=seed)

    def _create_sdk_client(self, state_path: str | None, *, base_model: str, lora_rank: int,
                           seed: int) -> Any:
        try:
            service = self._service
            if state_path is not None:
                return self.limiter.submit(
                    lambda: service.create_training_client_from_state_with_optimizer(
                        state_path)).result()
            return self.limiter.submit(lambda: service.create_lora_training_client(
                base_model, rank=lora_rank, seed=seed)).result()
        except EngineError:
            raise
        except Exception as exc:
            what = f"resume {state_path!r}" if state_path else f"create a {base_model!r} client"
            raise EngineError(redact_url(f"Tinker could not {what}: {exc}")) from exc

    def create_training_client(self, base_model: str, *, lora_rank: int | None,
                               seed: int) -> TinkerTrainingClient:
        # No LoRA (the arithmetic task's full fine-tune) is asked for as rank 0: `tp serve`
        # trains the full model then; Tinker itself trains LoRA adapters only and refuses it.
        lora_rank = int(lora_rank or 0)
        sdk_client = self._new_sdk_client(None, base_model=base_model, lora_rank=lora_rank,
                                          seed=seed)
        return TinkerTrainingClient(self, sdk_client, base_model=base_model,
                                    lora_rank=lora_rank, seed=seed, state_path=None)

    def resume_training_client(self, state_path: str) -> TinkerTrainingClient:
        sdk_client = self._new_sdk_client(state_path, base_model="", lora_rank=0, seed=0)
        info = sdk_client.get_info()
        base_model = str(info.model_data.model_name or info.model_name or "")
        return TinkerTrainingClient(self, sdk_client, base_model=base_model,
                                    lora_rank=int(info.lora_rank or 0), seed=0,
                                    state_path=state_path)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:  # a service that is gone is not waited for
            self._service.close("success").result(timeout=2 if self.watch.gave_up else 30)
        except Exception as exc:  # closing is best effort
            if not self.watch.gave_up:  # the service is gone: that was already said
                log.warning("tinker: closing the session failed: %s", exc)
