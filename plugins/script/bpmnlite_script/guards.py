"""The guarded operations RestrictedPython's compiler routes a sandboxed script through.

Two ideas keep it safe:

* No way to the interpreter's internals: attributes starting with ``_`` and
  the frame / code / generator internals are refused, and so are modules,
  frames, code objects and tracebacks as attribute values.
* No single operation that turns a small input into a huge object: ``*``,
  ``+``, ``**``, ``<<``, ``%``, f-string widths, ``str.join``, ``str.ljust``
  and friends check the size of their result before building it.
"""

from __future__ import annotations

import functools
import logging
import operator
import re
import statistics
from collections.abc import Callable, Iterable, Iterator
from types import CodeType, FrameType, ModuleType, TracebackType
from typing import Any

from RestrictedPython.transformer import INSPECT_ATTRIBUTES

from bpmnlite_script import budget
from bpmnlite_script.budget import CHARGE_THRESHOLD, DEFAULT_LIMITS, Limits, Refusal

logger = logging.getLogger("bpmnlite.script")

_MISSING: Any = object()
SEQUENCES = (str, bytes, bytearray, list, tuple)
_CONTAINERS = (list, tuple, set, frozenset, dict)
_HIDDEN = (ModuleType, FrameType, CodeType, TracebackType)
_BLOCKED_ATTRIBUTES = INSPECT_ATTRIBUTES | {"mro"}


# ---------------------------------------------------------------------- helpers
def limits() -> Limits:
    run = budget.current()
    return run.limits if run is not None else DEFAULT_LIMITS


def refuse(reason: str) -> Refusal:
    """A refusal recorded on the current run (so the script cannot catch it for good)."""
    run = budget.current()
    return run.refuse(reason) if run is not None else Refusal(reason)


def check_size(size: int, what: str) -> None:
    limit = limits().size
    if size > limit:
        raise refuse(f"{what} would have {size:,} items; the limit is {limit:,}")


def check_bits(bits: int, what: str) -> None:
    limit = limits().int_bits
    if bits > limit:
        raise refuse(f"{what} would make an integer of about {bits:,} bits; the limit is {limit:,}")


def tick() -> None:
    """Count one step of a guard's loop against the run's budget."""
    run = budget.current()
    if run is not None:
        run.tick()


def charge(nbytes: int) -> None:
    if nbytes >= CHARGE_THRESHOLD:
        run = budget.current()
        if run is not None:
            run.charge(nbytes)


def item_size(seq: object) -> int:
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


def check_text(obj: object) -> None:
    if isinstance(obj, _CONTAINERS):
        limit = limits().size
        size = text_size(obj, limit)
        if size > limit:
            raise refuse(f"converting a {type(obj).__name__} to text would make more than {limit:,} characters")


_SPEC_NUMBER = re.compile(r"\d+")


def _check_spec(spec: str) -> None:
    """Widths and precisions in a format spec allocate that many characters."""
    limit = limits().size
    for number in _SPEC_NUMBER.findall(spec):
        if len(number) > 9 or int(number) > limit:
            raise refuse(f"format width or precision {number} exceeds the limit of {limit:,}")


# ---------------------------------------------------------------------- operators
def guarded_add(a: Any, b: Any) -> Any:
    """``a + b``; refuses concatenations beyond the size limit (doubling a string in a loop)."""
    if isinstance(a, SEQUENCES) and isinstance(b, SEQUENCES):
        size = len(a) + len(b)
        check_size(size, f"'+' on a {type(a).__name__}")
        result = operator.add(a, b)
        charge(size * item_size(a))
        return result
    return a + b


def guarded_mul(a: Any, b: Any) -> Any:
    """``a * b``; refuses ``'a' * 10**10`` and integers beyond the bit limit."""
    if isinstance(a, int) and isinstance(b, int):
        check_bits(a.bit_length() + b.bit_length(), "'*'")
        return a * b
    if isinstance(a, SEQUENCES) and isinstance(b, int):
        seq, times = a, b
    elif isinstance(b, SEQUENCES) and isinstance(a, int):
        seq, times = b, a
    else:
        return a * b
    size = len(seq) * max(times, 0)
    check_size(size, f"'*' on a {type(seq).__name__}")
    result = a * b
    charge(size * item_size(seq))
    return result


