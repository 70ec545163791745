"""What a sandboxed script sees instead of Python's own operators, builtins and modules.

Three ideas keep it safe:

* No way to the interpreter's internals: attributes starting with ``_`` and
  the frame / code / generator internals are refused, and so are modules,
  frames, code objects and tracebacks as attribute values.
* No way out of the process: ``__import__`` hands out read-only views of a
  few allowed modules, curated to their public, side-effect-free functions.
* No single operation that turns a small input into a huge object: ``*``,
  ``+``, ``**``, ``<<``, ``%``, f-string widths, ``range``, ``bytes(n)``,
  ``str.join``, ``str.ljust`` and friends check the size of their result
  before building it.
"""

from __future__ import annotations

import decimal
import functools
import importlib
import json
import logging
import math
import operator
import random
import re
import statistics
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import CodeType, FrameType, MappingProxyType, ModuleType, TracebackType
from typing import Any

from bpmnlite.errors import BpmnError
from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence
from RestrictedPython.transformer import INSPECT_ATTRIBUTES

from bpmnlite_script import budget
from bpmnlite_script.budget import CHARGE_THRESHOLD, DEFAULT_LIMITS, Limits, Refusal

logger = logging.getLogger("bpmnlite.script")

DEFAULT_ALLOWED_MODULES = frozenset({"math", "datetime", "decimal", "json", "random", "statistics", "string", "uuid"})
"""Modules a sandboxed script may import. ``re`` is not among them: a
backtracking pattern runs in C, where no budget can stop it."""

_MISSING: Any = object()
_SEQUENCES = (str, bytes, bytearray, list, tuple)
_CONTAINERS = (list, tuple, set, frozenset, dict)
_HIDDEN = (ModuleType, FrameType, CodeType, TracebackType)
_BLOCKED_ATTRIBUTES = INSPECT_ATTRIBUTES | {"mro"}
_MAX_PRINT_ARG = 16  # longest json.dumps indent / separator


# ---------------------------------------------------------------------- helpers
def _limits() -> Limits:
    run = budget.current()
    return run.limits if run is not None else DEFAULT_LIMITS


def refuse(reason: str) -> Refusal:
    """A refusal recorded on the current run (so the script cannot catch it for good)."""
    run = budget.current()
    return run.refuse(reason) if run is not None else Refusal(reason)


def _check_size(size: int, what: str) -> None:
    limit = _limits().size
    if size > limit:
        raise refuse(f"{what} would have {size:,} items; the limit is {limit:,}")


def _check_bits(bits: int, what: str) -> None:
    limit = _limits().int_bits
    if bits > limit:
        raise refuse(f"{what} would make an integer of about {bits:,} bits; the limit is {limit:,}")


def _charge(nbytes: int) -> None:
    if nbytes >= CHARGE_THRESHOLD:
        run = budget.current()
        if run is not None:
            run.charge(nbytes)


def _item_size(seq: object) -> int:
    return 1 if isinstance(seq, str | bytes | bytearray) else 8


def text_size(obj: object, limit: int) -> int:
    """About how many characters ``str(obj)`` has, counting no further than ``limit``.

    A list holding one big string a thousand times is small itself but prints
    huge; this walk (without recursion) sees that before ``str`` builds it.
    """
    total = 0
    stack: list[Iterator[Any]] = [iter((obj,))]
    while stack:
        item = next(stack[-1], _MISSING)
        if item is _MISSING:
            stack.pop()
            continue
        kind = type(item)
        if kind is str or kind is bytes or kind is bytearray:
            total += len(item) + 3
        elif kind is int:
            total += item.bit_length() // 3 + 2
        elif kind is dict:
            total += 4 * len(item) + 2
            stack.append(_dict_parts(item))
        elif isinstance(item, _CONTAINERS):
            total += 2 * len(item) + 2
            stack.append(iter(item))
        else:
            total += 32
        if total > limit:
            break
    return total


def _dict_parts(d: dict[Any, Any]) -> Iterator[Any]:
    for key, value in d.items():
        yield key
        yield value


def _check_text(obj: object) -> None:
    if isinstance(obj, _CONTAINERS):
        limit = _limits().size
        size = text_size(obj, limit)
        if size > limit:
            raise refuse(f"converting a {type(obj).__name__} to text would make about {size:,} characters; "
                         f"the limit is {limit:,}")


