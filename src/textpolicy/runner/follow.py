"""Stream a run's metrics.jsonl to Weights & Biases (``tp follow`` and the [wandb] section).

The follower backfills every complete row already in the file, then polls it for new rows
(every ``poll_seconds``) until nothing new arrives for ``idle_timeout_seconds`` (or at once
with ``follow=False``, or when the caller's ``finish`` event is set and the file is drained).

* A file that does not exist yet is waited for (within the idle timeout).
* A half-written last line is left for the next poll; a file cut back by a resumed run
  (smaller than what was read) is re-read from the start.
* A step is never logged twice, also across restarts: the W&B run id and the last logged step
  are kept in ``wandb_follow.json`` next to the metrics file, and a restarted follower resumes
  the same W&B run and skips every step it already logged.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from textpolicy import strictjson
from textpolicy.runner.results import complete_rows

STATE_FILE = "wandb_follow.json"
DEFAULT_PROJECT = "textpolicy-tinker"


@attrs.frozen
class FollowResult:
    run_id: str | None
    steps_logged: int
    first_step: int | None
    last_step: int | None
    run_name: str | None = None  # the W&B run's display name (None: no run was opened)


class JsonlTail:
    """Incremental reader of complete JSONL rows (tolerates half-written lines, late files and
    truncation)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.rewound = False

    def read_new(self) -> list[dict[str, Any]]:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self.offset:  # the file was cut back (a resumed run): start over
            self.offset = 0
            self.rewound = True
        if size == self.offset:
            return []
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read(size - self.offset)
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        return complete_rows(data[: end + 1])


def _numeric(row: Mapping[str, Any]) -> dict[str, float | int]:
    out: dict[str, float | int] = {}
    for key, value in row.items():
        if key == "step":
            continue
        if isinstance(value, bool):
            out[key] = int(value)
        elif isinstance(value, (int, float)):
            out[key] = value
    return out


def _new_run_id() -> str:
    import secrets
    import string

    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


