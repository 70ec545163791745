"""The modules a sandboxed script may import, as read-only views of their safe public API.

The real module never reaches the script: ``json.codecs``, ``uuid.os`` or
``statistics.sys`` lead straight out of the sandbox, ``random.seed`` changes
state the engine shares, ``decimal.localcontext(prec=10**9)`` and
``random.choices(k=10**10)`` run in C where no budget can stop them. So each
module shows its documented API minus such names, with size checks in front
of the functions that take a size.
"""

from __future__ import annotations

import decimal
import importlib
import json
import math
import random
import statistics
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

from bpmnlite_script import budget
from bpmnlite_script.budget import Limits
from bpmnlite_script.guards import GuardedType, check_bits, check_size, check_text, guarded_mul, limits, refuse, tick

DEFAULT_ALLOWED_MODULES = frozenset({"math", "datetime", "decimal", "json", "random", "statistics", "string", "uuid"})
"""Modules a sandboxed script may import. ``re`` is not among them: a
backtracking pattern runs in C, where no budget can stop it."""

_MAX_FORMAT_ARG = 16  # longest json.dumps indent / separator


def _make_decimal(value: Any = "0", *args: Any) -> decimal.Decimal:
    """A Decimal whose exponent fits the int limit: ``int(Decimal('1e999999'))`` runs for half a minute."""
    result = decimal.Decimal(value, *args)
    digits = int(limits().int_bits * 0.30103)
    if result.is_finite() and abs(result.adjusted()) > digits:
        raise refuse(f"Decimal exponent {result.adjusted():,} exceeds the limit of {digits:,}")
    return result


def decimal_context(run_limits: Limits, runs: budget.ThreadRuns) -> decimal.Context:
    """This thread's decimal context for scripts: default precision, exponents bounded like integers.

    Decimal arithmetic otherwise reaches exponents of 999,999, and turning such
    a number into an int runs in C for half a minute. One context per thread
    (kept in the thread's ``runs``), reused with its flags cleared, keeps this
    off the hot path's bill.
    """
    cached = runs.decimal
    if cached is None or cached[0] is not run_limits:
        if cached is None or cached[0] != run_limits:
            digits = int(run_limits.int_bits * 0.30103)
            cached = (run_limits, decimal.Context(prec=28, Emax=digits, Emin=-digits))
        else:
            cached = (run_limits, cached[1])  # equal limits: the next run compares them by identity
        runs.decimal = cached
    context: decimal.Context = cached[1]
    context.clear_flags()
    return context


class ModuleView:
    """A read-only stand-in for an allowed module, holding only its curated public names.

    The real module never reaches the script: ``json.codecs``, ``uuid.os`` or
    ``statistics.sys`` would lead straight out of the sandbox.
    """

    __slots__ = ("__dict__", "_module_name")

    def __init__(self, name: str, exports: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_module_name", name)
        self.__dict__.update(exports)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"module {self._module_name!r} has no attribute {name!r} that scripts may use")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"module {self._module_name!r} is read-only in scripts")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"module {self._module_name!r} is read-only in scripts")

    def __repr__(self) -> str:
        return f"<module {self._module_name!r} (sandboxed)>"


def _factorial(n: int) -> int:
    check_bits(n * max(n.bit_length(), 1), "factorial()")
    return math.factorial(n)


def _comb(n: int, k: int) -> int:
    smaller = min(k, n - k) if 0 <= k <= n else 0
    check_bits(smaller * max(n.bit_length(), 1), "comb()")
    return math.comb(n, k)


def _perm(n: int, k: int | None = None) -> int:
    check_bits((n if k is None else k) * max(n.bit_length(), 1), "perm()")
    return math.perm(n, k)


def _prod(iterable: Iterable[Any], /, *, start: Any = 1) -> Any:
    result = start
    for item in iterable:
        tick()
        result = guarded_mul(result, item)
    return result


def _lcm(*integers: int) -> int:
    result = 1
    for n in integers:
        tick()
        result = math.lcm(result, n)
        check_bits(result.bit_length(), "lcm()")
    return result


def _getrandbits(k: int) -> int:
    check_bits(k, "getrandbits()")
    return random.getrandbits(k)


