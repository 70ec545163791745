"""Compiling scripts: RestrictedPython's policy plus size guards and un-catchable refusals.

Compiling costs far more than running a short script, so results are cached
by script text and trust; a benchmark's ``x = x + 1`` compiles once.
"""

from __future__ import annotations

import ast
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import CodeType
from typing import Any

from RestrictedPython.compile import compile_restricted_exec
from RestrictedPython.transformer import IOPERATOR_TO_STR, RestrictingNodeTransformer

from bpmnlite_script.budget import SCRIPT_FILENAME

COMPILE_CACHE_SIZE = 1024
"""Compiled scripts kept (per trust level); a deployment rarely has more distinct scripts."""

# Operators that can turn small operands into a huge result, and their guards.
_GUARDED_BINOPS: dict[type[ast.operator], str] = {
    ast.Add: "_add_",
    ast.Mult: "_mul_",
    ast.Pow: "_pow_",
    ast.LShift: "_lshift_",
    ast.Mod: "_mod_",
}
# In-place operators that cannot: they run as plain Python, without a guard call.
_PLAIN_INPLACE = (ast.Sub, ast.Div, ast.FloorDiv, ast.BitOr, ast.BitAnd, ast.BitXor, ast.RShift)
_RESTRICTED_ERROR = re.compile(r"^Line (\d+): (.*)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Compiled:
    """A compiled script, or why it cannot run (``code`` is None).

    ``names`` are the global names the code can read, write or delete (see
    :func:`global_names`); None when unknown, as for trusted code, which can
    reach its namespace through ``globals()`` or a frame.
    """

    code: CodeType | None
    problem: str | None = None
    line: int | None = None
    names: frozenset[str] | None = None


compiled_sandboxed: dict[str, Compiled] = {}
compiled_trusted: dict[str, Compiled] = {}
"""What ``compile_script`` compiled, by script text and trust.

Read them directly where even a function call is a noticeable part of the
cost (a hit is one dict lookup); only ``compile_script`` adds to them.
"""
_compiled_lock = threading.Lock()


def compile_script(script: str, trusted: bool) -> Compiled:
    """Compile once per distinct script; a refused or broken script is cached as such too.

    Each trust level keeps the ``COMPILE_CACHE_SIZE`` scripts compiled last.
    """
    cache = compiled_trusted if trusted else compiled_sandboxed
    compiled = cache.get(script)
    if compiled is None:
        compiled = _compile(script, trusted)
        with _compiled_lock:
            # Another thread may have compiled it meanwhile: every caller gets the same object.
            compiled = cache.setdefault(script, compiled)
            while len(cache) > COMPILE_CACHE_SIZE:
                del cache[next(iter(cache))]
    return compiled


def _compile(script: str, trusted: bool) -> Compiled:
    try:
        tree = ast.parse(script, SCRIPT_FILENAME, "exec")
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        where = f" at line {line}" if line else ""
        return Compiled(None, f"script has a syntax error{where}: {getattr(exc, 'msg', exc)}", line)
    if trusted:
        return Compiled(compile(tree, SCRIPT_FILENAME, "exec", dont_inherit=True))
    result = compile_restricted_exec(tree, SCRIPT_FILENAME, policy=_Policy)
    if not result.errors:
        return Compiled(result.code, names=global_names(result.code))
    reasons: list[tuple[int | None, str]] = []
    for error in result.errors:
        match = _RESTRICTED_ERROR.match(error)
        if match and match.group(1).isdigit():
            reasons.append((int(match.group(1)), match.group(2)))
        else:
            reasons.append((None, error))
    reasons.sort(key=lambda r: r[0] or 0)
    first_line = reasons[0][0]
    if len(reasons) == 1:
        where = f" at line {first_line}" if first_line else ""
        return Compiled(None, f"script refused{where}: {reasons[0][1]}", first_line)
    listed = "; ".join(f"line {line}: {reason}" if line else reason for line, reason in reasons)
    return Compiled(None, f"script refused: {listed}", first_line)


class _Policy(RestrictingNodeTransformer):
    """RestrictedPython's policy plus the size guards and un-catchable refusals."""

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        # A class could define __eq__, which the engine would call after the run, outside any budget.
        self.error(node, "class definitions are not allowed in sandboxed scripts")
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> Any:
        # A suspended generator's finally or except block runs when the garbage
        # collector finalizes it, long after the run and outside its budget.
        body = list(_own_nodes(node))
        if any(isinstance(n, ast.Yield | ast.YieldFrom) for n in body) and any(isinstance(n, ast.Try) for n in body):
            self.error(node, "try statements are not allowed in generator functions in sandboxed scripts")
        return super().visit_FunctionDef(node)

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        node = self.node_contents_visit(node)
        guard = _GUARDED_BINOPS.get(type(node.op))
        if guard is None or _surely_numeric(node):
            return node
        return _call(guard, [node.left, node.right], node)

    def visit_AugAssign(self, node: ast.AugAssign) -> Any:
        target = node.target
        if isinstance(target, ast.Name) and (
            isinstance(node.op, _PLAIN_INPLACE) or isinstance(node.op, ast.Add) and _is_number(node.value)
        ):
            return self.node_contents_visit(node)  # x += 1 needs no guard call
        if not isinstance(target, ast.Subscript) or any(isinstance(n, ast.Slice) for n in ast.walk(target.slice)):
            return super().visit_AugAssign(node)
        # d[k] += 1 is common in scripts; RestrictedPython alone refuses it.
        obj = self.visit(target.value)
        key = self.visit(target.slice)
        value = self.visit(node.value)
        op = ast.copy_location(ast.Constant(IOPERATOR_TO_STR[type(node.op)]), node)
        return ast.copy_location(ast.Expr(_call("_augitem_", [obj, key, op, value], node)), node)

    def visit_FormattedValue(self, node: ast.FormattedValue) -> ast.AST:
        node = self.node_contents_visit(node)
        spec = node.format_spec if node.format_spec is not None else ast.copy_location(ast.Constant(""), node)
        conversion = ast.copy_location(ast.Constant(node.conversion), node)
        call = _call("_format_", [node.value, conversion, spec], node)
        return ast.copy_location(ast.FormattedValue(value=call, conversion=-1, format_spec=None), node)

    def visit_While(self, node: ast.While) -> ast.AST:
        node = self.node_contents_visit(node)
        # `while True: pass` compiles to a jump onto itself, which raises no line
        # event; a name load in front gives the loop a line the tracer sees.
        first = node.body[0]
        load = ast.copy_location(ast.Name("_check_", ast.Load()), first)
        node.body.insert(0, ast.copy_location(ast.Expr(load), first))
        return node

    def visit_Try(self, node: ast.Try) -> ast.AST:
        node = self.node_contents_visit(node)
        # A refusal is a BaseException, but `except BaseException:` would still catch it.
        for handler in node.handlers:
            handler.body.insert(0, ast.copy_location(ast.Expr(_call("_check_", [], handler)), handler))
        if node.finalbody:
            first = node.finalbody[0]
            node.finalbody.insert(0, ast.copy_location(ast.Expr(_call("_check_", [], first)), first))
        return node


def global_names(code: CodeType) -> frozenset[str]:
    """Every name ``code`` and the functions, lambdas and comprehensions in it look up by name.

    CPython resolves each global or module-level name through ``co_names``
    (loads, stores, deletes, imports; attribute names too, a harmless extra).
    A sandboxed script has no other way to its namespace: ``globals()``,
    ``vars()``, ``eval``, frames and star imports are refused.
    """
    names: set[str] = set()
    todo = [code]
    while todo:
        current = todo.pop()
        names.update(current.co_names)
        todo.extend(const for const in current.co_consts if isinstance(const, CodeType))
    return frozenset(names)


def _own_nodes(func: ast.FunctionDef) -> Iterator[ast.AST]:
    """The nodes of a function's body, without those of functions nested in it."""
    todo: list[ast.AST] = list(func.body)
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, ast.FunctionDef | ast.Lambda):
            todo.extend(ast.iter_child_nodes(node))


def _is_number(node: ast.expr) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
        node = node.operand
    return isinstance(node, ast.Constant) and type(node.value) in (int, float, complex, bool)


def _surely_numeric(node: ast.BinOp) -> bool:
    """``x + 1`` cannot concatenate sequences and ``x * 1.5`` cannot repeat one: no guard needed."""
    if isinstance(node.op, ast.Add):
        return _is_number(node.left) or _is_number(node.right)
    if isinstance(node.op, ast.Mult):
        return any(isinstance(n, ast.Constant) and type(n.value) in (float, complex) for n in (node.left, node.right))
    return False


def _call(name: str, args: list[ast.expr], where: ast.AST) -> ast.Call:
    func = ast.copy_location(ast.Name(name, ast.Load()), where)
    return ast.copy_location(ast.Call(func=func, args=args, keywords=[]), where)
