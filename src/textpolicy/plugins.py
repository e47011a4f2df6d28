"""Plugin manager and component registry.

Built-in plugins are registered explicitly from ``textpolicy_builtins.BUILTIN_PLUGINS``, so they
never depend on package metadata and disabling external plugins never removes them. External
plugins come from the ``textpolicy`` entry-point group and are loaded one by one: a plugin that
fails to import or register is recorded in ``Registry.load_errors`` (shown by ``tp plugins``)
and never stops the others from loading.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Generic, TypeVar

import attrs
import pluggy

from textpolicy import hookspecs, records
from textpolicy.errors import PluginError, UnknownComponentError
from textpolicy.wording import plural

ENTRY_POINT_GROUP = "textpolicy"
DISABLE_ENV = "TEXTPOLICY_DISABLE_PLUGINS"
TRACE_ENV = "TEXTPOLICY_TRACE_HOOKS"

hookimpl = pluggy.HookimplMarker("textpolicy")

T = TypeVar("T")

# kind -> (hook name, human name)
KINDS: dict[str, tuple[str, str]] = {
    "stages": ("textpolicy_register_stages", "advantage stage"),
    "planning_detectors": ("textpolicy_register_planning_detectors", "planning detector"),
    "schedulers": ("textpolicy_register_schedulers", "scheduler"),
    "rewards": ("textpolicy_register_rewards", "reward function"),
    "significance_tests": ("textpolicy_register_significance_tests", "significance test"),
    "pipelines": ("textpolicy_register_pipelines", "pipeline"),
    "engines": ("textpolicy_register_engines", "engine"),
    "tasks": ("textpolicy_register_tasks", "task"),
    "executors": ("textpolicy_register_executors", "executor"),
}


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest candidate, or ``""``."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


@attrs.frozen
class PluginInfo:
    """One loaded (or failed) plugin, as ``tp plugins`` shows it."""

    name: str
    source: str  # "builtin", "entry-point" or "extra"
    version: str | None
    registers: tuple[tuple[str, tuple[str, ...]], ...] = ()
    error: str | None = None
    distribution: str | None = None  # the installed distribution that provides it
    entry_point: str | None = None  # "name = module:attr" for entry-point plugins


class ComponentTable(Generic[T]):
    """Name → record for one component kind, with helpful lookup errors."""

    def __init__(self, kind: str, items: Mapping[str, T], aliases: Mapping[str, str]) -> None:
        self.kind = kind
        self._items = dict(items)
        self._aliases = dict(aliases)
        #: "plugin: error" of every plugin that failed to load (named in lookup errors)
        self.failed: tuple[str, ...] = ()

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._aliases

    def __iter__(self) -> Any:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return sorted(self._items)

    def values(self) -> list[T]:
        return [self._items[n] for n in self.names()]

    def get(self, name: str) -> T:
        """Return the record called ``name`` (or an alias of it); raise a helpful error."""
        canonical = self._aliases.get(name, name)
        try:
            return self._items[canonical]
        except KeyError:
            raise self.unknown(name) from None

    def known(self) -> list[str]:
        """Every name and alias, sorted."""
        return sorted([*self._items, *self._aliases])

    def unknown(self, name: str, *, also: ComponentTable[Any] | None = None
                ) -> UnknownComponentError:
        """The error for an unknown ``name``: a "did you mean" over this table (and ``also``,
        e.g. stages for a pipeline name), the known names, and the plugins that failed to
        load (whose components are missing)."""
        human = KINDS[self.kind][1]
        known = self.known()
        close = did_you_mean(name, [*known, *(also.known() if also is not None else ())])
        listed = f"known: {', '.join(known)}"
        if also is not None:
            listed += f"; {KINDS[also.kind][1]}s: {', '.join(also.known())}"
        failed = ""
        if self.failed:
            failed = (f"; {plural(len(self.failed), 'plugin')} failed to load, so what "
                      f"{'it registers' if len(self.failed) == 1 else 'they register'} is "
                      f"missing: {'; '.join(self.failed)} (see tp plugins)")
        return UnknownComponentError(f"unknown {human} {name!r}{close}; {listed}{failed}")


class Registry:
    """Every registered component of every kind, built once from a plugin manager."""

    def __init__(self, pm: pluggy.PluginManager, infos: list[PluginInfo], *,
                 strict: bool = True) -> None:
        """Collect every hook's records. ``strict``: a duplicate component name raises
        ``PluginError``; otherwise (``tp plugins``) the later record is dropped and the clash
        is reported as a load error of the plugin that brought it."""
        self.pm = pm
        self._infos = infos
        self._tables: dict[str, ComponentTable[Any]] = {}
        owners: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
        errors: list[str] = []
        contributed: dict[str, dict[str, list[str]]] = {}
        trace = bool(os.environ.get(TRACE_ENV))
        for kind, (hook_name, human) in KINDS.items():
            items: dict[str, Any] = {}
            aliases: dict[str, str] = {}
            hook = getattr(pm.hook, hook_name)
            # each implementation is called on its own so one broken plugin cannot hide the
            # others' records (pluggy's hook call would stop at the first exception)
            for impl in hook.get_hookimpls():
                plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)
                try:
                    produced = list(impl.function() or ())
                except Exception as exc:  # a broken plugin is reported, never fatal
                    if trace:
                        print(f"[textpolicy] {hook_name} of {plugin_name!r} raised {exc!r}",
                              file=sys.stderr)
                    errors.append(f"{plugin_name}: {hook_name} failed: {exc}")
                    continue
                if trace:
                    names = ", ".join(str(getattr(r, "name", r)) for r in produced)
                    print(f"[textpolicy] {hook_name} of {plugin_name!r} -> {names or '(none)'}",
                          file=sys.stderr)
                for record in produced:
                    name = getattr(record, "name", None)
                    if not isinstance(name, str):
                        raise PluginError(
                            f"plugin {plugin_name!r}: {hook_name} returned {record!r}, "
                            f"not a textpolicy.records {human} record")
                    if name in items or name in aliases:
                        message = (f"duplicate {human} name {name!r}: registered by "
                                   f"{owners[kind][name]!r} and {plugin_name!r}")
                        if strict:
                            raise PluginError(
                                message + f" (disable one with {DISABLE_ENV}=<entry point>)")
                        errors.append(f"{plugin_name}: {message}")
                        continue
                    items[name] = record
                    owners[kind][name] = plugin_name
                    contributed.setdefault(plugin_name, {}).setdefault(kind, []).append(name)
                    for alias in getattr(record, "aliases", ()):
                        if alias in items or alias in aliases:
                            message = (f"duplicate {human} name {alias!r} (alias of {name!r}) "
                                       f"from {plugin_name!r}, already registered by "
                                       f"{owners[kind][alias]!r}")
                            if strict:
                                raise PluginError(message)
                            errors.append(f"{plugin_name}: {message}")
                            continue
                        aliases[alias] = name
                        owners[kind][alias] = plugin_name
            self._tables[kind] = ComponentTable(kind, items, aliases)
        self.owners = owners
        by_name = {info.name: info for info in infos}
        for plugin_name, kinds in contributed.items():
            if plugin_name in by_name:
                by_name[plugin_name] = attrs.evolve(
                    by_name[plugin_name],
                    registers=tuple((k, tuple(v)) for k, v in sorted(kinds.items())))
        for message in errors:
            plugin_name = message.split(":", 1)[0]
            if plugin_name in by_name:
                old = by_name[plugin_name]
                by_name[plugin_name] = attrs.evolve(
                    old, error=f"{old.error}; {message}" if old.error else message)
        self.plugins: tuple[PluginInfo, ...] = tuple(by_name.values())
        for table in self._tables.values():
            table.failed = tuple(self.load_errors)

    @property
    def load_errors(self) -> list[str]:
        return [f"{p.name}: {p.error}" for p in self.plugins if p.error]

    def provenance(self, used: Mapping[str, Iterable[str]]) -> list[dict[str, Any]]:
        """Which plugins (distribution, version, entry point) provided the components in
        ``used`` (kind → names; names no plugin registered, e.g. compositions, are skipped),
        one entry per plugin in load order. Written to config.json and manifest.json."""
        by_plugin: dict[str, dict[str, set[str]]] = {}
        for kind, names in used.items():
            for name in names:
                owner = self.owners.get(kind, {}).get(name)
                if owner is not None:
                    by_plugin.setdefault(owner, {}).setdefault(kind, set()).add(name)
        return [
            {"plugin": info.name, "source": info.source, "distribution": info.distribution,
             "version": info.version, "entry_point": info.entry_point,
             "components": {k: sorted(v) for k, v in sorted(by_plugin[info.name].items())}}
            for info in self.plugins if info.name in by_plugin]

    def table(self, kind: str) -> ComponentTable[Any]:
        return self._tables[kind]

    @property
    def stages(self) -> ComponentTable[records.AdvantageStage]:
        return self._tables["stages"]

    @property
    def planning_detectors(self) -> ComponentTable[records.PlanningDetector]:
        return self._tables["planning_detectors"]

    @property
    def schedulers(self) -> ComponentTable[records.Scheduler]:
        return self._tables["schedulers"]

    @property
    def rewards(self) -> ComponentTable[records.RewardFunction]:
        return self._tables["rewards"]

    @property
    def significance_tests(self) -> ComponentTable[records.SignificanceTest]:
        return self._tables["significance_tests"]

    @property
    def pipelines(self) -> ComponentTable[records.NamedPipeline]:
        return self._tables["pipelines"]

    @property
    def engines(self) -> ComponentTable[records.EnginePlugin]:
        return self._tables["engines"]

    @property
    def tasks(self) -> ComponentTable[records.TaskPlugin]:
        return self._tables["tasks"]

    @property
    def executors(self) -> ComponentTable[records.ExecutorPlugin]:
        return self._tables["executors"]


def _dist_version(dist_name: str | None) -> str | None:
    if not dist_name:
        return None
    try:
        return importlib.metadata.version(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _disabled_entry_points() -> tuple[bool, set[str]]:
    value = os.environ.get(DISABLE_ENV, "").strip()
    if value.lower() in {"1", "true", "yes", "all", "*"}:
        return True, set()
    return False, {v.strip() for v in value.split(",") if v.strip()}


def _entry_point_info(ep: importlib.metadata.EntryPoint, error: str | None = None
                      ) -> PluginInfo:
    """The ``PluginInfo`` of an entry point: its distribution's name and version."""
    dist = getattr(ep, "dist", None)
    return PluginInfo(name=ep.name, source="entry-point", version=getattr(dist, "version", None),
                      distribution=getattr(dist, "name", None),
                      entry_point=f"{ep.name} = {ep.value}", error=error)


