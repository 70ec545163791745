"""The ``python`` task type: call an application function with the task's context.

A model names the function, so the model decides which code runs. The plugin
therefore imports only modules the application allowed, and calls only
callables defined in them: ``myapp.tasks:os.system`` (reaching another module
through an imported name), ``myapp.tasks:system`` (a function imported from
``os``) and private names (``_helper``) are refused, before anything is
imported when the module itself is not allowed.
"""

from __future__ import annotations

import importlib
import re
import threading
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bpmnlite import BpmnliteError, Problem, TaskContext, hookimpl
from bpmnlite.model import Definitions, FlowNode

_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_ATTRIBUTE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
HOW_TO_ALLOW = (
    "allow it with bpmnlite_python.plugin.allowed_modules = ('{module}',) or register "
    "PythonTaskPlugin(allowed_modules=('{module}',))"
)


class PythonTaskRefused(BpmnliteError):
    """A ``python`` task names a function the plugin may not call (or that does not exist)."""


class PythonTaskPlugin:
    """Registers the ``python`` task type.

    Args:
        allowed_modules: dotted module names the tasks may call into; each
            allows the module and its submodules (``"myapp"`` or ``"myapp."``
            allows ``myapp`` and ``myapp.tasks`` but not ``myapplication``).
            Empty (the default) allows nothing.
    """

    def __init__(self, allowed_modules: Iterable[str] = ()) -> None:
        self.allowed_modules: tuple[str, ...] = tuple(allowed_modules)
        self._resolved: dict[str, Callable[..., Any]] = {}
        self._lock = threading.Lock()

    @hookimpl
    def bpmnlite_task_types(self) -> Mapping[str, Any]:
        return {"python": self.call}

    def call(self, ctx: TaskContext) -> Any:
        """Call the element's function with ``ctx``; a returned dict is written as variables.

        Any other returned value is given back to the engine, which stores it
        in ``camunda:resultVariable`` if the element has one.

        Raises:
            PythonTaskRefused: the function is not allowed, not found or not callable.
        """
        function = self.resolve(_target(ctx.element))
        result = function(ctx)
        if isinstance(result, Mapping):
            for name, value in result.items():
                if not isinstance(name, str):
                    raise PythonTaskRefused(f"a python task returned a variable name that is not text: {name!r}")
                ctx.set(name, value)
            return None
        return result

    def is_allowed(self, module: str) -> bool:
        for prefix in self.allowed_modules:
            base = prefix.strip().rstrip(".")
            if base and (module == base or module.startswith(base + ".")):
                return True
        return False

    def resolve(self, target: str | None) -> Callable[..., Any]:
        """The callable ``target`` (``"package.module:function"``) names, imported if allowed.

        Raises:
            PythonTaskRefused: the target is malformed, its module is not
                allowed, or it does not name a callable defined in an allowed module.
        """
        module_name, path = _split(target)
        self._check_allowed(module_name)
        with self._lock:
            cached = self._resolved.get(f"{module_name}:{'.'.join(path)}")
        if cached is not None:
            return cached
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError as exc:
            raise PythonTaskRefused(f"cannot import module {module_name!r}: {exc}") from exc
        for i, part in enumerate(path):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise PythonTaskRefused(f"module {module_name!r} has no {'.'.join(path[: i + 1])!r}") from None
            if isinstance(obj, types.ModuleType):
                raise PythonTaskRefused(
                    f"{target!r} reaches module {obj.__name__!r} through an attribute; name it directly"
                )
        if not callable(obj):
            raise PythonTaskRefused(f"{target!r} is a {type(obj).__name__}, not a callable")
        defined_in = getattr(obj, "__module__", None)
        if not isinstance(defined_in, str) or not self.is_allowed(defined_in):
            raise PythonTaskRefused(
                f"{target!r} is defined in module {defined_in!r}, which is not allowed; "
                "only callables defined in allowed modules can be called"
            )
        with self._lock:
            self._resolved[f"{module_name}:{'.'.join(path)}"] = obj
        return obj  # type: ignore[no-any-return]

    @hookimpl
    def bpmnlite_check_element(self, element: FlowNode, task_type: str | None) -> list[str]:
        """At deploy time: a ``python`` task naming a module that is not allowed is refused."""
        if task_type != "python":
            return []
        try:
            module_name, _ = _split(_target(element))
            self._check_allowed(module_name)
        except PythonTaskRefused as exc:
            return [str(exc)]
        return []

    def check(self, definitions: Definitions) -> list[Problem]:
        """Problems of ``python`` tasks in a parsed model, found without importing anything.

        The engine runs the same check at deploy time (``bpmnlite_check_element``);
        this lets a CI job check a model without an engine: ``plugin.check(parse(source))``.
        """
        problems: list[Problem] = []
        for process in definitions.processes:
            for node in process.nodes.values():
                if node.task_type != "python":
                    continue
                try:
                    module_name, _ = _split(_target(node))
                    self._check_allowed(module_name)
                except PythonTaskRefused as exc:
                    problems.append(Problem(str(exc), node.id, node.line))
        return problems

    def _check_allowed(self, module_name: str) -> None:
        if not self.is_allowed(module_name):
            allowed = ", ".join(repr(m) for m in self.allowed_modules) or "none"
            raise PythonTaskRefused(
                f"module {module_name!r} is not allowed for python tasks (allowed: {allowed}); "
                + HOW_TO_ALLOW.format(module=module_name)
            )


def _target(node: FlowNode) -> str | None:
    """``bpmnlite:function``, else a ``function`` field (``camunda:field`` / ``bpmnlite:field``)."""
    value = node.attributes.get("bpmnlite:function")
    if value is not None:
        return value
    for ext in node.extensions:
        if ext.tag.endswith(":field") and ext.attributes.get("name") == "function":
            text = ext.attributes.get("stringValue") or ext.text
            for child in ext.children:
                text = text or child.text
            return text
    return None


def _split(target: str | None) -> tuple[str, list[str]]:
    text = (target or "").strip()
    if not text:
        raise PythonTaskRefused("a python task needs bpmnlite:function=\"package.module:function\"")
    module_name, colon, attribute = text.partition(":")
    path = attribute.split(".") if attribute else []
    if not colon or not _MODULE.fullmatch(module_name) or not path or not all(_ATTRIBUTE.fullmatch(p) for p in path):
        raise PythonTaskRefused(
            f"invalid function {text!r}: write 'package.module:function' (no names starting with '_')"
        )
    return module_name, path