_SPEC_NUMBER = re.compile(r"\d+")


def _check_spec(spec: str) -> None:
    """Widths and precisions in a format spec allocate that many characters."""
    limit = _limits().size
    for number in _SPEC_NUMBER.findall(spec):
        if len(number) > 9 or int(number) > limit:
            raise refuse(f"format width or precision {number} exceeds the limit of {limit:,}")


# ---------------------------------------------------------------------- operators
def guarded_add(a: Any, b: Any) -> Any:
    """``a + b``; refuses concatenations beyond the size limit (doubling a string in a loop)."""
    if isinstance(a, _SEQUENCES) and isinstance(b, _SEQUENCES):
        size = len(a) + len(b)
        _check_size(size, f"'+' on a {type(a).__name__}")
        result = a + b
        _charge(size * _item_size(a))
        return result
    return a + b


def guarded_mul(a: Any, b: Any) -> Any:
    """``a * b``; refuses ``'a' * 10**10`` and integers beyond the bit limit."""
    if isinstance(a, int) and isinstance(b, int):
        _check_bits(a.bit_length() + b.bit_length(), "'*'")
        return a * b
    if isinstance(a, _SEQUENCES) and isinstance(b, int):
        seq, times = a, b
    elif isinstance(b, _SEQUENCES) and isinstance(a, int):
        seq, times = b, a
    else:
        return a * b
    size = len(seq) * max(times, 0)
    _check_size(size, f"'*' on a {type(seq).__name__}")
    result = a * b
    _charge(size * _item_size(seq))
    return result


def guarded_pow(a: Any, b: Any, mod: Any = None) -> Any:
    """``a ** b`` and ``pow(a, b, mod)``; refuses ``10 ** 10 ** 10`` before computing it."""
    if isinstance(a, int) and isinstance(b, int):
        if mod is None:
            if b > 0 and abs(a) > 1:
                _check_bits(abs(a).bit_length() * b, "'**'")
        elif isinstance(mod, int) and b.bit_length() * mod.bit_length() > 2**26:
            raise refuse("pow() with this exponent and modulus would run too long")
    return pow(a, b) if mod is None else pow(a, b, mod)


def guarded_lshift(a: Any, b: Any) -> Any:
    """``a << b``; refuses ``1 << 10**10``."""
    if isinstance(a, int) and isinstance(b, int) and b > 0 and a:
        _check_bits(a.bit_length() + b, "'<<'")
    return a << b


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


def guarded_mod(a: Any, b: Any) -> Any:
    """``a % b``; for %-formatting, checks widths and the size of the arguments."""
    if isinstance(a, str | bytes | bytearray):
        for width, precision in _PERCENT_SPEC.findall(a if isinstance(a, str) else a.decode("latin-1")):
            if "*" in (width, precision):
                raise refuse("'*' widths in %-formatting are not allowed")
            _check_spec(width + "." + precision)
        args = b if isinstance(b, tuple) else (b,)
        for arg in args:
            _check_text(arg)
    return a % b


_INPLACE: dict[str, tuple[Callable[[Any, Any], Any] | None, Callable[[Any, Any], Any]]] = {
    "+=": (guarded_add, operator.iadd),
    "-=": (None, operator.isub),
    "*=": (guarded_mul, operator.imul),
    "/=": (None, operator.itruediv),
    "//=": (None, operator.ifloordiv),
    "%=": (guarded_mod, operator.imod),
    "**=": (guarded_pow, operator.ipow),
    "<<=": (guarded_lshift, operator.ilshift),
    ">>=": (None, operator.irshift),
    "|=": (None, operator.ior),
    "^=": (None, operator.ixor),
    "&=": (None, operator.iand),
    "@=": (None, operator.imatmul),
}


def guarded_inplace(op: str, x: Any, y: Any) -> Any:
    """``x op= y``; lists stay changed in place, as in plain Python."""
    guard, inplace = _INPLACE[op]
    if guard is None:
        return inplace(x, y)
    if isinstance(x, list | bytearray) and op in ("+=", "*="):
        if op == "+=":
            size = len(x) + len(y) if hasattr(y, "__len__") else 0
        else:
            size = len(x) * max(y, 0) if isinstance(y, int) else 0
        _check_size(size, f"'{op}' on a {type(x).__name__}")
        result = inplace(x, y)
        _charge(size * _item_size(x))
        return result
    return guard(x, y)


