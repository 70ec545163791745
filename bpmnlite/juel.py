"""JUEL, the expression language of Camunda and Flowable models, read into Python syntax trees.

``${a == true && !b}``, ``#{...}``, ``eq``/``ne``/``lt``..., ``empty x``,
``execution.getVariable('x')`` and Flowable's ``var:`` functions become a
Python ``ast`` that ``bpmnlite.expressions`` checks and evaluates with the
same safe evaluator as Python conditions. A small tokenizer reads string
literals first, so operators inside strings are never rewritten.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Any, Literal

from bpmnlite.errors import ExpressionError


def _find_close(text: str, start: int, source: str) -> int:
    """Index of the ``}`` that closes a ``${`` whose body begins at ``start``; quotes are respected."""
    depth, i, n = 1, start, len(text)
    while i < n:
        ch = text[i]
        if ch in "'\"":
            i = _read_string(text, i, source)[1]
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ExpressionError(f"'{text[start - 2 : start]}' at position {start - 2} is never closed", expression=source)


def whole_juel(stripped: str, source: str) -> str | None:
    """The body of ``stripped`` if it is a single ``${...}``/``#{...}``, else ``None``."""
    if stripped.startswith(("${", "#{")) and _find_close(stripped, 2, source) == len(stripped) - 1:
        return stripped[2:-1]
    return None


def parse_template(text: str) -> ast.expr:
    parts: list[ast.expr] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith(("\\${", "\\#{"), i):
            literal.append(text[i + 1 : i + 3])
            i += 3
        elif text.startswith(("${", "#{"), i):
            end = _find_close(text, i + 2, text)
            if literal:
                parts.append(ast.Constant("".join(literal)))
                literal = []
            parts.append(JuelParser(text[i + 2 : end], i + 2, text).parse())
            i = end + 1
        else:
            literal.append(text[i])
            i += 1
    if literal:
        parts.append(ast.Constant("".join(literal)))
    return ast.Call(func=ast.Name(id="<template>", ctx=ast.Load()), args=parts, keywords=[])


def _read_string(text: str, start: int, source: str, offset: int = 0) -> tuple[str, int]:
    """A quoted EL string at ``start``: its value and the index after it (``\\'``, ``\\"``, ``\\\\`` escape)."""
    quote, chars, i = text[start], [], start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in "'\"\\":
            chars.append(text[i + 1])
            i += 2
        elif ch == quote:
            return "".join(chars), i + 1
        else:
            chars.append(ch)
            i += 1
    raise ExpressionError(f"string starting at position {start + offset} is never closed", expression=source)


@dataclass(frozen=True, slots=True)
class _Token:
    kind: Literal["num", "str", "name", "op", "end"]
    value: Any
    pos: int


_NUMBER = re.compile(r"\d+(\.\d+)?([eE][+-]?\d+)?")
_NAME = re.compile(r"(?:[^\W\d]|\$)(?:\w|\$)*")
_SYMBOLS = ("&&", "||", "==", "!=", "<=", ">=", *"<>!+-*/%()[].,?:")
_WORD_OPS = {
    "and": "&&",
    "or": "||",
    "not": "!",
    "eq": "==",
    "ne": "!=",
    "lt": "<",
    "gt": ">",
    "le": "<=",
    "ge": ">=",
    "div": "/",
    "mod": "%",
    "empty": "empty",
    "instanceof": "instanceof",
}
_LITERALS = {"true": True, "false": False, "null": None}
_LEVELS = (("||",), ("&&",), ("==", "!="), ("<", ">", "<=", ">="), ("+", "-"), ("*", "/", "%"))
_BOOL_OPS: dict[str, type[ast.boolop]] = {"||": ast.Or, "&&": ast.And}
_COMPARE_OPS: dict[str, type[ast.cmpop]] = {
    "==": ast.Eq,
    "!=": ast.NotEq,
    "<": ast.Lt,
    ">": ast.Gt,
    "<=": ast.LtE,
    ">=": ast.GtE,
}
_ARITH_OPS: dict[str, type[ast.operator]] = {"+": ast.Add, "-": ast.Sub, "*": ast.Mult, "/": ast.Div, "%": ast.Mod}
_VAR_PREFIXES = ("var", "vars", "variables")
_VAR_ALIASES = {
    "eq": "equals",
    "ne": "notEquals",
    "lt": "lowerThan",
    "lessThan": "lowerThan",
    "lte": "lowerThanOrEquals",
    "lessThanOrEquals": "lowerThanOrEquals",
    "gt": "greaterThan",
    "gte": "greaterThanOrEquals",
    "empty": "isEmpty",
    "notEmpty": "isNotEmpty",
}


def _tokenize(body: str, offset: int, source: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(body):
        ch, pos = body[i], offset + i
        if ch.isspace():
            i += 1
        elif ch in "'\"":
            value, end = _read_string(body, i, source, offset)
            tokens.append(_Token("str", value, pos))
            i = end
        elif match := _NUMBER.match(body, i):
            text = match.group()
            tokens.append(_Token("num", float(text) if match.group(1) or match.group(2) else int(text), pos))
            i = match.end()
        elif match := _NAME.match(body, i):
            tokens.append(_Token("name", match.group(), pos))
            i = match.end()
        else:
            symbol = next((s for s in _SYMBOLS if body.startswith(s, i)), None)
            if symbol is None:
                raise ExpressionError(f"unexpected character {ch!r} at position {pos}", expression=source)
            tokens.append(_Token("op", symbol, pos))
            i += len(symbol)
    tokens.append(_Token("end", None, offset + len(body)))
    return tokens


class JuelParser:
    """Recursive descent over EL's grammar, building the Python tree that means the same."""

    def __init__(self, body: str, offset: int, source: str) -> None:
        self.tokens = _tokenize(body, offset, source)
        self.i = 0
        self.source = source

    def parse(self) -> ast.expr:
        if self.tokens[0].kind == "end":
            raise ExpressionError("empty expression", expression=self.source)
        try:
            node = self._ternary()
        except RecursionError:
            raise ExpressionError("expression nested too deeply", expression=self.source) from None
        if self._peek().kind != "end":
            raise self._unexpected(self._peek())
        return node

    # -- token helpers
    def _peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def _next(self) -> _Token:
        token = self._peek()
        self.i += 1
        return token

    def _symbol(self, ahead: int = 0) -> str | None:
        token = self._peek(ahead)
        if token.kind == "op":
            return str(token.value)
        return _WORD_OPS.get(token.value) if token.kind == "name" else None

    def _expect(self, symbol: str) -> None:
        if self._symbol() != symbol:
            raise self._unexpected(self._peek(), f"expected '{symbol}'")
        self.i += 1

    def _unexpected(self, token: _Token, hint: str = "") -> ExpressionError:
        what = "end of expression" if token.kind == "end" else repr(token.value)
        message = f"unexpected {what} at position {token.pos}" + (f" ({hint})" if hint else "")
        return ExpressionError(message, expression=self.source)

    # -- grammar, loosest binding first
    def _ternary(self) -> ast.expr:
        test = self._binary(0)
        if self._symbol() != "?":
            return test
        self.i += 1
        body = self._ternary()
        self._expect(":")
        return ast.IfExp(test=test, body=body, orelse=self._ternary())

    def _binary(self, level: int) -> ast.expr:
        if level == len(_LEVELS):
            return self._unary()
        left = self._binary(level + 1)
        while (symbol := self._symbol()) in _LEVELS[level]:
            self.i += 1
            right = self._binary(level + 1)
            if symbol in _BOOL_OPS:
                left = ast.BoolOp(op=_BOOL_OPS[symbol](), values=[left, right])
            elif symbol in _COMPARE_OPS:
                left = ast.Compare(left=left, ops=[_COMPARE_OPS[symbol]()], comparators=[right])
            else:
                left = ast.BinOp(left=left, op=_ARITH_OPS[str(symbol)](), right=right)
        return left

    def _unary(self) -> ast.expr:
        symbol = self._symbol()
        if symbol == "-":
            self.i += 1
            return ast.UnaryOp(op=ast.USub(), operand=self._unary())
        if symbol == "!":
            self.i += 1
            return ast.UnaryOp(op=ast.Not(), operand=self._unary())
        if symbol == "empty":
            self.i += 1
            return _call("<empty>", [self._unary()])
        return self._value()

    def _value(self) -> ast.expr:
        node = self._primary()
        while True:
            symbol = self._symbol()
            if symbol == ".":
                self.i += 1
                name = self._next()
                if name.kind != "name":
                    raise self._unexpected(name, "expected a property name")
                node = ast.Attribute(value=node, attr=name.value, ctx=ast.Load())
                if self._symbol() == "(":
                    node = ast.Call(func=node, args=self._arguments(), keywords=[])
            elif symbol == "[":
                self.i += 1
                key = self._ternary()
                self._expect("]")
                node = ast.Subscript(value=node, slice=key, ctx=ast.Load())
            else:
                return node

    def _primary(self) -> ast.expr:
        token = self._next()
        if token.kind in ("num", "str"):
            return ast.Constant(token.value)
        if token.kind == "op" and token.value == "(":
            node = self._ternary()
            self._expect(")")
            return node
        if token.kind != "name":
            raise self._unexpected(token)
        word: str = token.value
        if word in _LITERALS:
            return ast.Constant(_LITERALS[word])
        if word in _WORD_OPS:
            raise self._unexpected(token)
        if self._symbol() == ":" and self._peek(1).kind == "name" and self._symbol(2) == "(":
            self.i += 1
            local: str = self._next().value
            if word in _VAR_PREFIXES:
                return _call(f"var:{_VAR_ALIASES.get(local, local)}", self._arguments(first_names_variable=True))
            return _call(f"{word}:{local}", self._arguments())
        if self._symbol() == "(":
            return _call(word, self._arguments())
        return ast.Name(id=word, ctx=ast.Load())

    def _arguments(self, first_names_variable: bool = False) -> list[ast.expr]:
        self._expect("(")
        args: list[ast.expr] = []
        if self._symbol() == ")":
            self.i += 1
            return args
        while True:
            token = self._peek()
            bare_name = token.kind == "name" and token.value not in _LITERALS and self._symbol(1) in (",", ")")
            if first_names_variable and not args and bare_name:
                # Flowable's var:equals(amount, 1): a bare first argument is the variable's name.
                self.i += 1
                args.append(ast.Constant(token.value))
            else:
                args.append(self._ternary())
            if self._symbol() == ")":
                self.i += 1
                return args
            self._expect(",")


def _call(name: str, args: list[ast.expr]) -> ast.Call:
    return ast.Call(func=ast.Name(id=name, ctx=ast.Load()), args=args, keywords=[])


