"""Safe evaluation of conditions and expressions, in Python and JUEL forms.

Models drawn in Camunda, Flowable or SpiffWorkflow modelers carry conditions
in different languages; one entry point accepts them all, told apart by the
text itself:

* ``${...}`` or ``#{...}`` around the whole text: JUEL (the Java EL dialect of
  Camunda and Flowable), including Flowable's ``var:`` functions;
* ``${...}`` inside other text (``"Hello ${name}!"``): a template, rendered to
  a string;
* anything else: a Python expression.

Every form is parsed once, at compile time, into a Python syntax tree (JUEL by
a small parser of its own that builds that tree, so text inside string
literals is never rewritten), checked against an allow-list, and evaluated by
a simpleeval interpreter that can reach only the variables, a few built-in
functions and the functions the deployment registered. Nothing here calls
``eval`` or ``exec``.

JUEL operators keep Python's semantics on their operands (no EL coercion:
``'1' == 1`` is false and ``+`` joins strings), but follow EL where models rely
on it: ``!`` binds tighter than comparisons, ``a.b`` on a map reads key ``b``,
a missing map key or list index is ``null``, ``empty x`` is true for null and
empty strings or collections, and a few Java methods (``size()``,
``length()``, ``equals()``...) work on strings, lists and maps.
"""

from __future__ import annotations

import ast
import functools
import numbers
import re
import reprlib
import threading
import types
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sized
from typing import Any, Literal, Protocol

from simpleeval import DEFAULT_OPERATORS, DISALLOW_FUNCTIONS, DISALLOW_METHODS, EvalWithCompoundTypes

from bpmnlite import juel
from bpmnlite.errors import BpmnError, ExpressionError

__all__ = [
    "ExecutionView",
    "Expression",
    "compile_expression",
    "compile_template",
    "evaluate",
    "is_truthy_condition",
    "render_template",
]

Language = Literal["python", "juel", "template"]
Functions = Mapping[str, Callable[..., Any]]

# One operation may build a string or collection of at most this many
# characters or elements, so an expression cannot exhaust memory.
MAX_SIZE = 100_000
_MAX_INT_BITS = 65_536


class ExecutionView(Protocol):
    """What ``execution.`` reaches in an expression; the engine supplies it."""

    def getVariable(self, name: str) -> Any: ...  # noqa: N802 - JUEL's spelling

    def setVariable(self, name: str, value: Any) -> None: ...  # noqa: N802

    @property
    def processBusinessKey(self) -> str | None: ...  # noqa: N802

    @property
    def processInstanceId(self) -> str: ...  # noqa: N802

    @property
    def currentActivityId(self) -> str | None: ...  # noqa: N802


class Expression:
    """A compiled expression: parse and checks done, ready to evaluate often.

    Compile once (at deployment) and evaluate per token; evaluation reuses the
    parsed tree and an idle interpreter, so it costs a few microseconds.
    """

    __slots__ = ("source", "language", "_tree", "_runtime", "_juel")

    def __init__(self, source: str, language: Language, tree: ast.expr, runtime: _Runtime) -> None:
        self.source = source
        self.language: Language = language
        self._tree = tree
        self._runtime = runtime
        self._juel = language != "python"

    def evaluate(self, variables: Mapping[str, Any], *, execution: ExecutionView | None = None) -> Any:
        """Return the value of the expression over ``variables`` (never copied).

        Raises:
            ExpressionError: the evaluation failed, whatever the reason; the
                original exception is its ``__cause__``.
        """
        idle = self._runtime.idle
        try:
            evaluator = idle.pop()
        except IndexError:
            evaluator = _Evaluator(self._runtime.functions)
        evaluator.names = variables
        evaluator.execution = execution
        evaluator.juel = self._juel
        try:
            return evaluator._eval(self._tree)
        except (ExpressionError, BpmnError):
            raise  # already explained, or a business error meant for a boundary event
        except Exception as exc:
            raise ExpressionError(_describe(exc), expression=self.source) from exc
        finally:
            evaluator.names = _NO_VARIABLES
            evaluator.execution = None
            idle.append(evaluator)

    def evaluate_condition(self, variables: Mapping[str, Any], *, execution: ExecutionView | None = None) -> bool:
        """Evaluate as a sequence-flow or completion condition (see :func:`is_truthy_condition`)."""
        return is_truthy_condition(self.evaluate(variables, execution=execution), expression=self.source)

    @property
    def python(self) -> str:
        """The checked tree written as Python, to show what a JUEL text became."""
        return ast.unparse(self._tree)

    def __repr__(self) -> str:
        return f"Expression({self.source!r}, language={self.language!r})"