def create_plugin_manager(
    extra_plugins: Iterable[tuple[str, object]] = (), *, load_entry_points: bool = True
) -> tuple[pluggy.PluginManager, list[PluginInfo]]:
    """Make a fresh plugin manager: built-ins, then entry points, then ``extra_plugins``.

    ``extra_plugins`` are ``(name, plugin object)`` pairs registered after the others (tests
    use this for throw-away plugins). Raises ``PluginError`` when a hook implementation's name
    matches no spec (a misspelt hook would otherwise be silently ignored).
    """
    from textpolicy_builtins import BUILTIN_PLUGINS

    pm = pluggy.PluginManager("textpolicy")
    pm.add_hookspecs(hookspecs)
    infos: list[PluginInfo] = []
    own_version = _dist_version("textpolicy")
    for module in BUILTIN_PLUGINS:
        name = module.__name__
        pm.register(module, name=name)
        infos.append(PluginInfo(name=name, source="builtin", version=own_version,
                                distribution="textpolicy"))

    disable_all, disabled = _disabled_entry_points()
    if load_entry_points and not disable_all:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in disabled:
                continue
            if pm.has_plugin(ep.name):
                infos.append(_entry_point_info(
                    ep, f"PluginError: another plugin is already called {ep.name!r}; "
                        "not loaded"))
                continue
            try:
                plugin = ep.load()
                _check_hook_names(plugin, ep.name)
                pm.register(plugin, name=ep.name)
                _check_pending(pm)
            except Exception as exc:  # a broken plugin is reported, never fatal
                if pm.has_plugin(ep.name):
                    pm.unregister(name=ep.name)
                infos.append(_entry_point_info(ep, f"{type(exc).__name__}: {exc}"))
                continue
            infos.append(_entry_point_info(ep))

    for name, plugin in extra_plugins:
        _check_hook_names(plugin, name)
        pm.register(plugin, name=name)
        infos.append(PluginInfo(name=name, source="extra", version=None))
    _check_pending(pm)
    return pm, infos


