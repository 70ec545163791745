"""The builtins of a sandboxed script, and the hidden names its compiled code calls.

Types whose constructor can build a huge object (``str``, ``bytes``,
``range``) are ``GuardedType`` stand-ins; functions that reach outside the
sandbox (``open``, ``eval``, ``type``, ``globals`` ...) are replaced by ones
that refuse with a clear message instead of a ``NameError``.
"""

from __future__ import annotations

import builtins
import operator
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence

from bpmnlite.errors import BpmnError
from bpmnlite_script.guards import (
    SEQUENCES,
    GuardedType,
    ScriptPrinter,
    check_run,
    check_size,
    check_text,
    guarded_add,
    guarded_apply,
    guarded_augitem,
    guarded_format,
    guarded_getattr,
    guarded_hasattr,
    guarded_inplace,
    guarded_lshift,
    guarded_mod,
    guarded_mul,
    guarded_pow,
    guarded_write,
    make_str,
    refuse,
)
from bpmnlite_script.modules import guarded_import


def _make_range(*args: Any) -> range:
    r = range(*args)
    try:
        size = len(r)
    except OverflowError:
        size = 2**63
    check_size(size, "range()")
    return r


def _sized_bytes(kind: type) -> Callable[..., Any]:
    def make(source: Any = b"", *args: Any) -> Any:
        if isinstance(source, int):
            check_size(source, f"{kind.__name__}()")
        return kind(source, *args)

    return make


def guarded_iter(obj: Any, *sentinel: Any) -> Iterator[Any]:
    """``iter(obj)`` only: ``iter(int, 1)`` would feed C loops such as ``sum`` forever, out of the budget's reach."""
    if sentinel:
        raise refuse("iter(callable, sentinel) is not allowed")
    return iter(obj)


def guarded_repr(obj: Any) -> str:
    check_text(obj)
    return repr(obj)


def guarded_ascii(obj: Any) -> str:
    check_text(obj)
    return ascii(obj)


def guarded_builtin_format(value: Any, spec: str = "") -> str:
    return guarded_format(value, -1, spec)


def guarded_sum(iterable: Iterable[Any], /, start: Any = 0) -> Any:
    """``sum`` of numbers only: summing lists or strings in C copies them quadratically."""
    if isinstance(start, SEQUENCES):
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


# Builtins that are safe as they are: no I/O, no introspection, no unbounded work in C.
_PLAIN = """
    abs all any bin bool callable chr complex dict divmod enumerate filter float frozenset hash hex int len list
    map max min next oct ord reversed round set slice sorted tuple zip
    ArithmeticError AssertionError AttributeError BaseException EOFError Exception FloatingPointError ImportError
    IndexError KeyError LookupError MemoryError NameError NotImplementedError OSError OverflowError RecursionError
    RuntimeError StopIteration TypeError UnboundLocalError UnicodeDecodeError UnicodeEncodeError UnicodeError
    ValueError Warning ZeroDivisionError
""".split()
# Builtins that would reach outside the sandbox: calling them raises a clear refusal.
_REFUSED = """
    eval exec compile open globals locals vars dir input breakpoint help memoryview object super classmethod
    staticmethod property setattr delattr exit quit id
""".split()

SAFE_BUILTINS: dict[str, Any] = {
    "None": None,
    "True": True,
    "False": False,
    "Ellipsis": Ellipsis,
    **{name: getattr(builtins, name) for name in _PLAIN},
    "str": GuardedType(str, make_str),
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
    **{name: _refused_builtin(name) for name in _REFUSED},
}


# RestrictedPython's compiler rewrites code to call these; keeping them among the
# builtins leaves the script's namespace holding nothing but its variables.
SAFE_BUILTINS.update(
    {
        "__import__": guarded_import,
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
    }
)