def guarded_write(obj: Any) -> Any:
    """Allow item assignment into the script's own dicts, lists and bytearrays, nothing else."""
    if type(obj) in (dict, list, bytearray):
        return obj
    raise refuse(f"changing attributes or items of a {type(obj).__name__} object is not allowed")


def guarded_augitem(obj: Any, key: Any, op: str, value: Any) -> None:
    """``obj[key] op= value``, which RestrictedPython alone refuses."""
    target = guarded_write(obj)
    target[key] = guarded_inplace(op, target[key], value)


def guarded_apply(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)


def guarded_format(value: Any, conversion: int = -1, spec: str = "") -> str:
    """One f-string field (``f"{value!r:>10}"``): width checked, containers size-checked."""
    _check_spec(spec)
    _check_text(value)
    if conversion == ord("r"):
        value = repr(value)
    elif conversion == ord("s"):
        value = str(value)
    elif conversion == ord("a"):
        value = ascii(value)
    return format(value, spec)


# ---------------------------------------------------------------------- attributes
class GuardedType:
    """Stands in for a built-in type whose constructor needs a size check.

    ``isinstance``, ``issubclass`` and attribute access (``str.join``) see the
    real type; calling it runs the check first.
    """

    __slots__ = ("real", "_make")

    def __init__(self, real: type, make: Callable[..., Any]) -> None:
        self.real = real
        self._make = make

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._make(*args, **kwargs)

    def __repr__(self) -> str:
        return repr(self.real)


def guarded_getattr(obj: Any, name: str, default: Any = _MISSING) -> Any:
    """``obj.name`` (and ``getattr``): no private names, no interpreter internals, no modules."""
    if type(name) is not str:
        raise TypeError("attribute name must be a string")
    if name[:1] == "_" or name in _BLOCKED_ATTRIBUTES:
        raise refuse(f"access to attribute {name!r} is not allowed")
    if type(obj) is GuardedType:
        obj = obj.real
    if isinstance(obj, _HIDDEN):
        raise refuse(f"access to attributes of {type(obj).__name__} objects is not allowed")
    if type(obj) is type:
        unbound = _METHOD_GUARDS.get(obj)
        if unbound is not None and name in unbound:
            return unbound[name]
    else:
        methods = _METHOD_GUARDS.get(type(obj))
        if methods is not None and name in methods:
            return functools.partial(methods[name], obj)
    try:
        value = getattr(obj, name)
    except AttributeError:
        if default is _MISSING:
            raise
        return default
    if isinstance(value, _HIDDEN):
        raise refuse(f"access to {type(value).__name__} objects is not allowed")
    return value


def guarded_hasattr(obj: Any, name: str) -> bool:
    try:
        guarded_getattr(obj, name)
    except AttributeError:
        return False
    return True


def _refused_method(what: str) -> Callable[..., Any]:
    def method(*args: Any, **kwargs: Any) -> Any:
        raise refuse(f"{what} is not allowed; use an f-string")

    return method


def _join(sep: Any, parts: Iterable[Any]) -> Any:
    items = list(parts)
    size = sum(len(p) for p in items if isinstance(p, str | bytes | bytearray)) + len(sep) * max(len(items) - 1, 0)
    _check_size(size, "join()")
    result = sep.join(items)
    _charge(size)
    return result


def _replace(s: Any, old: Any, new: Any, count: int = -1) -> Any:
    hits = s.count(old) if count < 0 else min(count, s.count(old))
    _check_size(len(s) + hits * (len(new) - len(old)), "replace()")
    return s.replace(old, new, count)


def _padder(name: str) -> Callable[..., Any]:
    def pad(s: Any, width: int, *args: Any) -> Any:
        _check_size(width, f"{name}()")
        return getattr(s, name)(width, *args)

    return pad


def _expandtabs(s: Any, tabsize: int = 8) -> Any:
    _check_size(len(s) + s.count("\t" if isinstance(s, str) else b"\t") * max(tabsize, 0), "expandtabs()")
    return s.expandtabs(tabsize)


