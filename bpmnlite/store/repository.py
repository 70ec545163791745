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
from bpmnlite.store.writer import Batch, to_json


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


def save_instance(conn: Connection, inst: Instance, now: datetime, batch: Batch | None = None) -> None:
    """Insert a new instance or update it if nobody changed it since it was loaded.

    With ``batch``, the statement joins it and the caller flushes and checks
    the version (``check_saved``); without, it is sent now.
    """
    own = batch is None
    batch = batch or Batch(conn)
    state = inst.state.value
    ended = batch.time(now) if inst.state in FINAL_STATES else None
    variables = to_json(inst.variables)
    tokens = to_json(inst.tokens_json())
    if inst.is_new:
        batch.insert(t.instances, [{
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
            "started_at": now,
            "state": state,
            "variables": inst.variables,
            "tokens": inst.tokens_json(),
            "error": inst.error,
            "ended_at": now if inst.state in FINAL_STATES else None,
        }])
        inst.is_new = False
        inst.version = 1
    else:
        batch.execute(
            "UPDATE bpm_instances SET state = {mark}, variables = {mark}, tokens = {mark}, error = {mark}, "
            "ended_at = {mark}, version = {mark} WHERE id = {mark} AND version = {mark}",
            (state, variables, tokens, inst.error, ended, inst.version + 1, inst.id, inst.version),
            check=True,
        )
        inst.version += 1
    if own and batch.flush() >= 0:
        raise _conflict(inst.id)


def check_saved(failed: int, updated: list[str]) -> None:
    """Raise Conflict when a batched instance UPDATE found its row changed (``Batch.flush``'s result)."""
    if failed >= 0:
        raise _conflict(updated[failed])


def _conflict(instance_id: str) -> Conflict:
    return Conflict(
        f"process instance {instance_id} was changed by another command at the same time; reload it and try again"
    )


# ------------------------------------------------------------------ effects
def write_effects(
    conn: Connection, effects: Effects, now: datetime, default_retries: int, *, dispatching: bool = False,
    batch: Batch | None = None,
) -> None:
    """Write every side effect of a command (same transaction as the instances).

    With ``batch`` the statements join it and the caller flushes; without, they are sent now.
    """
    own = batch is None
    b = batch or Batch(conn)
    stamp = now
    at = b.time(now)
    cleared = effects.cleared_tokens
    # only the tables an owner has rows in: a token that waited for a job costs one DELETE, not three
    for chunk in _chunks([o for o, kinds in cleared.items() if "s" in kinds], 500):
        where, params = b.in_list("token_id", chunk)
        b.execute(f"DELETE FROM bpm_subscriptions WHERE {where}", params)
    # a job command's own job row usually belongs to a cleared token: one DELETE removes both
    consumed = list(effects.consumed_jobs)
    for chunk in _chunks([o for o, kinds in cleared.items() if "j" in kinds], 500):
        where, params = b.in_list("token_id", chunk)
        if consumed and len(consumed) <= 500:
            by_id, more = b.in_list("id", consumed)
            b.execute(f"DELETE FROM bpm_jobs WHERE {where} OR {by_id}", params + more)
            consumed = []
        else:
            b.execute(f"DELETE FROM bpm_jobs WHERE {where}", params)
    for chunk in _chunks(consumed, 500):
        where, params = b.in_list("id", chunk)
        b.execute(f"DELETE FROM bpm_jobs WHERE {where}", params)
    for chunk in _chunks([o for o, kinds in cleared.items() if "t" in kinds], 500):
        where, params = b.in_list("token_id", chunk)
        b.execute(f"UPDATE bpm_tasks SET state = 'completed', ended_at = {{mark}} WHERE {where} AND state = 'open'",
                  [at, *params])
    for token_id, outcome in effects.closed_tasks.items():
        b.execute("UPDATE bpm_tasks SET state = {mark}, ended_at = {mark} "
                  "WHERE token_id = {mark} AND state IN ('open', 'completed')", (outcome, at, token_id))
    for chunk in _chunks(list(effects.consumed_subscriptions), 500):
        where, params = b.in_list("id", chunk)
        b.execute(f"DELETE FROM bpm_subscriptions WHERE {where}", params)
    b.insert(t.tasks, [
        {
            "id": task.id,
            "instance_id": task.instance_id,
            "token_id": task.token_id,
            "element_id": task.element_id,
            "definition_id": task.definition_id,
            "name": task.name,
            "state": "open",
            "attributes": task.attributes,
            "created_at": task.created_at,
            "ended_at": None,
        }
        for task in effects.tasks
    ])
    b.insert(t.subscriptions, [
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
    ])
    if effects.jobs:
        from bpmnlite.jobs.retry import parse_retries

        b.insert(t.jobs, [
            {
                "id": j.id,
                "kind": j.kind.value,
                "state": "timer" if j.kind in (JobKind.TIMER, JobKind.START_TIMER) else "executable",
                "instance_id": j.instance_id,
                "token_id": j.token_id,
                "element_id": j.element_id,
                "definition_id": j.definition_id,
                "due_at": j.due_at,
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
        ])
    # the bulk of a command's rows: converted here, not column by column in Batch.insert
    time = b.time
    b.insert_values(t.activity_history, _ACTIVITY_COLUMNS, [
        (a.id, a.instance_id, a.token_id, a.element_id, a.element_kind, a.element_name,
         time(a.started_at), time(a.ended_at), a.outcome, a.seq)
        for a in effects.activities.values()
    ])
    if effects.ended_activities:
        # rows of earlier commands, found by their key (instance, id), each ended at its own time
        grouped: dict[tuple[str, datetime, str], list[str]] = {}
        for act_id, (instance_id, ended_at, outcome) in effects.ended_activities.items():
            grouped.setdefault((instance_id, ended_at, outcome), []).append(act_id)
        for (instance_id, ended_at, outcome), ids in grouped.items():
            for chunk in _chunks(ids, 500):
                where, params = b.in_list("id", chunk)
                b.execute("UPDATE bpm_activity_history SET ended_at = {mark}, outcome = {mark} "
                          f"WHERE instance_id = {{mark}} AND {where}",
                          [time(ended_at), outcome, instance_id, *params])
    dumps = to_json
    b.insert_values(t.variable_history, _VARIABLE_COLUMNS, [
        (v.instance_id, v.seq, v.name, dumps(v.value), v.element_id, time(v.at)) for v in effects.variables
    ])
    if own:
        b.flush()


_ACTIVITY_COLUMNS = ("id", "instance_id", "token_id", "element_id", "element_kind", "element_name",
                     "started_at", "ended_at", "outcome", "seq")
_VARIABLE_COLUMNS = ("instance_id", "id", "name", "value", "element_id", "at")


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
