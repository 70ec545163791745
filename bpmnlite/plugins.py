"""The plugin registry: finds plugins once and turns their hooks into lookup tables.

Plugins come from the ``bpmnlite`` entry point group and from explicit
registration. Each registration validates the plugin against the hook specs
(a misspelled hook fails here, not when the engine first needs it) and
rebuilds the tables of task types, script languages and expression
functions, so the engine's hot path is a dict lookup, never a hook call.
"""

from __future__ import annotations

import difflib
import importlib.metadata
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import pluggy

from bpmnlite import hookspecs
from bpmnlite.errors import BpmnliteError
from bpmnlite.hookspecs import PROJECT, ScriptLanguage, TaskHandler

ENTRY_POINT_GROUP = PROJECT
DEFAULT_SCRIPT_FORMAT = "python"

_HOOK_PREFIX = PROJECT + "_"
# Registration hooks are called by the registry itself, once per plugin, to build the tables.
_TASK_TYPES = "bpmnlite_task_types"
_SCRIPT_LANGUAGES = "bpmnlite_script_languages"
_EXPRESSION_FUNCTIONS = "bpmnlite_expression_functions"
_REGISTRATION_HOOKS = frozenset({_TASK_TYPES, _SCRIPT_LANGUAGES, _EXPRESSION_FUNCTIONS})


class PluginError(BpmnliteError):
    """A plugin failed to load or to register; the message names the plugin and what is wrong."""