class Follower:
    """Follows one metrics.jsonl into one W&B run."""

    def __init__(
        self,
        metrics_path: str | Path,
        *,
        project: str = DEFAULT_PROJECT,
        entity: str | None = None,
        run_name: str | None = None,
        group: str | None = None,
        poll_seconds: float = 5.0,
        idle_timeout_seconds: float = 600.0,
        follow: bool = True,
        mode: str | None = None,
        finish: threading.Event | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.metrics_path = Path(metrics_path)
        self.project = project
        self.entity = entity
        self.run_name = run_name
        self.group = group
        self.poll_seconds = poll_seconds
        self.idle_timeout_seconds = idle_timeout_seconds
        self.follow = follow
        self.mode = mode
        self.finish = finish or threading.Event()
        self.stop = stop or threading.Event()
        self.state_path = self.metrics_path.with_name(STATE_FILE)
        self._run: Any = None
        self._run_name: str | None = None
        self._state = self._load_state()

    # ------------------------------------------------------------------ state
    def _load_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        if data.get("project") != self.project or data.get("entity") != self.entity:
            return {}  # another W&B destination: a new run there
        return data

    def _save_state(self) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(STATE_FILE + ".tmp")
        tmp.write_text(strictjson.dumps(self._state) + "\n", encoding="utf-8")
        os.replace(tmp, self.state_path)

    @property
    def last_step(self) -> int | None:
        value = self._state.get("last_step")
        return int(value) if isinstance(value, int) else None

    # ------------------------------------------------------------------ wandb
    def _ensure_run(self) -> Any:
        if self._run is not None:
            return self._run
        import wandb

        run_id = self._state.get("run_id") or _new_run_id()
        config: dict[str, Any] = {"metrics_path": str(self.metrics_path)}
        config_file = self.metrics_path.with_name("config.json")
        if config_file.is_file():
            try:
                stored = json.loads(config_file.read_text(encoding="utf-8"))
                config.update(stored.get("config") or {})
            except ValueError:
                pass
        kwargs: dict[str, Any] = dict(
            project=self.project, entity=self.entity, name=self.run_name, group=self.group,
            id=run_id, resume="allow", config=config, reinit="create_new",
            settings=wandb.Settings(console="off", silent=True))
        if self.mode:
            kwargs["mode"] = self.mode
        if not os.environ.get("WANDB_DIR"):  # W&B's files go next to the run, not in ./wandb
            kwargs["dir"] = str(self.metrics_path.parent.resolve())
        self._run = wandb.init(**kwargs)
        name = getattr(self._run, "name", None)
        self._run_name = name if isinstance(name, str) and name else self.run_name
        self._state.update({"run_id": run_id, "project": self.project, "entity": self.entity})
        self._save_state()
        return self._run

    def _log(self, rows: list[dict[str, Any]]) -> list[int]:
        logged: list[int] = []
        for row in sorted((r for r in rows if isinstance(r.get("step"), int)),
                          key=lambda r: int(r["step"])):
            step = int(row["step"])
            last = self.last_step
            if last is not None and step <= last:
                continue  # already logged (a backfill after restart, or a resumed run)
            run = self._ensure_run()
            run.log(_numeric(row), step=step)
            self._state["last_step"] = step
            logged.append(step)
        if logged:
            self._save_state()
        return logged

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None

    # ------------------------------------------------------------------ main loop
    def run(self) -> FollowResult:
        tail = JsonlTail(self.metrics_path)
        logged: list[int] = []
        idle_since = time.monotonic()
        try:
            while not self.stop.is_set():
                new = self._log(tail.read_new())
                if new:
                    logged += new
                    idle_since = time.monotonic()
                    continue
                if not self.follow:
                    break
                if self.finish.is_set():
                    logged += self._log(tail.read_new())
                    break
                if time.monotonic() - idle_since >= self.idle_timeout_seconds:
                    break
                self.finish.wait(self.poll_seconds)
        finally:
            self.close()
        return FollowResult(run_id=self._state.get("run_id"), steps_logged=len(logged),
                            first_step=logged[0] if logged else None,
                            last_step=logged[-1] if logged else None,
                            run_name=self._run_name)


class FollowerThread:
    """A follower on a background thread; ``finish()`` drains the file and ends the W&B run."""

    def __init__(self, follower: Follower) -> None:
        self.follower = follower
        self.result: FollowResult | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True,
                                        name=f"wandb-follow {follower.metrics_path}")

    def _main(self) -> None:
        try:
            self.result = self.follower.run()
        except BaseException as exc:  # W&B trouble must never stop training: kept, and
            self.error = exc           # reported by problem() when the run ends

    def start(self) -> FollowerThread:
        self._thread.start()
        return self

    def finish(self, timeout: float | None = 120.0) -> str | None:
        """Drain the file and end the W&B run; return ``problem()``."""
        self.follower.finish.set()
        self._thread.join(timeout)
        return self.problem()

    def problem(self) -> str | None:
        """Why this follower did not log every step (None: it did, or it is still running)."""
        if self._thread.is_alive():
            finishing = self.follower.finish.is_set()
            return "W&B did not finish within the time allowed" if finishing else None
        return describe_error(self.error) if self.error is not None else None


def describe_error(exc: BaseException) -> str:
    """``Type: first line of the message`` (W&B's errors run to many lines)."""
    first = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0]}" if first else type(exc).__name__


#: W&B modes that need neither an API key nor the network
LOCAL_MODES = ("offline", "disabled", "dryrun")
DEFAULT_WANDB_URL = "https://api.wandb.ai"


def effective_mode(mode: str | None) -> str:
    """The W&B mode a run gets: the given one, else ``WANDB_MODE``, else online."""
    return (mode or os.environ.get("WANDB_MODE", "").strip() or "online").lower()


def wandb_problem(mode: str | None = None) -> str | None:
    """Why logging to W&B in ``mode`` would fail on this machine (None: it would not).

    Quick and without W&B itself: a mode in ``LOCAL_MODES`` needs nothing; otherwise an API key
    (``WANDB_API_KEY``, or the ``~/.netrc``/``$NETRC`` entry `wandb login` writes for the W&B
    host) and a host that accepts a connection."""
    if effective_mode(mode) in LOCAL_MODES:
        return None
    url = os.environ.get("WANDB_BASE_URL", "").strip() or DEFAULT_WANDB_URL
    if not (os.environ.get("WANDB_API_KEY", "").strip() or _netrc_has(url)):
        return "no W&B API key (set WANDB_API_KEY or run `wandb login`)"
    from textpolicy.netcheck import unreachable

    why = unreachable(url)
    return f"W&B unreachable ({why})" if why is not None else None


def _netrc_has(url: str) -> bool:
    import netrc
    from urllib.parse import urlparse

    host = urlparse(url).hostname or ""
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])
