"""Functions the ``python`` task type tests call (an application's task module in miniature)."""

from __future__ import annotations

from os import getcwd  # noqa: F401 - imported so a test can show it cannot be called through this module
from typing import Any

from bpmnlite import BpmnError, TaskContext

calls: list[str] = []
RATE = 0.2


def charge(ctx: TaskContext) -> dict[str, Any]:
    calls.append(ctx.idempotency_key)
    amount = ctx.get("amount")
    if amount > 1000:
        raise BpmnError("LIMIT", f"{amount} is over the limit", {"limit": 1000})
    return {"charged": amount, "fee": round(amount * RATE, 2)}


def answer(ctx: TaskContext) -> int:
    return 42


def explode(ctx: TaskContext) -> None:
    raise RuntimeError("card reader on fire")


class Invoices:
    @staticmethod
    def send(ctx: TaskContext) -> dict[str, Any]:
        return {"invoiced": ctx.config.get("bpmnlite:template", "default")}


def _helper(ctx: TaskContext) -> None:
    raise AssertionError("private functions must not be callable from a model")