def _randbytes(n: int) -> bytes:
    check_size(n, "randbytes()")
    return random.randbytes(n)


def _choices(population: Any, weights: Any = None, *, cum_weights: Any = None, k: int = 1) -> list[Any]:
    check_size(k, "choices()")
    return random.choices(population, weights, cum_weights=cum_weights, k=k)


def _quantiles(data: Iterable[Any], *, n: int = 4, method: Any = "exclusive") -> list[Any]:
    check_size(n, "quantiles()")
    return statistics.quantiles(data, n=n, method=method)


def _json_dumps(obj: Any, *, indent: Any = None, separators: Any = None, **kwargs: Any) -> str:
    if "cls" in kwargs:
        raise refuse("json.dumps(cls=...) is not allowed")
    if _too_long(indent):
        raise refuse(f"json.dumps() indent is limited to {_MAX_FORMAT_ARG}")
    if separators is not None and any(_too_long(s) for s in separators):
        raise refuse(f"json.dumps() separators are limited to {_MAX_FORMAT_ARG} characters")
    check_text(obj)
    return json.dumps(obj, indent=indent, separators=separators, **kwargs)


def _too_long(value: Any) -> bool:
    return (len(value) if isinstance(value, str) else value if isinstance(value, int) else 0) > _MAX_FORMAT_ARG


def _json_loads(s: Any, **kwargs: Any) -> Any:
    if "cls" in kwargs:
        raise refuse("json.loads(cls=...) is not allowed")
    return json.loads(s, **kwargs)


_REPLACED: dict[str, dict[str, Any]] = {
    "math": {"factorial": _factorial, "comb": _comb, "perm": _perm, "prod": _prod, "lcm": _lcm},
    "random": {"getrandbits": _getrandbits, "randbytes": _randbytes, "choices": _choices},
    "statistics": {"quantiles": _quantiles},
    "json": {"dumps": _json_dumps, "loads": _json_loads},
    "decimal": {"Decimal": GuardedType(decimal.Decimal, _make_decimal)},
}
# Names that change state shared with the engine, reach files or processes, or
# build objects without the sandbox's size checks.
_DENIED: dict[str, frozenset[str]] = {
    "random": frozenset({"seed", "setstate", "getstate", "Random", "SystemRandom"}),
    "decimal": frozenset(
        {"Context", "localcontext", "getcontext", "setcontext", "DefaultContext", "BasicContext", "ExtendedContext"}
    ),
    "json": frozenset({"dump", "load", "JSONEncoder", "JSONDecoder", "detect_encoding"}),
    "string": frozenset({"Formatter"}),
    "uuid": frozenset({"getnode", "uuid1", "main"}),
}

_views: dict[str, ModuleView] = {}


def module_exports(module: ModuleType) -> dict[str, Any]:
    """The names a script may use from ``module``: its public API, never a module.

    With ``__all__`` that is the API; without it, callables count only if they
    were defined in the module itself (``uuid`` would otherwise also offer
    ``Enum``, and every module its imports).
    """
    name = module.__name__
    names = getattr(module, "__all__", None)
    own_only = names is None
    denied = _DENIED.get(name, frozenset())
    replaced = _REPLACED.get(name, {})
    exports: dict[str, Any] = {}
    for attr in names if names is not None else dir(module):
        if attr.startswith("_") or attr in denied or not hasattr(module, attr):
            continue
        value = getattr(module, attr)
        if isinstance(value, ModuleType):
            continue
        if own_only and callable(value) and getattr(value, "__module__", None) != name:
            continue
        exports[attr] = replaced.get(attr, value)
    return exports


def module_view(name: str) -> ModuleView:
    view = _views.get(name)
    if view is None:
        view = _views[name] = ModuleView(name, module_exports(importlib.import_module(name)))
    return view


def guarded_import(
    name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
) -> ModuleView:
    """``import`` for scripts: allowed top-level modules only, as read-only views."""
    run = budget.current()
    allowed = run.allowed_modules if run is not None else DEFAULT_ALLOWED_MODULES
    if level != 0:
        raise refuse("relative imports are not allowed")
    if name not in allowed:
        raise refuse(f"import of {name!r} is not allowed (allowed: {', '.join(sorted(allowed))})")
    return module_view(name)