def compile_expression(text: str, *, functions: Functions | None = None) -> Expression:
    """Parse and check ``text``; the language is detected from the text.

    Args:
        text: a Python expression, a whole ``${...}``/``#{...}`` JUEL
            expression, or a template with ``${...}`` parts.
        functions: extra functions callable by name (``ns:name`` for JUEL
            namespaced functions). They are copied: later changes are not seen.

    Raises:
        ExpressionError: a syntax error, or a construct that is not allowed.
    """
    runtime = _runtime_for(functions, text)
    stripped = text.strip()
    if not stripped:
        raise ExpressionError("empty expression", expression=text)
    body = juel.whole_juel(stripped, text)
    if body is not None:
        language: Language = "juel"
        tree = juel.JuelParser(body, len(text) - len(text.lstrip()) + 2, text).parse()
    elif "${" in text or "#{" in text:
        language, tree = "template", juel.parse_template(text)
    else:
        language, tree = "python", _parse_python(stripped, text)
    _check(tree, runtime.functions, text)
    return Expression(text, language, tree, runtime)


def compile_template(text: str, *, functions: Functions | None = None) -> Expression:
    """Compile ``text`` as a template: plain text with ``${...}`` parts; evaluates to a string.

    ``\\${`` stands for a literal ``${``. Unlike :func:`compile_expression`,
    text without any ``${...}`` is returned as it is, never read as Python.
    """
    runtime = _runtime_for(functions, text)
    tree = juel.parse_template(text)
    _check(tree, runtime.functions, text)
    return Expression(text, "template", tree, runtime)


def evaluate(
    text: str,
    variables: Mapping[str, Any],
    *,
    functions: Functions | None = None,
    execution: ExecutionView | None = None,
) -> Any:
    """Compile ``text`` (cached) and evaluate it; see :func:`compile_expression`.

    The cache is keyed by the text and the identity of ``functions``, so pass
    the same mapping object each time and do not change it afterwards.
    """
    return _cached(text, functions, False).evaluate(variables, execution=execution)


def render_template(
    text: str,
    variables: Mapping[str, Any],
    *,
    functions: Functions | None = None,
    execution: ExecutionView | None = None,
) -> str:
    """Replace each ``${...}`` in ``text`` by ``str()`` of its value (``null`` by ``""``)."""
    result: str = _cached(text, functions, True).evaluate(variables, execution=execution)
    return result


def is_truthy_condition(value: Any, *, expression: str | None = None) -> bool:
    """Decide a condition: ``True``/``False`` as they are, ``None`` as false.

    Anything else is refused rather than guessed at, so that a condition like
    ``${status}`` on a string fails loudly instead of always passing.

    Raises:
        ExpressionError: ``value`` is neither a bool nor ``None``.
    """
    if value is True or value is False:
        return value
    if value is None:
        return False
    raise ExpressionError(
        f"a condition must be true or false, got {type(value).__name__} {reprlib.repr(value)}", expression=expression
    )


# ---------------------------------------------------------------- limits


class _Refused(Exception):
    """Raised inside evaluation; becomes an ExpressionError with this message."""


class _UnknownName(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown variable '{name}'")


def _describe(exc: Exception) -> str:
    if isinstance(exc, _Refused | _UnknownName):
        return str(exc)
    if isinstance(exc, ZeroDivisionError):
        return "division by zero"
    if isinstance(exc, KeyError):
        return f"key {exc.args[0]!r} not found" if exc.args else "key not found"
    if isinstance(exc, RecursionError):
        return "expression nested too deeply"
    return f"{type(exc).__name__}: {exc}"


def _exceeds(value: Any, budget: int) -> bool:
    """Whether ``value`` holds more than ``budget`` characters and elements, nested ones included."""
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, list | tuple | set | frozenset):
            total += len(item)
            stack.extend(item)
        elif isinstance(item, dict):
            total += len(item)
            stack.extend(item.values())
        else:
            total += 1
        if total > budget:
            return True
    return False


