"""Delivering messages and signals: which waiting element gets them.

Messages go to one catcher, matched by name and business key, correlation
variables or instance id, else start an instance through a message start
event. Signals go to every catcher and signal start event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bpmnlite.runtime import events
from bpmnlite.runtime.runner import Runner
from bpmnlite.runtime.state import FINAL_STATES, Instance
from bpmnlite.store import tables as t

if TYPE_CHECKING:
    from bpmnlite.engine import Engine


def correlate(engine: Engine, conn: Connection,
    runner: Runner,
    name: str,
    business_key: str | None,
    correlation: dict[str, Any],
    variables: dict[str, Any],
    *,
    instance_id: str | None = None,
) -> Instance | None:
    query = (
        sa.select(t.subscriptions)
        .where(
            t.subscriptions.c.kind == "message",
            t.subscriptions.c.name == name,
            t.subscriptions.c.instance_id.is_not(None),
        )
        .order_by(t.subscriptions.c.created_at)
    )
    if business_key is not None:
        query = query.where(t.subscriptions.c.business_key == business_key)
    if instance_id is not None:
        query = query.where(t.subscriptions.c.instance_id == instance_id)
    for sub in conn.execute(query).all():
        inst = runner.instance(sub.instance_id)
        if inst.state in FINAL_STATES or inst.suspended:
            continue
        if correlation and any(inst.variables.get(k) != v for k, v in correlation.items()):
            continue
        if sub.token_id != inst.id and sub.token_id not in inst.tokens:
            continue
        deliver(runner, inst, sub, variables)
        return inst
    if instance_id is not None:
        return None  # a message for one instance never starts another
    starts = conn.execute(
        sa.select(t.subscriptions).where(
            t.subscriptions.c.kind == "message",
            t.subscriptions.c.name == name,
            t.subscriptions.c.instance_id.is_(None),
        )
    ).all()
    if starts and not correlation:
        sub = starts[0]
        graph = engine.deployer.graph(conn, sub.definition_id)
        return events.start_instance(
            runner, sub.definition_id, graph, variables, business_key, start=graph.nodes[sub.element_id]
        )
    return None


def deliver(runner: Runner, inst: Instance, sub: Any, variables: dict[str, Any]) -> Instance:
    # a subscription is consumed by the token rules: the owner moves on (rows cleared),
    # or stays for a non-interrupting catcher, which may fire again
    events.deliver(runner, inst, sub.token_id, sub.element_id, variables)
    return inst


def deliver_signal(engine: Engine, conn: Connection, runner: Runner, name: str, variables: dict[str, Any]) -> int:
    count = 0
    subs = conn.execute(
        sa.select(t.subscriptions)
        .where(t.subscriptions.c.kind == "signal", t.subscriptions.c.name == name)
        .order_by(t.subscriptions.c.created_at)
    ).all()
    for sub in subs:
        if sub.instance_id is None:
            graph = engine.deployer.graph(conn, sub.definition_id)
            events.start_instance(
                runner, sub.definition_id, graph, dict(variables), None, start=graph.nodes[sub.element_id]
            )
            count += 1
            continue
        inst = runner.instance(sub.instance_id)
        if inst.state in FINAL_STATES or inst.suspended or (sub.token_id != inst.id and sub.token_id not in inst.tokens):
            continue
        events.deliver(runner, inst, sub.token_id, sub.element_id, dict(variables))
        count += 1
    return count