def guarded_pow(a: Any, b: Any, mod: Any = None) -> Any:
    """``a ** b`` and ``pow(a, b, mod)``; refuses ``10 ** 10 ** 10`` before computing it."""
    if isinstance(a, int) and isinstance(b, int):
        if mod is None:
            if b > 0 and abs(a) > 1:
                check_bits(abs(a).bit_length() * b, "'**'")
        elif isinstance(mod, int) and b.bit_length() * mod.bit_length() > 2**26:
            raise refuse("pow() with this exponent and modulus would run too long")
    return pow(a, b) if mod is None else pow(a, b, mod)


def guarded_lshift(a: Any, b: Any) -> Any:
    """``a << b``; refuses ``1 << 10**10``."""
    if isinstance(a, int) and isinstance(b, int) and b > 0 and a:
        check_bits(a.bit_length() + b, "'<<'")
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
            check_text(arg)
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
    if isinstance(x, list | bytearray) and op in ("+=", "*="):
        if op == "+=":
            size = len(x) + len(y) if hasattr(y, "__len__") else 0
        else:
            size = len(x) * max(y, 0) if isinstance(y, int) else 0
        check_size(size, f"'{op}' on a {type(x).__name__}")
        result = inplace(x, y)
        charge(size * item_size(x))
        return result
    if guard is None or (op == "+=" and not isinstance(x, SEQUENCES)):
        return inplace(x, y)
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
    check_text(value)
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
    check_size(size, "join()")
    result = sep.join(items)
    charge(size)
    return result


def _replace(s: Any, old: Any, new: Any, count: int = -1) -> Any:
    hits = s.count(old) if count < 0 else min(count, s.count(old))
    check_size(len(s) + hits * (len(new) - len(old)), "replace()")
    return s.replace(old, new, count)


def _padder(name: str) -> Callable[..., Any]:
    def pad(s: Any, width: int, *args: Any) -> Any:
        check_size(width, f"{name}()")
        return getattr(s, name)(width, *args)

    return pad


def _expandtabs(s: Any, tabsize: int = 8) -> Any:
    check_size(len(s) + s.count("\t" if isinstance(s, str) else b"\t") * max(tabsize, 0), "expandtabs()")
    return s.expandtabs(tabsize)


def _translate(s: str, table: Any) -> str:
    if not isinstance(table, dict | list | tuple):
        raise refuse("str.translate() tables must be dicts or lists")
    values = table.values() if isinstance(table, dict) else table
    longest = max((len(v) for v in values if isinstance(v, str)), default=1)
    check_size(len(s) * max(longest, 1), "translate()")
    return s.translate(table)


def _extend(seq: Any, items: Iterable[Any]) -> None:
    if hasattr(items, "__len__"):
        check_size(len(seq) + len(items), "extend()")  # type: ignore[arg-type]
    seq.extend(items)


def _to_bytes(n: int, length: int = 1, *args: Any, **kwargs: Any) -> bytes:
    check_size(length, "int.to_bytes()")
    return n.to_bytes(length, *args, **kwargs)


def _samples(dist: statistics.NormalDist, n: int, *, seed: Any = None) -> list[float]:
    check_size(n, "NormalDist.samples()")
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


def make_str(*args: Any, **kwargs: Any) -> str:
    """``str()`` for scripts: containers are size-checked before they are converted."""
    if len(args) == 1 and not kwargs:
        check_text(args[0])
    return str(*args, **kwargs)


# ---------------------------------------------------------------------- print
class ScriptPrinter:
    """Receives ``print()`` calls of a script and logs them; ``printed`` returns the text."""

    def __init__(self, getattr_: Any = None) -> None:
        self._parts: list[str] = []
        self._size = 0

    def _call_print(
        self, *objects: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None, flush: bool = False
    ) -> None:
        if file is not None:
            raise refuse("print(file=...) is not allowed")
        text = (" " if sep is None else sep).join(make_str(o) for o in objects) + ("\n" if end is None else end)
        self._size += len(text)
        check_size(self._size, "printed text")
        self._parts.append(text)
        run = budget.current()
        logger.debug("script of element %r printed: %s", run.element_id if run else None, text.rstrip("\n"))

    def __call__(self) -> str:
        return "".join(self._parts)


def check_run() -> None:
    """First statement of every except and finally block of a script.

    Re-raises a refusal the script tried to catch, and stops script code that
    runs after its run ended (a generator resumed by someone else), where no
    budget would apply.
    """
    run = budget.current()
    if run is None:
        raise Refusal("script code ran outside of its script task", stopped=True)
    run.check()