class PluginRegistry:
    """Collects plugins once; the engine looks things up in plain dicts afterwards.

    Args:
        load_entry_points: also load every plugin of the ``bpmnlite`` entry
            point group (each registered under its entry point's name).
        plugins: plugin objects (modules or instances) to register after them.

    Raises:
        PluginError: an entry point failed to load, a plugin is invalid, or two
            plugins registered the same name.
    """

    def __init__(self, *, load_entry_points: bool = True, plugins: Iterable[object] = ()) -> None:
        self._pm = pluggy.PluginManager(PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._hook_names = frozenset(name for name in vars(hookspecs) if name.startswith(_HOOK_PREFIX))
        self._task_types: Mapping[str, TaskHandler] = MappingProxyType({})
        self._script_languages: Mapping[str, ScriptLanguage] = MappingProxyType({})
        self._expression_functions: Mapping[str, Callable[..., Any]] = MappingProxyType({})
        self._listened: frozenset[str] = frozenset()
        # plugins that came from entry points: an explicitly registered plugin may replace their names
        self._installed: set[str] = set()
        if load_entry_points:
            self._load_entry_points()
        for plugin in plugins:
            self.register(plugin)

    # ------------------------------------------------------------------ registration
    def register(self, plugin: object, name: str | None = None) -> None:
        """Validate ``plugin`` and add it; registering the same object again does nothing.

        Being idempotent lets an application pass a plugin explicitly that is
        also installed as an entry point.

        Raises:
            PluginError: a function named ``bpmnlite_*`` matches no hook or is
                not marked with ``@hookimpl``, a hook implementation takes
                arguments its spec does not have, the name is taken by another
                plugin, or a registration hook returned a name another plugin
                already registered. The registry is unchanged afterwards.
        """
        if self._pm.is_registered(plugin):
            return
        label = name or self._default_name(plugin)
        self._check_hook_names(plugin, label)
        taken = self._pm.get_plugin(label)
        if taken is not None:
            raise PluginError(f"cannot register plugin {label!r}: the name is already used by {taken!r}")
        try:
            self._pm.register(plugin, label)
        except (pluggy.PluginValidationError, ValueError) as exc:
            raise PluginError(f"cannot register plugin {label!r}: {exc}") from exc
        try:
            self._rebuild()
        except BaseException:
            self._pm.unregister(plugin)
            raise

    def _default_name(self, plugin: object) -> str:
        """A readable name for error messages: the module's name, else the class's, made unique."""
        base = getattr(plugin, "__name__", None)
        if not isinstance(base, str):
            base = type(plugin).__name__
        name, n = base, 1
        while self._pm.get_plugin(name) is not None:
            n += 1
            name = f"{base}#{n}"
        return name

    def _load_entry_points(self) -> None:
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = entry_point.dist.name if entry_point.dist is not None else "an unknown distribution"
            where = f"entry point {entry_point.name!r} ({entry_point.value}) of {dist}"
            try:
                plugin = entry_point.load()
            except Exception as exc:
                raise PluginError(f"plugin {where} failed to load: {type(exc).__name__}: {exc}") from exc
            try:
                self._installed.add(entry_point.name)
                self.register(plugin, entry_point.name)
            except PluginError as exc:
                raise PluginError(f"plugin {where}: {exc}") from exc

    def _check_hook_names(self, plugin: object, label: str) -> None:
        """Fail on ``bpmnlite_*`` functions pluggy would silently ignore."""
        for attr in dir(plugin):
            if not attr.startswith(_HOOK_PREFIX):
                continue
            if attr not in self._hook_names:
                close = difflib.get_close_matches(attr, sorted(self._hook_names), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise PluginError(f"plugin {label!r} defines {attr!r}, which is not a bpmnlite hook{hint}")
            if callable(getattr(plugin, attr, None)) and self._pm.parse_hookimpl_opts(plugin, attr) is None:
                raise PluginError(f"plugin {label!r} defines {attr!r} without marking it with @bpmnlite.hookimpl")

    def _rebuild(self) -> None:
        """Recompute every lookup table; assign them only if all are valid."""
        task_types = self._collect(_TASK_TYPES, "task type", lower=False)
        languages = self._collect(_SCRIPT_LANGUAGES, "script language", lower=True)
        functions = self._collect(_EXPRESSION_FUNCTIONS, "expression function", lower=False)
        listened = frozenset(
            name for name in self._hook_names - _REGISTRATION_HOOKS if getattr(self._pm.hook, name).get_hookimpls()
        )
        self._task_types = MappingProxyType(task_types)
        self._script_languages = MappingProxyType(languages)
        self._expression_functions = MappingProxyType(functions)
        self._listened = listened

    def _collect(self, hook_name: str, what: str, *, lower: bool) -> dict[str, Any]:
        table: dict[str, Any] = {}
        owners: dict[str, str] = {}
        # get_hookimpls() lists in registration order, so a conflict names the earlier plugin first.
        for impl in getattr(self._pm.hook, hook_name).get_hookimpls():
            owner = impl.plugin_name
            if impl.hookwrapper or impl.wrapper:
                raise PluginError(f"plugin {owner!r}: {hook_name} cannot be a wrapper; it just returns names")
            try:
                result = impl.function()
            except Exception as exc:
                raise PluginError(f"plugin {owner!r}: {hook_name}() raised {type(exc).__name__}: {exc}") from exc
            if result is None:
                continue
            if not isinstance(result, Mapping):
                raise PluginError(
                    f"plugin {owner!r}: {hook_name}() must return a mapping of names, not {type(result).__name__}"
                )
            for key, value in result.items():
                if not isinstance(key, str) or not key.strip():
                    raise PluginError(f"plugin {owner!r}: {hook_name}() returned an invalid {what} name {key!r}")
                _check_value(owner, what, key, value)
                if lower:
                    key = key.strip().lower()
                if key in owners:
                    # a configured plugin passed explicitly (e.g. MailPlugin(host=...)) replaces the installed one
                    if owners[key] in self._installed and owner not in self._installed:
                        pass
                    elif owner in self._installed and owners[key] not in self._installed:
                        continue
                    else:
                        raise PluginError(
                            f"{what} {key!r} is registered by both plugin {owners[key]!r} and plugin {owner!r}"
                        )
                owners[key] = owner
                table[key] = value
        return table

    # ------------------------------------------------------------------ lookups
    def task_handler(self, type_name: str) -> TaskHandler | None:
        """The handler registered for a service task type, or None."""
        return self._task_types.get(type_name)

    def script_language(self, fmt: str | None) -> ScriptLanguage | None:
        """The runner of a script format (case-insensitive; empty or None means ``python``), or None."""
        if not fmt:
            return self._script_languages.get(DEFAULT_SCRIPT_FORMAT)
        return self._script_languages.get(fmt.strip().lower())

    def known_task_types(self) -> list[str]:
        """Registered task type names, sorted, for error messages."""
        return sorted(self._task_types)

    def known_script_languages(self) -> list[str]:
        """Registered script formats, sorted, for error messages."""
        return sorted(self._script_languages)

    @property
    def task_types(self) -> Mapping[str, TaskHandler]:
        """Read-only view of task type names and their handlers."""
        return self._task_types

    @property
    def script_languages(self) -> Mapping[str, ScriptLanguage]:
        """Read-only view of lower-case script formats and their runners."""
        return self._script_languages

    @property
    def expression_functions(self) -> Mapping[str, Callable[..., Any]]:
        """Read-only view of the extra functions expressions may call."""
        return self._expression_functions

    @property
    def hook(self) -> pluggy.HookRelay:
        """The hook relay, to call listener hooks: ``registry.hook.bpmnlite_instance_started(...)``."""
        return self._pm.hook

    def has_listeners(self, hook_name: str) -> bool:
        """Whether any plugin implements a listener hook.

        Lets the engine skip building an event nobody listens to. A name that
        is not a listener hook (or not a hook at all) has no listeners.
        """
        return hook_name in self._listened


def _check_value(owner: str, what: str, key: str, value: object) -> None:
    """Reject a handler the engine could not call, at registration rather than at first use."""
    usable = callable(getattr(value, "run", None)) if what == "script language" else callable(value)
    if not usable:
        needs = "an object with a run() method" if what == "script language" else "a callable"
        raise PluginError(f"plugin {owner!r}: {what} {key!r} must be {needs}, not {type(value).__name__}")