HOOK_PREFIX = "textpolicy_"


def _check_hook_names(plugin: object, plugin_name: str) -> None:
    """A function marked with ``@hookimpl`` or named ``textpolicy_register_*`` whose name is
    not a hook is a misspelling: raise ``PluginError`` with a did-you-mean."""
    specs = [name for name in dir(hookspecs) if name.startswith(HOOK_PREFIX)]
    for attr in dir(plugin):
        value = getattr(plugin, attr, None)
        if not callable(value) or attr in specs:
            continue
        marked = hasattr(value, "textpolicy_impl")
        if marked or attr.startswith("textpolicy_register"):
            raise PluginError(
                f"plugin {plugin_name!r}: {attr!r} is not a textpolicy hook"
                f"{did_you_mean(attr, specs)}; hooks: {', '.join(specs)}")


def _check_pending(pm: pluggy.PluginManager) -> None:
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {exc.plugin!r}: {exc}") from None


def build_registry(
    extra_plugins: Iterable[tuple[str, object]] = (), *, load_entry_points: bool = True,
    strict: bool = True,
) -> Registry:
    """Build a fresh registry (tests use this with throw-away plugins).

    ``strict=False`` reports duplicate component names as load errors instead of raising
    (``tp plugins`` uses it so a clash can be inspected)."""
    pm, infos = create_plugin_manager(extra_plugins, load_entry_points=load_entry_points)
    return Registry(pm, infos, strict=strict)


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, built lazily on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = build_registry()
        for message in _REGISTRY.load_errors:  # once per process, whatever command runs
            print(f"textpolicy: warning: plugin {message} (tp plugins lists it)",
                  file=sys.stderr)
    return _REGISTRY


def reset_registry() -> None:
    """Forget the process-wide registry (the next ``get_registry`` rebuilds it)."""
    global _REGISTRY
    _REGISTRY = None


def structure_params(params_cls: type, values: Mapping[str, Any], *, where: str) -> Any:
    """Build a plugin's frozen parameter object from a mapping, with one-line errors.

    Unknown keys get a "did you mean"; wrong types and validator failures name the key,
    the value and what is allowed. ``where`` prefixes every message (e.g. ``stage 'gtpo'``).
    """
    from textpolicy.errors import ConfigError

    fields = {f.name: f for f in attrs.fields(params_cls)} if attrs.has(params_cls) else {}
    for key in values:
        if key not in fields:
            raise ConfigError(
                f"{where}: unknown parameter {key!r}{did_you_mean(key, fields)}; "
                f"allowed: {', '.join(fields) or '(none)'}")
    try:
        return params_cls(**dict(values))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
