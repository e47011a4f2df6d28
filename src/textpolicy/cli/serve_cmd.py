"""``tp serve``: the local engine behind Tinker's wire protocol (for tests, CI, offline work)."""

from __future__ import annotations

import ipaddress
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click

from textpolicy.cli.params import finite

DEFAULT_PORT = 8765


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _warm_imports() -> None:
    import importlib

    for module in ("torch", "tinker", "transformers", "peft"):
        try:
            importlib.import_module(module)
        except Exception:  # the engine reports real import problems when it needs them
            return


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind. Anything but loopback exposes the engine to the network "
                   "(every tml- key is accepted).")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port; 0 picks a free one (printed on the first line).")
@click.option("--model", "models", multiple=True, metavar="[NAME=]PATH",
              help="Also serve this model (repeatable): 'smollm2-135m', a local Hugging Face "
                   "checkpoint or a .gguf file. The built-in tiny model is always served as "
                   "'textpolicy/tiny-arithmetic'.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="Device of the local engine.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where checkpoints and their tinker:// names are kept "
                   "[default: <textpolicy cache>/serve].")
@click.option("--delay-ms", type=finite(min=0), default=0.0, show_default=True,
              help="Fault injection: delay every request by this many milliseconds.")
@click.option("--fail-request", multiple=True, metavar="RULE",
              help="Fault injection, RULE = [ENDPOINT:]N[:STATUS]: answer HTTP STATUS (429, "
                   "500, 502, 503 or 504; default 500) to the N-th request (or the N-th "
                   "request to ENDPOINT, e.g. forward_backward:2:503). Repeatable.")
@click.option("--poison-request", multiple=True, metavar="[ENDPOINT:]N",
              help="Fault injection: accept the N-th request but fail its future; a training "
                   "model then fails every later request (a poisoned client). Repeatable.")
@click.option("--duplicate-samples", type=click.Choice(["off", "seeded", "all"]),
              default="off", show_default=True, metavar="MODE",
              help="Fault injection: a sampler that collapses groups (MODE: off, seeded, "
                   "all). 'seeded': a seeded request for N samples gets N copies of one "
                   "sequence (Tinker's reported behaviour); 'all': every request gets copies "
                   "of one seed-0 sequence.")
@click.option("--max-body-mb", type=finite(min=0, min_open=True), default=64.0,
              show_default=True, help="Largest request body accepted (larger: HTTP 413).")
@click.option("--max-threads", type=click.IntRange(min=1, max=4096), default=128,
              show_default=True, help="Connections served at once (more wait to be accepted).")
@click.option("--verbose", is_flag=True, help="Log every HTTP request to stderr.")
def serve(host: str, port: int, models: tuple[str, ...], device: str, state_dir: Path | None,
          delay_ms: float, fail_request: tuple[str, ...], poison_request: tuple[str, ...],
          duplicate_samples: str, max_body_mb: float, max_threads: int, verbose: bool) -> None:
    """Serve the local engine over Tinker's wire protocol.

    \b
    The unmodified tinker SDK works against it:
      tp serve --port 8765 &
      TINKER_API_KEY=tml-local tp train --engine tinker \\
          --base-url http://127.0.0.1:8765 --task arithmetic --log-dir results/serve_arith

    It is for correctness tests, CI and offline work: it is no evidence of Tinker's own
    numerics, queueing or speed.
    """
    from textpolicy.engines.local import LocalEngine
    from textpolicy.engines.local.cache import cache_root
    from textpolicy.serve import FaultPlan, FaultRule, TinkerServer, served_models

    faults = FaultPlan(
        fail=[FaultRule.parse(t, flag="--fail-request") for t in fail_request],
        poison=[FaultRule.parse(t, flag="--poison-request") for t in poison_request],
        delay_s=delay_ms / 1000.0,
        duplicate_samples=duplicate_samples,
    )
    served = served_models(models)
    root = (state_dir or cache_root() / "serve").expanduser()
    states = root / "states"

    # torch/transformers/peft take seconds to import: start while no client is connected yet.
    # Engines are made only after it finished (concurrent first imports of transformers race).
    warmup = threading.Thread(target=_warm_imports, name="tp-serve-warmup", daemon=True)
    warmup.start()

    def make_engine() -> LocalEngine:
        warmup.join()
        return LocalEngine(device=device, state_dir=states)

    try:
        server = TinkerServer(make_engine, models=served, state_dir=root, host=host, port=port,
                              faults=faults, verbose=verbose,
                              max_body_bytes=int(max_body_mb * (1 << 20)),
                              max_threads=max_threads)
    except OSError as exc:
        from textpolicy.errors import ConfigError

        raise ConfigError(f"--host {host} --port {port}: cannot listen ({exc.strerror})") from None
    where = "loopback only" if _is_loopback(host) else "NOT loopback: reachable from the network"
    click.echo(f"tp serve listening on {server.url} ({where})")
    click.echo(f"  models: {', '.join(served)}; state: {root}")
    sys.stdout.flush()

    def _stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        click.echo("tp serve stopped")
    sys.stdout.flush()
    sys.stderr.flush()
    # no interpreter shutdown: engine worker threads may still be inside torch, which then
    # aborts the process ("terminate called without an active exception", exit -6)
    import os

    os._exit(0)