def _translate(s: str, table: Any) -> str:
    if not isinstance(table, dict | list | tuple):
        raise refuse("str.translate() tables must be dicts or lists")
    values = table.values() if isinstance(table, dict) else table
    longest = max((len(v) for v in values if isinstance(v, str)), default=1)
    _check_size(len(s) * max(longest, 1), "translate()")
    return s.translate(table)


def _extend(seq: Any, items: Iterable[Any]) -> None:
    if hasattr(items, "__len__"):
        _check_size(len(seq) + len(items), "extend()")  # type: ignore[arg-type]
    seq.extend(items)


def _to_bytes(n: int, length: int = 1, *args: Any, **kwargs: Any) -> bytes:
    _check_size(length, "int.to_bytes()")
    return n.to_bytes(length, *args, **kwargs)


def _samples(dist: statistics.NormalDist, n: int, *, seed: Any = None) -> list[float]:
    _check_size(n, "NormalDist.samples()")
    return dist.samples(n, seed=seed)


_TEXT_METHODS: dict[str, Callable[..., Any]] = {
    "join": _join,
    "replace": _replace,
    "expandtabs": _expandtabs,
    **{name: _padder(name) for name in ("ljust", "rjust", "center", "zfill")},
}
_METHOD_GUARDS: dict[type, dict[str, Callable[..., Any]]] = {
    str: {
        **_TEXT_METHODS,
        "translate": _translate,
        "format": _refused_method("str.format()"),
        "format_map": _refused_method("str.format_map()"),
    },
    bytes: _TEXT_METHODS,
    bytearray: {**_TEXT_METHODS, "extend": _extend},
    list: {"extend": _extend},
    int: {"to_bytes": _to_bytes},
    statistics.NormalDist: {"samples": _samples},
}


# ---------------------------------------------------------------------- builtins
def _make_range(*args: Any) -> range:
    r = range(*args)
    try:
        size = len(r)
    except OverflowError:
        size = 2**63
    _check_size(size, "range()")
    return r


def _sized_bytes(kind: type) -> Callable[..., Any]:
    def make(source: Any = b"", *args: Any) -> Any:
        if isinstance(source, int):
            _check_size(source, f"{kind.__name__}()")
        return kind(source, *args)

    return make


def _make_str(*args: Any, **kwargs: Any) -> str:
    if len(args) == 1 and not kwargs:
        _check_text(args[0])
    return str(*args, **kwargs)


def guarded_iter(obj: Any, *sentinel: Any) -> Iterator[Any]:
    """``iter(obj)`` only: ``iter(int, 1)`` would feed C loops such as ``sum`` forever, out of the budget's reach."""
    if sentinel:
        raise refuse("iter(callable, sentinel) is not allowed")
    return iter(obj)


def guarded_repr(obj: Any) -> str:
    _check_text(obj)
    return repr(obj)


def guarded_ascii(obj: Any) -> str:
    _check_text(obj)
    return ascii(obj)


def guarded_builtin_format(value: Any, spec: str = "") -> str:
    return guarded_format(value, -1, spec)


def guarded_sum(iterable: Iterable[Any], /, start: Any = 0) -> Any:
    """``sum`` of numbers only: summing lists or strings in C copies them quadratically."""
    if isinstance(start, _SEQUENCES):
        raise refuse("sum() of sequences is not allowed; use str.join() or a loop")
    return sum(iterable, start)


def _unwrap(classinfo: Any) -> Any:
    if type(classinfo) is GuardedType:
        return classinfo.real
    if type(classinfo) is tuple:
        return tuple(_unwrap(c) for c in classinfo)
    return classinfo


def guarded_isinstance(obj: Any, classinfo: Any) -> bool:
    return isinstance(obj, _unwrap(classinfo))


def guarded_issubclass(cls: Any, classinfo: Any) -> bool:
    return issubclass(_unwrap(cls), _unwrap(classinfo))


def _refused_builtin(name: str, hint: str = "") -> Callable[..., Any]:
    def builtin(*args: Any, **kwargs: Any) -> Any:
        raise refuse(f"{name}() is not allowed in sandboxed scripts{hint}")

    builtin.__name__ = name
    return builtin


