"""Task types of the pizza example (``processes/pizza_order.bpmn``, seed 001: the async flag).

``pizza.store_order`` hands the order to the pizza shop's ordering system. That
system is simulated here, and it is unreliable and slow on purpose: about one
request in five fails, and some take seconds. It keeps an **order book**, a
JSON-lines file (``shop_book``, default ``pizza_shop.jsonl`` in the working
directory) with one line per request it received and per order it stored, so
several worker processes share it and you can read what the shop saw.

Its behaviour comes from variables, so a test (or a curious reader) can make it
deterministic:

| variable | meaning |
|---|---|
| ``shop_failures`` | a pattern over the attempts of one order: ``"F."`` fails the first attempt and accepts the second; attempts past its end are accepted |
| ``shop_failure_rate`` | the chance that an attempt fails when there is no pattern (default 0.2) |
| ``shop_seed`` | makes that chance reproducible: the outcome of attempt *n* of order *o* is :func:`attempt_fails` ``(seed, o, n, rate)`` |
| ``shop_delay`` | seconds every request takes; without it, about one request in five takes 2 seconds |
| ``shop_book`` | the order book file |

An order is identified by ``order_id``, else the business key, else the
instance id. A request whose idempotency key already stored an order gets the
same order number back (a retry after the shop stored it but before the
engine committed does not order a second pizza).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bpmnlite import TaskContext

DEFAULT_BOOK = "pizza_shop.jsonl"
DEFAULT_FAILURE_RATE = 0.2
SLOW_SECONDS = 2.0


class OrderingSystemDown(Exception):
    """The ordering system did not take the order (a technical failure: the engine retries the job)."""


class OrderBook:
    """The shop's append-only log: one JSON object per line."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def append(self, **entry: Any) -> None:
        line = json.dumps({"at": time.time(), **entry}) + "\n"
        # one short write in append mode: lines from several processes do not mix
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line)

    def entries(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)

    def requests(self, order_id: str) -> list[dict[str, Any]]:
        return [e for e in self.entries() if e["event"] == "received" and e["order_id"] == order_id]

    def stored(self) -> list[dict[str, Any]]:
        return [e for e in self.entries() if e["event"] == "stored"]

    def stored_for(self, key: str) -> dict[str, Any] | None:
        return next((e for e in self.stored() if e["key"] == key), None)


def attempt_fails(seed: Any, order_id: str, attempt: int, rate: float = DEFAULT_FAILURE_RATE) -> bool:
    """Whether attempt ``attempt`` (1, 2...) of an order fails, for a given seed: the same every time."""
    return random.Random(f"{seed}:{order_id}:{attempt}:fail").random() < rate


def _fails(ctx: TaskContext, order_id: str, attempt: int) -> bool:
    pattern = ctx.get("shop_failures")
    if pattern is not None:
        marks = str(pattern)
        return attempt <= len(marks) and marks[attempt - 1].upper() == "F"
    rate = float(ctx.get("shop_failure_rate", DEFAULT_FAILURE_RATE))
    seed = ctx.get("shop_seed")
    if seed is None:
        return random.random() < rate
    return attempt_fails(seed, order_id, attempt, rate)


def _delay(ctx: TaskContext, order_id: str, attempt: int) -> float:
    delay = ctx.get("shop_delay")
    if delay is not None:
        return float(delay)
    seed = ctx.get("shop_seed")
    rng = random.Random(f"{seed}:{order_id}:{attempt}:slow") if seed is not None else random
    return SLOW_SECONDS if rng.random() < 0.2 else 0.0


def store_order(ctx: TaskContext) -> str:
    """Send the order to the ordering system; sets ``order_number`` (and returns it)."""
    order_id = str(ctx.get("order_id") or ctx.business_key or ctx.instance_id)
    book = OrderBook(ctx.get("shop_book") or DEFAULT_BOOK)
    attempt = len(book.requests(order_id)) + 1
    book.append(event="received", order_id=order_id, key=ctx.idempotency_key, attempt=attempt)
    delay = _delay(ctx, order_id, attempt)
    if delay > 0:
        time.sleep(delay)  # a slow shop: the request really takes this long
    if _fails(ctx, order_id, attempt):
        book.append(event="failed", order_id=order_id, key=ctx.idempotency_key, attempt=attempt)
        raise OrderingSystemDown(f"the ordering system did not take order {order_id} (attempt {attempt})")
    earlier = book.stored_for(ctx.idempotency_key)
    if earlier is not None:
        number = str(earlier["number"])
    else:
        number = "P-" + hashlib.sha256(ctx.idempotency_key.encode()).hexdigest()[:6].upper()
        book.append(event="stored", order_id=order_id, key=ctx.idempotency_key, attempt=attempt, number=number,
                    pizza=ctx.get("pizza"))
    ctx.set("order_number", number)
    return number


TASK_TYPES: dict[str, Any] = {"pizza.store_order": store_order}
