"""The ``python`` script language: RestrictedPython with budgets, or plain Python when trusted.

A script sees the instance variables as names and hands back the names it
assigned. It works on deep copies, so the only way it changes the instance is
through the names it returns.
"""

from __future__ import annotations

import ast
import builtins
import copy
import datetime
import decimal
import functools
import re
import sys
import uuid
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from fractions import Fraction
from types import BuiltinFunctionType, CodeType, FunctionType, GeneratorType, MethodType, ModuleType, TracebackType
from typing import Any

from bpmnlite.errors import BpmnError, ScriptError
from RestrictedPython import compile_restricted_exec
from RestrictedPython.transformer import IOPERATOR_TO_STR, RestrictingNodeTransformer

from bpmnlite_script import budget, guards
from bpmnlite_script.budget import SCRIPT_FILENAME, Budget, Limits, Refusal
from bpmnlite_script.guards import DEFAULT_ALLOWED_MODULES, GuardedType, ModuleView

__all__ = ["DEFAULT_ALLOWED_MODULES", "Limits", "PythonScript"]

COMPILE_CACHE_SIZE = 1024
"""Compiled scripts kept (keyed by text and trust); a deployment rarely has more distinct scripts."""

# Values that are not data: never written back as variables.
_NOT_DATA = (ModuleType, FunctionType, BuiltinFunctionType, MethodType, type, GeneratorType, ModuleView, GuardedType,
             functools.partial)
# Values that cannot change, so the script may share them with the engine.
_IMMUTABLE = frozenset({int, float, complex, bool, str, bytes, type(None), decimal.Decimal, Fraction,
                        datetime.date, datetime.datetime, datetime.time, datetime.timedelta, uuid.UUID})
_GUARDED_BINOPS: dict[type[ast.operator], str] = {
    ast.Add: "_add_", ast.Mult: "_mul_", ast.Pow: "_pow_", ast.LShift: "_lshift_", ast.Mod: "_mod_",
}
_RESTRICTED_ERROR = re.compile(r"^Line (\d+): (.*)$", re.DOTALL)


class _Policy(RestrictingNodeTransformer):
    """RestrictedPython's policy plus the size guards and un-catchable refusals."""

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        # A class could define __eq__ that the engine calls after the run, outside any budget.
        self.error(node, "class definitions are not allowed in sandboxed scripts")
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        node = self.node_contents_visit(node)
        guard = _GUARDED_BINOPS.get(type(node.op))
        if guard is None:
            return node
        return _call(guard, [node.left, node.right], node)

    def visit_AugAssign(self, node: ast.AugAssign) -> Any:
        target = node.target
        if not isinstance(target, ast.Subscript) or any(isinstance(n, ast.Slice) for n in ast.walk(target.slice)):
            return super().visit_AugAssign(node)
        # d[k] += 1 is common in scripts; RestrictedPython alone refuses it.
        target.value = self.visit(target.value)
        target.slice = self.visit(target.slice)
        value = self.visit(node.value)
        op = ast.Constant(IOPERATOR_TO_STR[type(node.op)])
        return ast.copy_location(ast.Expr(_call("_augitem_", [target.value, target.slice, op, value], node)), node)

    def visit_FormattedValue(self, node: ast.FormattedValue) -> ast.AST:
        node = self.node_contents_visit(node)
        spec = node.format_spec if node.format_spec is not None else ast.Constant("")
        call = _call("_format_", [node.value, ast.Constant(node.conversion), spec], node)
        return ast.copy_location(ast.FormattedValue(value=call, conversion=-1, format_spec=None), node)

    def visit_While(self, node: ast.While) -> ast.AST:
        node = self.node_contents_visit(node)
        # `while True: pass` compiles to a jump onto itself, which raises no line
        # event; a name load in front gives the loop a line the tracer sees.
        first = node.body[0]
        node.body.insert(0, ast.copy_location(ast.Expr(ast.copy_location(ast.Name("_check_", ast.Load()), first)), first))
        return node

    def visit_Try(self, node: ast.Try) -> ast.AST:
        node = self.node_contents_visit(node)
        for handler in node.handlers:
            handler.body.insert(0, ast.copy_location(ast.Expr(_call("_check_", [], handler)), handler))
        if node.finalbody:
            first = node.finalbody[0]
            node.finalbody.insert(0, ast.copy_location(ast.Expr(_call("_check_", [], first)), first))
        return node


def _call(name: str, args: list[ast.expr], where: ast.AST) -> ast.Call:
    func = ast.copy_location(ast.Name(name, ast.Load()), where)
    call = ast.Call(func=func, args=args, keywords=[])
    for arg in args:
        if not hasattr(arg, "lineno"):
            ast.copy_location(arg, where)
    return ast.copy_location(call, where)