def _make_decimal(value: Any = "0", *args: Any) -> decimal.Decimal:
    """A Decimal whose exponent fits the int limit: ``int(Decimal('1e999999'))`` runs for half a minute."""
    result = decimal.Decimal(value, *args)
    digits = int(_limits().int_bits * 0.30103)
    if result.is_finite() and abs(result.adjusted()) > digits:
        raise refuse(f"Decimal exponent {result.adjusted():,} exceeds the limit of {digits:,}")
    return result


@functools.lru_cache(maxsize=8)
def decimal_context(limits: Limits) -> decimal.Context:
    """The decimal context scripts run in: default precision, exponents bounded like integers."""
    digits = int(limits.int_bits * 0.30103)
    return decimal.Context(prec=28, Emax=digits, Emin=-digits)


_SAFE_EXCEPTIONS = (
    ArithmeticError, AssertionError, AttributeError, BaseException, EOFError, Exception, FloatingPointError,
    ImportError, IndexError, KeyError, LookupError, MemoryError, NameError, NotImplementedError, OSError,
    OverflowError, RecursionError, RuntimeError, StopIteration, TypeError, UnboundLocalError,
    UnicodeDecodeError, UnicodeEncodeError, UnicodeError, ValueError, Warning, ZeroDivisionError,
)

SAFE_BUILTINS: dict[str, Any] = {
    "None": None, "True": True, "False": False, "Ellipsis": Ellipsis,
    **{cls.__name__: cls for cls in _SAFE_EXCEPTIONS},
    **{f.__name__: f for f in (
        abs, all, any, bin, bool, callable, chr, complex, dict, divmod, enumerate, filter, float, frozenset,
        hash, hex, int, len, list, map, max, min, next, oct, ord, reversed, round, set, slice, sorted,
        tuple, zip,
    )},
    "str": GuardedType(str, _make_str),
    "bytes": GuardedType(bytes, _sized_bytes(bytes)),
    "bytearray": GuardedType(bytearray, _sized_bytes(bytearray)),
    "range": GuardedType(range, _make_range),
    "iter": guarded_iter,
    "repr": guarded_repr,
    "ascii": guarded_ascii,
    "format": guarded_builtin_format,
    "sum": guarded_sum,
    "pow": guarded_pow,
    "getattr": guarded_getattr,
    "hasattr": guarded_hasattr,
    "isinstance": guarded_isinstance,
    "issubclass": guarded_issubclass,
    "type": _refused_builtin("type", "; use isinstance()"),
    **{name: _refused_builtin(name) for name in (
        "eval", "exec", "compile", "open", "globals", "locals", "vars", "dir", "input", "breakpoint", "help",
        "memoryview", "object", "super", "classmethod", "staticmethod", "property", "setattr", "delattr",
        "exit", "quit", "id",
    )},
}


# ---------------------------------------------------------------------- modules
class ModuleView:
    """A read-only stand-in for an allowed module, holding only its curated public names.

    The real module never reaches the script: ``json.codecs``, ``uuid.os`` or
    ``statistics.sys`` would lead straight out of the sandbox.
    """

    __slots__ = ("__dict__", "_module_name")

    def __init__(self, name: str, exports: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_module_name", name)
        self.__dict__.update(exports)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"module {self._module_name!r} is read-only in scripts")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"module {self._module_name!r} is read-only in scripts")

    def __repr__(self) -> str:
        return f"<module {self._module_name!r} (sandboxed)>"


def _factorial(n: int) -> int:
    _check_bits(n * max(n.bit_length(), 1), "factorial()")
    return math.factorial(n)


def _comb(n: int, k: int) -> int:
    _check_bits(n, "comb()")
    return math.comb(n, k)


def _perm(n: int, k: int | None = None) -> int:
    _check_bits((n if k is None else k) * max(n.bit_length(), 1), "perm()")
    return math.perm(n, k)


def _prod(iterable: Iterable[Any], /, *, start: Any = 1) -> Any:
    result = start
    for item in iterable:
        result = guarded_mul(result, item)
    return result


def _getrandbits(k: int) -> int:
    _check_bits(k, "getrandbits()")
    return random.getrandbits(k)


def _randbytes(n: int) -> bytes:
    _check_size(n, "randbytes()")
    return random.randbytes(n)


def _choices(population: Any, weights: Any = None, *, cum_weights: Any = None, k: int = 1) -> list[Any]:
    _check_size(k, "choices()")
    return random.choices(population, weights, cum_weights=cum_weights, k=k)


