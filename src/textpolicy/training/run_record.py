"""``config.json``: the resolved configuration of a run, versions, and what identifies its data.

Never holds an API key: options whose name has a credential word (``key``, ``token``,
``secret``, ``password``, ``credential``, ``auth``, ...; ``api_key``, ``hfToken``) are written
as ``"<redacted>"`` — counts such as ``max_tokens`` are kept —, so is the userinfo of any URL
(``http://user:key@host``), and no environment variable is read into it. On resume the stored
``config`` must equal the
new one except for the keys in ``RESUMABLE_KEYS``.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import platform
import re
from collections.abc import Mapping
from typing import Any

from textpolicy.errors import ConfigError
from textpolicy.training.config import TrainConfig
from textpolicy.training.seeds import describe_seeds
from textpolicy.urls import REDACTED as REDACTED
from textpolicy.urls import redact_url

#: words of an option name that mark a credential (``api_key``, ``hf_token``, ``apiKey``,
#: ``client_secret``); counts such as ``max_tokens`` or ``tokenizer`` are not credentials.
_SECRET_WORDS = frozenset({"key", "apikey", "token", "secret", "password", "passwd",
                           "passphrase", "credential", "credentials", "auth", "authorization",
                           "bearer", "cookie"})
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def is_secret_name(name: str) -> bool:
    """Whether an option name looks like a credential (one of its words is one)."""
    return any(w.lower() in _SECRET_WORDS for w in _WORD.findall(str(name)))


#: config keys that may differ when a run is resumed: where the run lives and how far it goes.
RESUMABLE_KEYS: frozenset[str] = frozenset({"log_dir", "max_steps"})
#: engine options that may differ on resume (a server's address, the device).
RESUMABLE_ENGINE_OPTIONS: frozenset[str] = frozenset({"base_url", "device", "trusted_host"})


def redact(value: Any) -> Any:
    """Copy of ``value`` with credential-like keys (at any depth, in mappings and lists)
    replaced by a marker and the userinfo of URLs in strings (``http://user:key@host``)
    removed. Everything written to config.json and manifest.json passes here."""
    if isinstance(value, Mapping):
        return {k: REDACTED if is_secret_name(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_url(value)
    return value


def config_dict(config: TrainConfig) -> dict[str, Any]:
    """``TrainConfig.to_dict()`` with secrets redacted, as plain JSON values."""
    data = config.to_dict()
    data["engine_options"] = redact(data.get("engine_options") or {})
    data["task_params"] = redact(data.get("task_params") or {})
    result: dict[str, Any] = json.loads(json.dumps(data, default=str))
    return result


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    return {
        "textpolicy": _version("textpolicy"),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "tinker": _version("tinker"),
        "numpy": _version("numpy"),
        "python": platform.python_version(),
    }


def components_used(config: TrainConfig, pipeline: Mapping[str, Any]) -> dict[str, list[str]]:
    """Kind → names of the registered components a run uses (its pipeline as ``describe()``
    gives it: stages, planning detector, scheduler; its task and engine)."""
    used: dict[str, list[str]] = {
        "pipelines": [config.pipeline],
        "stages": [str(s["name"]) for s in pipeline.get("stages") or ()],
        "tasks": [config.task],
        "engines": [config.engine],
    }
    if pipeline.get("planning"):
        used["planning_detectors"] = [str(pipeline["planning"]["detector"])]
    if pipeline.get("scheduler"):
        used["schedulers"] = [str(pipeline["scheduler"]["name"])]
    return used


def plugin_provenance(config: TrainConfig, pipeline: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The plugin distributions (name, version, entry point) that provided the run's
    components (see ``Registry.provenance``)."""
    from textpolicy.plugins import get_registry

    return get_registry().provenance(components_used(config, pipeline))


def build_record(
    config: TrainConfig,
    *,
    condition: str,
    model: str,
    pipeline: Mapping[str, Any],
    task: Mapping[str, Any],
    engine: Mapping[str, Any],
) -> dict[str, Any]:
    """The JSON object written to ``config.json`` at the start of a run."""
    return {
        "config": config_dict(config),
        "seed": config.seed,
        "condition": condition,
        "model": model,
        "pipeline": dict(pipeline),
        "task": dict(task),
        "engine": redact(engine),
        "plugins": plugin_provenance(config, pipeline),
        "randomness": describe_seeds(config.seed),
        "versions": versions(),
        "started_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def config_differences(stored: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Keys of ``config`` whose values differ (ignoring ``RESUMABLE_KEYS``), sorted."""
    keys = set(stored) | set(new)
    diff = [k for k in keys if k not in RESUMABLE_KEYS and k != "engine_options"
            and not _same(stored.get(k), new.get(k))]
    old_opts = dict(stored.get("engine_options") or {})
    new_opts = dict(new.get("engine_options") or {})
    for k in set(old_opts) | set(new_opts):
        if k not in RESUMABLE_ENGINE_OPTIONS and not _same(old_opts.get(k), new_opts.get(k)):
            diff.append(f"engine_options.{k}")
    return sorted(diff)


def _same(old: Any, new: Any) -> bool:
    """Equal, where a value stored redacted matches any value (runs recorded before
    ``max_tokens`` stopped counting as a credential name hold it redacted)."""
    if old == REDACTED:
        return True
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return set(old) == set(new) and all(_same(old[k], new[k]) for k in old)
    return bool(old == new)


def check_resumable(stored_record: Mapping[str, Any], config: TrainConfig, where: str) -> None:
    """Raise ``ConfigError`` naming every key whose value differs from the stored run."""
    stored = stored_record.get("config")
    if not isinstance(stored, Mapping):
        raise ConfigError(f"{where}: has no 'config' object; not a textpolicy run directory")
    new = config_dict(config)
    diff = config_differences(stored, new)
    if diff:
        parts = describe_differences(stored, new, diff)
        raise ConfigError(
            f"{where} belongs to a run with a different configuration ({'; '.join(parts)}); "
            f"re-run with the same settings to resume, or use another --log-dir")


def describe_differences(old: Mapping[str, Any], new: Mapping[str, Any],
                         keys: list[str]) -> list[str]:
    """``"key: old -> new"`` for each differing (dotted) key."""
    return [f"{k}: {_lookup(old, k)!r} -> {_lookup(new, k)!r}" for k in keys]


def _lookup(data: Mapping[str, Any], dotted: str) -> Any:
    value: Any = data
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value
