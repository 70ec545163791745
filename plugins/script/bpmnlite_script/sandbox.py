"""The ``python`` script language: RestrictedPython with budgets, or plain Python when trusted.

A script sees the instance variables as names and hands back the names it
assigned. It works on private copies, so the only way it changes the instance
is through the names it returns.
"""

from __future__ import annotations

import builtins
import copy
import datetime
import decimal
import functools
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from decimal import getcontext, setcontext
from fractions import Fraction
from types import BuiltinFunctionType, CodeType, FunctionType, GeneratorType, MethodType, ModuleType, TracebackType
from typing import Any

from bpmnlite.errors import BpmnError, ScriptError
from bpmnlite_script import budget
from bpmnlite_script.budget import SCRIPT_FILENAME, Limits, Refusal
from bpmnlite_script.compiler import compile_script, compiled_sandboxed, compiled_trusted
from bpmnlite_script.guards import GuardedType
from bpmnlite_script.modules import DEFAULT_ALLOWED_MODULES, ModuleView, decimal_context
from bpmnlite_script.names import SAFE_BUILTINS

__all__ = ["DEFAULT_ALLOWED_MODULES", "Limits", "PythonScript"]

_TRUSTED_BUILTINS = {**vars(builtins), "BpmnError": BpmnError}
# Values that are not data: never written back as variables.
_NOT_DATA = (
    ModuleType,
    FunctionType,
    BuiltinFunctionType,
    MethodType,
    type,
    GeneratorType,
    ModuleView,
    GuardedType,
    functools.partial,
)
# Values that cannot change, so the script may share them with the engine.
_IMMUTABLE = frozenset({int, float, complex, bool, str, bytes, type(None), decimal.Decimal, Fraction, uuid.UUID})
_IMMUTABLE |= {datetime.date, datetime.datetime, datetime.time, datetime.timedelta}
_FAST_COPY_DEPTH = 32


class PythonScript:
    """Runs ``python`` scripts; implements ``bpmnlite.hookspecs.ScriptLanguage``.

    Args:
        limits: budgets of a sandboxed run (time, lines, memory, object sizes).
        allowed_modules: top-level modules a sandboxed script may import.
            Each reaches the script as a read-only view of its public API
            without submodules; add a module only if all of that is safe.

    Both are attributes too; a run uses the values current when it starts.
    """

    def __init__(
        self, *, limits: Limits | None = None, allowed_modules: Iterable[str] = DEFAULT_ALLOWED_MODULES
    ) -> None:
        self.limits = limits or Limits()
        self.allowed_modules = frozenset(allowed_modules)
        dotted = sorted(m for m in self.allowed_modules if "." in m)
        if dotted:
            raise ValueError(f"only top-level modules can be allowed, not {', '.join(dotted)}")

    def run(
        self, script: str, variables: MutableMapping[str, Any], *, trusted: bool, element_id: str
    ) -> Mapping[str, Any]:
        """Run ``script`` with ``variables`` as names; return the names it assigned.

        Returns:
            Every name the script bound to a new or changed value (changes
            inside a list or dict count), except names starting with ``_`` and
            modules, functions and classes. A deleted name is not reported.
            A sandboxed script only sees (and is only compared on) the
            variables its code names; a trusted one sees them all.

        Raises:
            ScriptError: the script was refused (when compiled or while
                running), stopped by a budget, or raised; the message names the
                element and the line.
            BpmnError: raised by the script, unchanged.
        """
        # The cache lookup of compile_script, inline.
        compiled = (compiled_trusted if trusted else compiled_sandboxed).get(script) or compile_script(script, trusted)
        if compiled.code is None:
            raise ScriptError(compiled.problem or "script refused", element_id=element_id, line=compiled.line)
        namespace: dict[str, Any] = {
            "__builtins__": _TRUSTED_BUILTINS if trusted else SAFE_BUILTINS,
            "__name__": "<script>",
        }
        names = compiled.names
        # Immutable values are shared without calling private_copy (most variables are).
        if names is None:
            for name, value in variables.items():
                namespace[name] = value if type(value) in _IMMUTABLE else private_copy(value)
        else:
            # Only the variables the script names can be read or changed by it; the
            # others are neither copied nor compared (a 50-variable instance, one used).
            for name in names:
                if name in variables:
                    value = variables[name]
                    namespace[name] = value if type(value) in _IMMUTABLE else private_copy(value)
        code = compiled.code
        if trusted:
            _execute(code, namespace, element_id)
            return _assigned(namespace, variables)
        try:
            # The sandbox, inline (this runs for every script task): a fresh budget made
            # current, the scripts' decimal context and the tracer, all restored after.
            limits = self.limits
            runs = budget.local.runs
            script_context = decimal_context(limits, runs)
            old_context = getcontext()
            old_trace = sys.gettrace()
            run, previous = runs.start(limits, element_id, self.allowed_modules)
            try:
                setcontext(script_context)
                _execute(code, namespace, element_id, run.tracer)
            finally:
                sys.settrace(old_trace)
                setcontext(old_context)
                runs.finish(run, previous)
            return _assigned(namespace, variables)
        finally:
            # Functions the script defined refer to the namespace, which refers to
            # them: free that cycle now rather than at some later garbage collection.
            namespace.clear()