def _quantiles(data: Iterable[Any], *, n: int = 4, method: str = "exclusive") -> list[Any]:
    _check_size(n, "quantiles()")
    return statistics.quantiles(data, n=n, method=method)


def _json_dumps(obj: Any, *, indent: Any = None, separators: Any = None, **kwargs: Any) -> str:
    if "cls" in kwargs:
        raise refuse("json.dumps(cls=...) is not allowed")
    if isinstance(indent, int) and indent > _MAX_PRINT_ARG or isinstance(indent, str) and len(indent) > _MAX_PRINT_ARG:
        raise refuse(f"json.dumps() indent is limited to {_MAX_PRINT_ARG}")
    if separators is not None and any(len(s) > _MAX_PRINT_ARG for s in separators):
        raise refuse(f"json.dumps() separators are limited to {_MAX_PRINT_ARG} characters")
    _check_text(obj)
    return json.dumps(obj, indent=indent, separators=separators, **kwargs)


def _json_loads(s: Any, **kwargs: Any) -> Any:
    if "cls" in kwargs:
        raise refuse("json.loads(cls=...) is not allowed")
    return json.loads(s, **kwargs)


_REPLACED: dict[str, dict[str, Any]] = {
    "math": {"factorial": _factorial, "comb": _comb, "perm": _perm, "prod": _prod},
    "random": {"getrandbits": _getrandbits, "randbytes": _randbytes, "choices": _choices},
    "statistics": {"quantiles": _quantiles},
    "json": {"dumps": _json_dumps, "loads": _json_loads},
    "decimal": {"Decimal": GuardedType(decimal.Decimal, _make_decimal)},
}
# Names that change state shared with the engine, reach files or processes, or
# build objects without the sandbox's size checks.
_DENIED: dict[str, frozenset[str]] = {
    "random": frozenset({"seed", "setstate", "getstate", "Random", "SystemRandom"}),
    "decimal": frozenset({"Context", "localcontext", "getcontext", "setcontext",
                          "DefaultContext", "BasicContext", "ExtendedContext"}),
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


SAFE_BUILTINS["__import__"] = guarded_import


# ---------------------------------------------------------------------- print
class ScriptPrinter:
    """Receives ``print()`` calls of a script and logs them; ``printed`` returns the text."""

    def __init__(self, getattr_: Any = None) -> None:
        self._parts: list[str] = []
        self._size = 0

    def _call_print(self, *objects: Any, sep: str | None = " ", end: str | None = "\n",
                    file: Any = None, flush: bool = False) -> None:
        if file is not None:
            raise refuse("print(file=...) is not allowed")
        text = (" " if sep is None else sep).join(_make_str(o) for o in objects) + ("\n" if end is None else end)
        self._size += len(text)
        _check_size(self._size, "printed text")
        self._parts.append(text)
        run = budget.current()
        logger.debug("script of element %r printed: %s", run.element_id if run else None, text.rstrip("\n"))

    def __call__(self) -> str:
        return "".join(self._parts)


def check_run() -> None:
    """First statement of every except and finally block of a script.

    Re-raises a refusal the script tried to catch, and stops script code that
    runs after its run ended (a generator's ``finally`` run by the garbage
    collector), where no budget would apply.
    """
    run = budget.current()
    if run is None:
        raise Refusal("script code ran outside of its script task", stopped=True)
    run.check()


BASE_GLOBALS: Mapping[str, Any] = MappingProxyType({
    "__builtins__": SAFE_BUILTINS,
    "__name__": "<script>",
    "_getattr_": guarded_getattr,
    "_getitem_": operator.getitem,
    "_getiter_": iter,
    "_write_": guarded_write,
    "_inplacevar_": guarded_inplace,
    "_augitem_": guarded_augitem,
    "_apply_": guarded_apply,
    "_unpack_sequence_": guarded_unpack_sequence,
    "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
    "_print_": ScriptPrinter,
    "_add_": guarded_add,
    "_mul_": guarded_mul,
    "_pow_": guarded_pow,
    "_lshift_": guarded_lshift,
    "_mod_": guarded_mod,
    "_format_": guarded_format,
    "_check_": check_run,
    "BpmnError": BpmnError,
})
"""The names every sandboxed script starts with, before its variables."""