def _mult(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, str | bytes | list | tuple):
        a, b = b, a
    if isinstance(a, str | bytes | list | tuple) and isinstance(b, int) and b > 1 and _exceeds(a, MAX_SIZE // b):
        raise _Refused(f"result of * would be larger than {MAX_SIZE} items")
    return a * b


def _pow(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1 and a.bit_length() * b > _MAX_INT_BITS:
        raise _Refused(f"result of ** would be too large ({a} ** {b})")
    return a**b


def _lshift(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int) and a and a.bit_length() + b > _MAX_INT_BITS:
        raise _Refused(f"result of << would be too large ({a} << {b})")
    return a << b


def _mod(a: Any, b: Any) -> Any:
    if isinstance(a, str | bytes):
        raise _Refused("string formatting with % is not allowed")
    return a % b


_OPERATORS: dict[type[ast.AST], Callable[..., Any]] = {
    **DEFAULT_OPERATORS,
    ast.Mult: _mult,
    ast.Pow: _pow,
    ast.Mod: _mod,
    ast.LShift: _lshift,
}


def _range(*args: int) -> range:
    result = range(*args)
    if len(result) > MAX_SIZE:
        raise _Refused(f"range() of more than {MAX_SIZE} numbers is not allowed")
    return result


def _sum(items: Any, start: Any = 0) -> Any:
    if not isinstance(start, numbers.Number):
        raise _Refused("sum() adds numbers only")  # summing lists is quadratic
    total: Any = start
    return sum(items, total)


def _round(number: Any, ndigits: int | None = None) -> Any:
    if ndigits is not None and abs(ndigits) > 100:
        raise _Refused("round() to more than 100 digits is not allowed")
    return round(number, ndigits)


def _is_empty(value: Any) -> bool:
    """EL's ``empty``: null, or an empty string, list or map."""
    return value is None or (isinstance(value, Sized) and len(value) == 0)


def _render(*parts: Any) -> str:
    return "".join("" if part is None else str(part) for part in parts)


_BUILTINS: dict[str, Callable[..., Any]] = {
    **{f.__name__: f for f in (len, str, int, float, bool, abs, min, max, sorted, any, all, list, dict, set, tuple)},
    "round": _round,
    "sum": _sum,
    "range": _range,
    # Names no source text can spell; only the JUEL parser emits them.
    "<empty>": _is_empty,
    "<template>": _render,
}

# ----------------------------------------------------- attribute policy

_STR_ATTRS = frozenset(
    "capitalize casefold count encode endswith find index isalnum isalpha isascii isdecimal isdigit "
    "isidentifier islower isnumeric isprintable isspace istitle isupper lower lstrip partition removeprefix "
    "removesuffix rfind rindex rpartition rsplit rstrip split splitlines startswith strip swapcase title upper "
    "replace join center ljust rjust zfill".split()
)
_NUMBER_ATTRS = frozenset("real imag conjugate numerator denominator bit_length is_integer".split())
_SET_ATTRS = frozenset("union intersection difference symmetric_difference issubset issuperset isdisjoint copy".split())
_MAPPING_ATTRS = frozenset({"get", "keys", "values", "items", "copy"})
_ATTRS: dict[type, frozenset[str]] = {
    str: _STR_ATTRS,
    int: _NUMBER_ATTRS,
    float: _NUMBER_ATTRS,
    bool: _NUMBER_ATTRS,
    list: frozenset({"index", "count", "copy"}),
    tuple: frozenset({"index", "count"}),
    set: _SET_ATTRS,
    frozenset: _SET_ATTRS,
    bytes: frozenset({"decode", "hex", "startswith", "endswith", "count", "find"}),
}


def _str_replace(s: str, old: str, new: str, count: int = -1) -> str:
    hits = s.count(old) if count < 0 else min(count, s.count(old))
    if len(s) + hits * (len(new) - len(old)) > MAX_SIZE:
        raise _Refused(f"result of replace() would be longer than {MAX_SIZE}")
    return s.replace(old, new, count)


def _str_join(sep: str, items: Any) -> str:
    items = list(items)
    size = sum(len(x) for x in items if isinstance(x, str)) + len(sep) * max(len(items) - 1, 0)
    if size > MAX_SIZE:
        raise _Refused(f"result of join() would be longer than {MAX_SIZE}")
    return sep.join(items)


def _str_pad(method: str, s: str, width: int, *args: Any) -> str:
    if width > MAX_SIZE:
        raise _Refused(f"{method}() wider than {MAX_SIZE} is not allowed")
    result: str = getattr(s, method)(width, *args)
    return result


# str methods whose output can outgrow their input get a size check first.
_STR_GUARDS: dict[str, Callable[[str], Callable[..., str]]] = {
    "replace": lambda s: functools.partial(_str_replace, s),
    "join": lambda s: functools.partial(_str_join, s),
    "center": lambda s: functools.partial(_str_pad, "center", s),
    "ljust": lambda s: functools.partial(_str_pad, "ljust", s),
    "rjust": lambda s: functools.partial(_str_pad, "rjust", s),
    "zfill": lambda s: functools.partial(_str_pad, "zfill", s),
}

# A few Java methods that Camunda and Flowable models call on values.
_JAVA_METHODS: dict[str, Callable[[Any], Callable[..., Any]]] = {
    "size": lambda v: lambda: len(v),
    "length": lambda v: lambda: len(v),
    "isEmpty": lambda v: lambda: len(v) == 0,
    "contains": lambda v: lambda x: x in v,
    "containsKey": lambda v: lambda k: k in v,
    "equals": lambda v: lambda other: v == other,
    "equalsIgnoreCase": lambda v: lambda other: isinstance(other, str) and v.casefold() == other.casefold(),
    "startsWith": lambda v: v.startswith,
    "endsWith": lambda v: v.endswith,
    "toLowerCase": lambda v: v.lower,
    "toUpperCase": lambda v: v.upper,
    "trim": lambda v: v.strip,
    "indexOf": lambda v: v.find if isinstance(v, str) else lambda x: list(v).index(x) if x in v else -1,
    "substring": lambda v: lambda start, end=None: v[start:end],
    "toString": lambda v: lambda: str(v),
}
_JAVA_RECEIVERS = (str, list, tuple, dict, set, frozenset)


class _ExecutionProxy:
    """What ``execution`` is inside an expression: only these members, never the engine's object."""

    __slots__ = ("_view", "_variables")

    def __init__(self, view: ExecutionView | None, variables: Mapping[str, Any]) -> None:
        self._view = view
        self._variables = variables

    def getVariable(self, name: str) -> Any:  # noqa: N802 - JUEL's spelling
        if self._view is None:
            return self._variables.get(name)
        return self._view.getVariable(name)

    def setVariable(self, name: str, value: Any) -> None:  # noqa: N802
        self._running().setVariable(name, value)

    def hasVariable(self, name: str) -> bool:  # noqa: N802
        return name in self._variables

    @property
    def processBusinessKey(self) -> str | None:  # noqa: N802
        return self._running().processBusinessKey

    @property
    def processInstanceId(self) -> str:  # noqa: N802
        return self._running().processInstanceId

    @property
    def currentActivityId(self) -> str | None:  # noqa: N802
        return self._running().currentActivityId

    def _running(self) -> ExecutionView:
        if self._view is None:
            raise _Refused("'execution' is only available while a process instance runs")
        return self._view


_ATTRS[_ExecutionProxy] = frozenset(
    {"getVariable", "setVariable", "hasVariable", "processBusinessKey", "processInstanceId", "currentActivityId"}
)
_OPAQUE = (types.ModuleType, type, functools.partial)


# ------------------------------------------------------------- evaluator

_NO_VARIABLES: Mapping[str, Any] = types.MappingProxyType({})
_VAR_FUNCTIONS = tuple(
    "get getOrDefault exists isEmpty isNotEmpty equals notEquals contains containsAny "
    "lowerThan lowerThanOrEquals greaterThan greaterThanOrEquals".split()
)


class _Evaluator(EvalWithCompoundTypes):  # type: ignore[misc]
    """simpleeval, narrowed: the tree is pre-checked, names are the variables, attributes are allow-listed.

    One instance evaluates one expression at a time; idle instances wait in
    their runtime's pool, which keeps evaluation thread-safe and re-entrant.
    """

    def __init__(self, functions: Mapping[str, Callable[..., Any]]) -> None:
        table = dict(functions)
        table.update({f"var:{name}": getattr(self, f"_var_{name}") for name in _VAR_FUNCTIONS})
        super().__init__(operators=_OPERATORS, functions={}, names=_NO_VARIABLES)
        self.functions = table  # set afterwards: simpleeval's own check needs hashable functions
        self.names: Mapping[str, Any] = _NO_VARIABLES
        self.execution: ExecutionView | None = None
        self.juel = False

    def _eval(self, node: ast.AST) -> Any:
        # The tree was checked at compile time, so no per-node safety scan here.
        return self.nodes[type(node)](node)

    @staticmethod
    def _eval_constant(node: ast.Constant) -> Any:
        return node.value

    def _eval_name(self, node: ast.Name) -> Any:
        name = node.id
        if name == "execution":
            return _ExecutionProxy(self.execution, self.names)
        try:
            return self.names[name]
        except KeyError:
            pass
        if name in self.functions:
            return self.functions[name]
        raise _UnknownName(name)

    def _eval_call(self, node: ast.Call) -> Any:
        if type(node.func) is ast.Name:
            func = self.functions[node.func.id]
        else:
            func = self._eval(node.func)
            try:
                forbidden = func in DISALLOW_FUNCTIONS
            except TypeError:
                forbidden = False
            if forbidden or isinstance(func, type):
                raise _Refused(f"calling {func!r} is not allowed")
        args = [self._eval(arg) for arg in node.args]
        if node.keywords:
            return func(*args, **{kw.arg: self._eval(kw.value) for kw in node.keywords if kw.arg})
        return func(*args)

    def _eval_subscript(self, node: ast.Subscript) -> Any:
        container = self._eval(node.value)
        key = self._eval(node.slice)
        if container is None and self.juel:
            return None
        if isinstance(container, _OPAQUE):
            raise _Refused(f"indexing {type(container).__name__} is not allowed")
        try:
            return container[key]
        except (KeyError, IndexError):
            if self.juel:
                return None
            raise

    def _eval_attribute(self, node: ast.Attribute) -> Any:
        return self._attribute(self._eval(node.value), node.attr)

    def _attribute(self, value: Any, attr: str) -> Any:
        if value is None:
            if self.juel:
                return None  # EL: a property of null is null
            raise _Refused(f"cannot read '.{attr}' of None")
        kind = type(value)
        if kind is dict or (kind not in _ATTRS and isinstance(value, Mapping)):
            if attr in value:
                return value[attr]
            if attr in _MAPPING_ATTRS:
                return getattr(value, attr)
            if self.juel:
                return _JAVA_METHODS[attr](value) if attr in _JAVA_METHODS else None
            raise _Refused(f"no key '{attr}'")
        allowed = _ATTRS.get(kind)
        if allowed is None:
            allowed = next((names for base, names in _ATTRS.items() if isinstance(value, base)), None)
        if allowed is not None and attr in allowed:
            if attr in _STR_GUARDS and isinstance(value, str):
                return _STR_GUARDS[attr](value)
            return getattr(value, attr)
        if self.juel and attr in _JAVA_METHODS and isinstance(value, _JAVA_RECEIVERS):
            return _JAVA_METHODS[attr](value)
        if allowed is not None or kind.__module__ == "builtins" or isinstance(value, _OPAQUE):
            raise _Refused(f"'.{attr}' is not allowed on {kind.__name__}")
        # A value of the application's own type (a dataclass, a date...): public attributes only.
        try:
            result = getattr(value, attr)
        except AttributeError:
            raise _Refused(f"{kind.__name__} has no attribute '{attr}'") from None
        if isinstance(result, _OPAQUE):
            raise _Refused(f"'.{attr}' of {kind.__name__} is a {type(result).__name__}, which is not allowed")
        return result

    # Flowable's variable functions: the first argument names a variable.
    def _value_of(self, name: Any) -> Any:
        if not isinstance(name, str):
            raise _Refused(f"a variable name must be a string, got {type(name).__name__}")
        return self.names.get(name)

    def _var_get(self, name: str) -> Any:
        return self._value_of(name)

    def _var_getOrDefault(self, name: str, default: Any) -> Any:  # noqa: N802
        value = self._value_of(name)
        return default if value is None else value

    def _var_exists(self, name: str) -> bool:
        self._value_of(name)
        return name in self.names

    def _var_isEmpty(self, name: str) -> bool:  # noqa: N802
        return _is_empty(self._value_of(name))

    def _var_isNotEmpty(self, name: str) -> bool:  # noqa: N802
        return not _is_empty(self._value_of(name))

    def _var_equals(self, name: str, other: Any) -> bool:
        value = self._value_of(name)
        return isinstance(value, bool) == isinstance(other, bool) and bool(value == other)

    def _var_notEquals(self, name: str, other: Any) -> bool:  # noqa: N802
        return self._value_of(name) is not None and not self._var_equals(name, other)

    def _var_contains(self, name: str, *wanted: Any) -> bool:
        return self._contains(self._value_of(name), wanted, all)

    def _var_containsAny(self, name: str, *wanted: Any) -> bool:  # noqa: N802
        return self._contains(self._value_of(name), wanted, any)

    @staticmethod
    def _contains(value: Any, wanted: tuple[Any, ...], quantifier: Callable[[Any], bool]) -> bool:
        if isinstance(value, str):
            return quantifier(isinstance(w, str) and w in value for w in wanted)
        if isinstance(value, list | tuple | set | frozenset):
            return quantifier(w in value for w in wanted)
        return False

    def _compare(self, name: str, other: Any, test: Callable[[Any, Any], Any]) -> bool:
        value = self._value_of(name)
        return value is not None and other is not None and bool(test(value, other))

    def _var_lowerThan(self, name: str, other: Any) -> bool:  # noqa: N802
        return self._compare(name, other, lambda a, b: a < b)

    def _var_lowerThanOrEquals(self, name: str, other: Any) -> bool:  # noqa: N802
        return self._compare(name, other, lambda a, b: a <= b)

    def _var_greaterThan(self, name: str, other: Any) -> bool:  # noqa: N802
        return self._compare(name, other, lambda a, b: a > b)

    def _var_greaterThanOrEquals(self, name: str, other: Any) -> bool:  # noqa: N802
        return self._compare(name, other, lambda a, b: a >= b)


class _Runtime:
    """A function table and the idle evaluators that use it."""

    __slots__ = ("functions", "idle")

    def __init__(self, functions: dict[str, Callable[..., Any]]) -> None:
        self.functions = functions
        self.functions.update({f"var:{name}": _var_placeholder for name in _VAR_FUNCTIONS})
        self.idle: list[_Evaluator] = []


def _var_placeholder(*args: Any) -> Any:
    """Stands in the compile-time table; each evaluator binds its own."""
    raise AssertionError("unbound var: function")


_DEFAULT_RUNTIME = _Runtime(dict(_BUILTINS))
_FUNCTION_NAME = re.compile(r"(?:[^\W\d]\w*:)?[^\W\d]\w*")
# Runtimes by the identity of each registered function, so expressions compiled
# against the same functions share one pool of evaluators.
_runtimes: dict[tuple[tuple[Any, int], ...], _Runtime] = {}
_runtimes_lock = threading.Lock()


def _runtime_for(functions: Functions | None, source: str) -> _Runtime:
    if not functions:
        return _DEFAULT_RUNTIME
    key = tuple((name, id(func)) for name, func in functions.items())
    runtime = _runtimes.get(key)
    if runtime is None:
        runtime = _Runtime(_function_table(functions, source))
        with _runtimes_lock:
            if len(_runtimes) >= 64:
                _runtimes.pop(next(iter(_runtimes)), None)
            _runtimes[key] = runtime  # the runtime holds the functions, so their ids stay theirs
    return runtime


def _function_table(functions: Functions, source: str) -> dict[str, Callable[..., Any]]:
    table = dict(_BUILTINS)
    for name, func in functions.items():
        if not isinstance(name, str) or not _FUNCTION_NAME.fullmatch(name) or name.startswith("__"):
            raise ExpressionError(f"function name {name!r} is not allowed", expression=source)
        try:
            forbidden = func in DISALLOW_FUNCTIONS
        except TypeError:
            forbidden = False
        if forbidden or not callable(func) or isinstance(func, types.ModuleType):
            raise ExpressionError(f"function '{name}' ({func!r}) is not allowed", expression=source)
        table[name] = func
    return table


# ------------------------------------------------------ compile-time check

_REFUSED_NODES: dict[type[ast.AST], str] = {
    ast.Lambda: "lambda",
    ast.ListComp: "list comprehension",
    ast.SetComp: "set comprehension",
    ast.DictComp: "dict comprehension",
    ast.GeneratorExp: "generator expression",
    ast.NamedExpr: "assignment expression (:=)",
    ast.JoinedStr: "f-string",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield from",
}
_ALLOWED_NODES = frozenset(
    {
        ast.Constant,
        ast.Name,
        ast.Load,
        ast.BinOp,
        ast.UnaryOp,
        ast.BoolOp,
        ast.Compare,
        ast.IfExp,
        ast.Call,
        ast.keyword,
        ast.Attribute,
        ast.Subscript,
        ast.Slice,
        ast.List,
        ast.Tuple,
        ast.Dict,
        ast.Set,
        ast.Starred,
        ast.And,
        ast.Or,
        ast.Not,
        ast.USub,
        ast.UAdd,
        ast.Invert,
        *(op for op in _OPERATORS if issubclass(op, ast.operator | ast.cmpop)),
    }
)
_REFUSED_ATTRS = frozenset(DISALLOW_METHODS) | {
    "format",
    "format_map",
    "mro",
    "f_globals",
    "f_locals",
    "f_builtins",
    "f_back",
    "gi_code",
    "cr_code",
}


def _check(tree: ast.expr, functions: Mapping[str, Any], source: str) -> None:
    """Refuse, before anything runs, every construct outside the allow-list."""

    def refuse(what: str) -> ExpressionError:
        return ExpressionError(f"{what} is not allowed", expression=source)

    unpackable: set[int] = set()  # ids of Starred nodes that sit directly in a list literal
    for node in ast.walk(tree):
        kind = type(node)
        if kind in _REFUSED_NODES:
            raise refuse(_REFUSED_NODES[kind])
        if kind not in _ALLOWED_NODES:
            raise refuse(f"{kind.__name__} ('{ast.unparse(node)}')" if isinstance(node, ast.expr) else kind.__name__)
        if isinstance(node, ast.Name) and node.id.startswith("__"):
            raise refuse(f"name '{node.id}'")
        elif isinstance(node, ast.Attribute) and (node.attr.startswith(("_", "func_")) or node.attr in _REFUSED_ATTRS):
            raise refuse(f"attribute '{node.attr}'")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str | bytes) and len(node.value) > MAX_SIZE:
            raise refuse(f"a literal longer than {MAX_SIZE}")
        elif isinstance(node, ast.List):
            unpackable.update(id(e) for e in node.elts if isinstance(e, ast.Starred))
        elif isinstance(node, ast.Starred) and id(node) not in unpackable:
            raise refuse("'*' unpacking outside a list")
        elif isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name):
                if node.func.id not in functions:
                    raise refuse(f"function '{node.func.id}'")
            elif not isinstance(node.func, ast.Attribute):
                raise refuse("calling the result of an expression")
            if any(kw.arg is None for kw in node.keywords):
                raise refuse("'**' unpacking")


def _parse_python(text: str, source: str) -> ast.expr:
    try:
        return ast.parse(text, mode="eval").body
    except SyntaxError as exc:
        if "\n" in text:  # a condition written over several lines in the XML
            try:
                return ast.parse(f"(\n{text}\n)", mode="eval").body
            except SyntaxError:
                pass
        raise ExpressionError(f"invalid syntax: {exc.msg}", expression=source) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ExpressionError(f"cannot parse: {exc}", expression=source) from None


# ----------------------------------------------------------------- cache

_CACHE_SIZE = 2048
_cache: OrderedDict[tuple[bool, str, int], tuple[Functions | None, Expression]] = OrderedDict()
_cache_lock = threading.Lock()


def _cached(text: str, functions: Functions | None, template: bool) -> Expression:
    key = (template, text, id(functions))
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit[1]
    compiled = (compile_template if template else compile_expression)(text, functions=functions)
    with _cache_lock:
        # The entry keeps ``functions`` alive, so its id cannot be reused by another mapping meanwhile.
        _cache[key] = (functions, compiled)
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return compiled
