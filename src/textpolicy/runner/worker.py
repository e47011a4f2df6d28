"""A worker process of a parallel sweep/campaign: ``python -m textpolicy.runner.worker``.

The runner keeps ``--parallel N`` workers alive for the whole plan, so each pays the imports
and the engine start-up once and then trains run after run on its own engine. Protocol, one
JSON object per line:

* stdin  ← ``{"key": ..., "config": TrainConfig.to_dict()}`` (one run to train), EOF = quit;
* stdout → ``{"event": "step", "key", "step", "running_correct_rate"}`` after every step and
  ``{"event": "done", "key", "status": finished|stopped|failed, "steps_done", "error"}``.

SIGINT and SIGTERM stop the current run cleanly after its step (checkpoint written; a re-run
resumes it) and end the worker.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import traceback
from typing import Any


def _emit(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def main() -> int:
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    import torch

    torch.set_num_threads(1)
    from textpolicy.errors import TextPolicyError
    from textpolicy.training import TrainConfig, run_training
    from textpolicy.training.session import make_engine

    engine: Any = None
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            if stop.is_set():
                break
            job = json.loads(line)
            key = job["key"]
            config = TrainConfig(**job["config"])

            def on_step(row: dict[str, Any], key: str = key) -> None:
                _emit({"event": "step", "key": key, "step": row.get("step"),
                       "running_correct_rate": row.get("running_correct_rate")})

            try:
                if engine is None:
                    engine = make_engine(config)
                outcome = run_training(config, on_step=on_step, stop=stop, engine=engine,
                                       progress="off")
                _emit({"event": "done", "key": key, "status": outcome.status,
                       "steps_done": outcome.steps_done, "error": None})
            except TextPolicyError as exc:
                _emit({"event": "done", "key": key, "status": "failed", "steps_done": None,
                       "error": str(exc)})
            except Exception as exc:
                traceback.print_exc(file=sys.stderr)
                _emit({"event": "done", "key": key, "status": "failed", "steps_done": None,
                       "error": f"{type(exc).__name__}: {exc}"})
    finally:
        close = getattr(engine, "close", None)
        if callable(close):
            close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