def _execute(
    code: CodeType, namespace: dict[str, Any], element_id: str, tracer: Callable[..., Any] | None = None
) -> None:
    """``exec`` with every way out turned into a ScriptError naming the element and line.

    ``tracer`` (a sandboxed run's) is installed here, just before the script
    starts, so that it is not also called for this function's frame; the
    caller restores the previous one.
    """
    if tracer is not None:
        sys.settrace(tracer)
    try:
        exec(code, namespace)
    except BpmnError:
        raise
    except Refusal as exc:
        line = _script_line(exc.__traceback__)
        what = "stopped" if exc.stopped else "refused"
        where = f" at line {line}" if line else ""
        raise ScriptError(f"script {what}{where}: {exc.reason}", element_id=element_id, line=line) from None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        line = _script_line(exc.__traceback__)
        where = f" at line {line}" if line else ""
        raise ScriptError(
            f"script failed: {type(exc).__name__}: {exc}{where}", element_id=element_id, line=line
        ) from exc


def _script_line(tb: TracebackType | None) -> int | None:
    """The line of the innermost script frame in a traceback."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == SCRIPT_FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def private_copy(value: Any) -> Any:
    """A copy the script may change freely; immutable values are shared.

    Lists and dicts of plain values (what process variables mostly are) are
    copied directly, several times faster than ``deepcopy``; anything else,
    or data nested deeper than a few levels, goes through ``deepcopy``. An
    object that cannot be copied is passed as it is: a sandboxed script can
    only call its methods, not set its attributes.
    """
    if type(value) in _IMMUTABLE:
        return value
    try:
        return _fast_copy(value, _FAST_COPY_DEPTH)
    except _NotPlain:
        pass
    try:
        return copy.deepcopy(value)
    except Exception:
        return value


class _NotPlain(Exception):
    pass


def _fast_copy(value: Any, depth: int) -> Any:
    kind = type(value)
    if kind in _IMMUTABLE:
        return value
    if depth == 0:
        raise _NotPlain
    # Immutable items are taken as they are, without a call (_fast_copy would return them).
    depth -= 1
    if kind is list:
        return [item if type(item) in _IMMUTABLE else _fast_copy(item, depth) for item in value]
    if kind is dict:
        return {key: item if type(item) in _IMMUTABLE else _fast_copy(item, depth) for key, item in value.items()}
    if kind is tuple:
        return tuple([item if type(item) in _IMMUTABLE else _fast_copy(item, depth) for item in value])
    raise _NotPlain


def _assigned(namespace: Mapping[str, Any], before: Mapping[str, Any]) -> dict[str, Any]:
    changed: dict[str, Any] = {}
    for name, value in namespace.items():
        if name[:1] == "_" or type(value) not in _IMMUTABLE and isinstance(value, _NOT_DATA):
            continue
        if name in before:
            # Unchanged if the same object, or an equal one of the same type (inline: this runs per name and run).
            old = before[name]
            if old is value:
                continue
            if type(old) is type(value):
                try:
                    if value == old:
                        continue
                except Exception:
                    pass  # cannot tell: report it as changed
        changed[name] = value
    return changed