@dataclass(frozen=True, slots=True)
class _Compiled:
    code: CodeType | None
    problem: str | None = None
    line: int | None = None


@functools.lru_cache(maxsize=COMPILE_CACHE_SIZE)
def compile_script(script: str, trusted: bool) -> _Compiled:
    """Compile once per distinct script; a refused or broken script is cached as such too."""
    try:
        tree = ast.parse(script, SCRIPT_FILENAME, "exec")
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        where = f" at line {line}" if line else ""
        return _Compiled(None, f"script has a syntax error{where}: {getattr(exc, 'msg', exc)}", line)
    if trusted:
        return _Compiled(compile(tree, SCRIPT_FILENAME, "exec", dont_inherit=True))
    result = compile_restricted_exec(tree, SCRIPT_FILENAME, policy=_Policy)
    if result.errors:
        reasons, lines = [], []
        for error in result.errors:
            match = _RESTRICTED_ERROR.match(error)
            if match and match.group(1).isdigit():
                lines.append(int(match.group(1)))
                reasons.append(f"line {match.group(1)}: {match.group(2)}")
            else:
                reasons.append(error)
        if len(reasons) == 1 and lines:
            return _Compiled(None, f"script refused at line {lines[0]}: {reasons[0].split(': ', 1)[1]}", lines[0])
        return _Compiled(None, "script refused: " + "; ".join(reasons), lines[0] if lines else None)
    return _Compiled(result.code)


class PythonScript:
    """Runs ``python`` scripts; implements ``bpmnlite.hookspecs.ScriptLanguage``.

    Args:
        limits: budgets of a sandboxed run (time, lines, memory, object sizes).
        allowed_modules: top-level modules a sandboxed script may import.
            Each reaches the script as a read-only view of its public API
            without submodules; add a module only if all of that is safe.

    The attributes of the same names may be changed later; a run uses the
    values current when it starts.
    """

    def __init__(self, *, limits: Limits | None = None, allowed_modules: Iterable[str] = DEFAULT_ALLOWED_MODULES) -> None:
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
            inside a list or dict count), except names starting with ``_``
            and modules, functions and classes. A deleted name is not reported.

        Raises:
            ScriptError: the script was refused (compile time or run time),
                stopped by a budget, or raised; the message names the element
                and the line.
            BpmnError: raised by the script, unchanged.
        """
        compiled = compile_script(script, trusted)
        if compiled.code is None:
            raise ScriptError(compiled.problem or "script refused", element_id=element_id, line=compiled.line)
        inputs = {name: _private_copy(value) for name, value in variables.items()}
        if trusted:
            namespace: dict[str, Any] = {"__builtins__": builtins, "__name__": "<script>", "BpmnError": BpmnError}
            base: Mapping[str, Any] = namespace.copy()
            namespace.update(inputs)
            _execute(compiled.code, namespace, element_id)
        else:
            base = guards.BASE_GLOBALS
            namespace = dict(base)
            namespace.update(inputs)
            self._run_sandboxed(compiled.code, namespace, element_id)
        return _assigned(namespace, variables, base)

    def _run_sandboxed(self, code: CodeType, namespace: dict[str, Any], element_id: str) -> None:
        limits = self.limits
        run = Budget(limits, element_id, self.allowed_modules)
        previous = budget.enter(run)
        old_context = decimal.getcontext()
        decimal.setcontext(guards.decimal_context(limits).copy())
        old_trace = sys.gettrace()
        sys.settrace(run.trace_call)
        try:
            _execute(code, namespace, element_id)
        finally:
            sys.settrace(old_trace)
            decimal.setcontext(old_context)
            budget.leave(previous)


def _execute(code: CodeType, namespace: dict[str, Any], element_id: str) -> None:
    """``exec`` with every way out turned into a ScriptError naming the element and line."""
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
        raise ScriptError(f"script failed: {type(exc).__name__}: {exc}{where}", element_id=element_id,
                          line=line) from exc


def _script_line(tb: TracebackType | None) -> int | None:
    """The line of the innermost script frame in a traceback."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == SCRIPT_FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _private_copy(value: Any) -> Any:
    """A copy the script may change freely; immutable values are shared."""
    if type(value) in _IMMUTABLE:
        return value
    try:
        return copy.deepcopy(value)
    except Exception:
        return value  # not copyable: the sandbox can still only call its methods


def _assigned(namespace: Mapping[str, Any], before: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    changed: dict[str, Any] = {}
    for name, value in namespace.items():
        if name[:1] == "_" or isinstance(value, _NOT_DATA):
            continue
        if name in before:
            if not _differs(value, before[name]):
                continue
        elif name in base and value is base[name]:
            continue
        changed[name] = value
    return changed


def _differs(new: Any, old: Any) -> bool:
    if new is old:
        return False
    if type(new) is not type(old):
        return True
    try:
        return not bool(new == old)
    except Exception:
        return True
