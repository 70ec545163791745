"""Reading and writing rows: instances, effects of a command, and queries.

Every function takes the connection of the current transaction; none commits.
The engine decides the transaction boundaries.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bpmnlite.errors import Conflict, NotFound
from bpmnlite.runtime.effects import RUN_NOW, Effects, JobKind
from bpmnlite.runtime.state import FINAL_STATES, Instance, InstanceState, Token
from bpmnlite.store import tables as t


def db_time(value: datetime | None) -> datetime | None:
    """Naive UTC for storage."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def py_time(value: datetime | None) -> datetime | None:
    """Aware UTC for callers."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# ------------------------------------------------------------------ instances
def load_instance(conn: Connection, instance_id: str, *, lock: bool = False) -> Instance:
    query = sa.select(t.instances).where(t.instances.c.id == instance_id)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    if row is None:
        raise NotFound(f"no process instance {instance_id!r}")
    return instance_from_row(row)


def instance_from_row(row: Any) -> Instance:
    inst = Instance(
        id=row["id"],
        definition_id=row["definition_id"],
        process_key=row["process_key"],
        business_key=row["business_key"],
        variables=dict(row["variables"] or {}),
        state=InstanceState(row["state"]),
        parent_instance_id=row["parent_instance_id"],
        parent_token_id=row["parent_token_id"],
        root_instance_id=row["root_instance_id"],
        version=row["version"],
        error=row["error"],
        suspended=bool(row["suspended"]),
        callback_message=row["callback_message"],
    )
    for raw in row["tokens"] or []:
        token = Token.from_json(raw)
        inst.tokens[token.id] = token
    return inst


_INSERT_INSTANCE = t.instances.insert()
_UPDATE_INSTANCE = t.instances.update().where(
    t.instances.c.id == sa.bindparam("b_id"), t.instances.c.version == sa.bindparam("b_version")
)


def save_instance(conn: Connection, inst: Instance, now: datetime) -> None:
    """Insert a new instance or update it if nobody changed it since it was loaded."""
    ended = db_time(now) if inst.state in FINAL_STATES else None
    values = {
        "state": inst.state.value,
        "variables": inst.variables,
        "tokens": inst.tokens_json(),
        "error": inst.error,
        "ended_at": ended,
    }
    # statements are built once and take parameters, so SQLAlchemy reuses their compiled form
    if inst.is_new:
        conn.execute(
            _INSERT_INSTANCE,
            {
                "id": inst.id,
                "definition_id": inst.definition_id,
                "process_key": inst.process_key,
                "business_key": inst.business_key,
                "version": 1,
                "parent_instance_id": inst.parent_instance_id,
                "parent_token_id": inst.parent_token_id,
                "root_instance_id": inst.root_instance_id,
                "callback_message": inst.callback_message,
                "suspended": False,
                "stop_requested": False,
                "started_at": db_time(now),
                **values,
            },
        )
        inst.is_new = False
        inst.version = 1
        return
    result = conn.execute(_UPDATE_INSTANCE, {"b_id": inst.id, "b_version": inst.version, "version": inst.version + 1, **values})
    if result.rowcount != 1:
        raise Conflict(
            f"process instance {inst.id} was changed by another command at the same time; reload it and try again"
        )
    inst.version += 1


# ------------------------------------------------------------------ effects
def write_effects(
    conn: Connection, effects: Effects, now: datetime, default_retries: int, *, dispatching: bool = False
) -> None:
    """Write every side effect of a command (same transaction as the instances)."""
    stamp = db_time(now)
    cleared = effects.cleared_tokens
    # only the tables an owner has rows in: a token that waited for a job costs one DELETE, not three
    for chunk in _chunks([o for o, kinds in cleared.items() if "s" in kinds], 500):
        conn.execute(t.subscriptions.delete().where(t.subscriptions.c.token_id.in_(chunk)))
    # a job command's own job row usually belongs to a cleared token: one DELETE removes both
    consumed = list(effects.consumed_jobs)
    for chunk in _chunks([o for o, kinds in cleared.items() if "j" in kinds], 500):
        if consumed and len(consumed) <= 500:
            conn.execute(t.jobs.delete().where(sa.or_(t.jobs.c.token_id.in_(chunk), t.jobs.c.id.in_(consumed))))
            consumed = []
        else:
            conn.execute(t.jobs.delete().where(t.jobs.c.token_id.in_(chunk)))
    for chunk in _chunks([o for o, kinds in cleared.items() if "t" in kinds], 500):
        conn.execute(
            t.tasks.update()
            .where(t.tasks.c.token_id.in_(chunk), t.tasks.c.state == "open")
            .values(state="completed", ended_at=stamp)
        )
    for token_id, outcome in effects.closed_tasks.items():
        conn.execute(
            t.tasks.update()
            .where(t.tasks.c.token_id == token_id, t.tasks.c.state.in_(("open", "completed")))
            .values(state=outcome, ended_at=stamp)
        )
    for chunk in _chunks(consumed, 500):
        conn.execute(t.jobs.delete().where(t.jobs.c.id.in_(chunk)))
    if effects.consumed_subscriptions:
        conn.execute(t.subscriptions.delete().where(t.subscriptions.c.id.in_(list(effects.consumed_subscriptions))))
    if effects.tasks:
        conn.execute(
            t.tasks.insert(),
            [
                {
                    "id": task.id,
                    "instance_id": task.instance_id,
                    "token_id": task.token_id,
                    "element_id": task.element_id,
                    "definition_id": task.definition_id,
                    "name": task.name,
                    "state": "open",
                    "attributes": task.attributes,
                    "created_at": db_time(task.created_at),
                    "ended_at": None,
                }
                for task in effects.tasks
            ],
        )
    if effects.subscriptions:
        conn.execute(
            t.subscriptions.insert(),
            [
                {
                    "id": s.id,
                    "kind": s.kind.value,
                    "name": s.name,
                    "instance_id": s.instance_id,
                    "token_id": s.token_id,
                    "element_id": s.element_id,
                    "definition_id": s.definition_id,
                    "business_key": s.business_key,
                    "created_at": stamp,
                }
                for s in effects.subscriptions
            ],
        )
    if effects.jobs:
        from bpmnlite.jobs.retry import parse_retries

        conn.execute(
            t.jobs.insert(),
            [
                {
                    "id": j.id,
                    "kind": j.kind.value,
                    "state": "timer" if j.kind in (JobKind.TIMER, JobKind.START_TIMER) else "executable",
                    "instance_id": j.instance_id,
                    "token_id": j.token_id,
                    "element_id": j.element_id,
                    "definition_id": j.definition_id,
                    "due_at": db_time(j.due_at),
                    "retries": parse_retries(j.retries, default_retries).attempts,
                    "retry_spec": j.retries,
                    "attempts": 0,
                    "exclusive": j.exclusive,
                    "priority": j.priority,
                    "lock_owner": None,
                    "lock_expires_at": None,
                    # sent right after the commit when a dispatcher exists; else the reconciler sends it
                    "dispatched_at": stamp if dispatching and j.kind in RUN_NOW else None,
                    "payload": j.payload,
                    "error_message": None,
                    "error_detail": None,
                    "created_at": stamp,
                }
                for j in effects.jobs
            ],
        )
    new_acts = [a for a in effects.activities.values()]
    if new_acts:
        conn.execute(
            t.activity_history.insert(),
            [
                {
                    "id": a.id,
                    "instance_id": a.instance_id,
                    "token_id": a.token_id,
                    "element_id": a.element_id,
                    "element_kind": a.element_kind,
                    "element_name": a.element_name,
                    "started_at": db_time(a.started_at),
                    "ended_at": db_time(a.ended_at),
                    "outcome": a.outcome,
                    "seq": a.seq,
                }
                for a in new_acts
            ],
        )
    if effects.ended_activities:
        by_outcome: dict[str, list[str]] = {}
        for act_id, (_at, outcome) in effects.ended_activities.items():
            by_outcome.setdefault(outcome, []).append(act_id)
        for outcome, ids in by_outcome.items():
            for chunk in _chunks(ids, 500):
                conn.execute(
                    t.activity_history.update()
                    .where(t.activity_history.c.id.in_(chunk))
                    .values(ended_at=stamp, outcome=outcome)
                )
    if effects.variables:
        conn.execute(
            t.variable_history.insert(),
            [
                {
                    "instance_id": v.instance_id,
                    "name": v.name,
                    "value": v.value,
                    "element_id": v.element_id,
                    "at": db_time(v.at),
                }
                for v in effects.variables
            ],
        )


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
