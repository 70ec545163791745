"""Read-only queries behind the Engine's listing methods.

They use the engine's reader (a non-blocking transaction on SQLite) and
return immutable records; nothing here changes state.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from bpmnlite.errors import NotFound
from bpmnlite.records import ActivityInfo, DefinitionInfo, InstanceInfo, JobInfo, TaskInfo, VariableChange
from bpmnlite.runtime.state import Instance
from bpmnlite.store import repository
from bpmnlite.store import tables as t

if TYPE_CHECKING:
    from bpmnlite.engine import Engine


def instance(engine: Engine, instance_id: str) -> InstanceInfo:
    """The instance as stored now. Raises NotFound."""
    with engine.reader.connect() as conn:
        row = conn.execute(sa.select(t.instances).where(t.instances.c.id == instance_id)).mappings().first()
    if row is None:
        raise NotFound(f"no process instance {instance_id!r}")
    return info_from_row(row)


def instances(engine: Engine, *,
    process_key: str | None = None,
    state: str | None = None,
    business_key: str | None = None,
    parent_instance_id: str | None = None,
    limit: int = 1000,
) -> list[InstanceInfo]:
    """Instances, newest first, filtered by key, state, business key or parent."""
    query = _equal(
        sa.select(t.instances), t.instances, process_key=process_key, state=state, business_key=business_key,
        parent_instance_id=parent_instance_id,
    ).order_by(t.instances.c.started_at.desc()).limit(limit)
    with engine.reader.connect() as conn:
        return [info_from_row(row) for row in conn.execute(query).mappings()]


def count_instances(engine: Engine) -> dict[tuple[str, str], int]:
    """Instances per (process key, state): what the dashboard and CLI show."""
    with engine.reader.connect() as conn:
        rows = conn.execute(
            sa.select(t.instances.c.process_key, t.instances.c.state, sa.func.count()).group_by(
                t.instances.c.process_key, t.instances.c.state
            )
        )
        return {(r[0], r[1]): r[2] for r in rows}


def tasks(engine: Engine, *, instance_id: str | None = None, element_id: str | None = None, state: str = "open", limit: int = 1000
) -> list[TaskInfo]:
    query = _equal(sa.select(t.tasks), t.tasks, state=state, instance_id=instance_id, element_id=element_id).order_by(t.tasks.c.created_at).limit(limit)
    with engine.reader.connect() as conn:
        return [
            TaskInfo(
                r.id,
                r.instance_id,
                r.element_id,
                r.name,
                r.state,
                repository.py_time(r.created_at),
                dict(r.attributes or {}),
                repository.py_time(r.ended_at),
            )
            for r in conn.execute(query)
        ]


def jobs(engine: Engine, *, instance_id: str | None = None, state: str | None = None, kind: str | None = None, limit: int = 1000
) -> list[JobInfo]:
    """Jobs (async continuations and timers); ``state="deadletter"`` are incidents."""
    query = _equal(sa.select(t.jobs), t.jobs, instance_id=instance_id, state=state, kind=kind).order_by(t.jobs.c.due_at, t.jobs.c.created_at).limit(limit)
    with engine.reader.connect() as conn:
        return [job_info(r) for r in conn.execute(query)]


def due_jobs(engine: Engine, now: datetime | None = None, limit: int = 100, *, timers_only: bool = False) -> list[str]:
    """Ids of jobs due at ``now`` (executable and timers), oldest first."""
    stamp = repository.db_time(now or engine.clock())
    states = ("timer",) if timers_only else ("executable", "timer")
    query = (
        sa.select(t.jobs.c.id)
        .where(
            t.jobs.c.state.in_(states),
            t.jobs.c.due_at <= stamp,
            sa.or_(t.jobs.c.lock_expires_at.is_(None), t.jobs.c.lock_expires_at < stamp),
        )
        .order_by(t.jobs.c.priority.desc(), t.jobs.c.due_at)
        .limit(limit)
    )
    with engine.reader.connect() as conn:
        return [r.id for r in conn.execute(query)]


def history(engine: Engine, instance_id: str) -> list[ActivityInfo]:
    """Activity instances of an instance in start order (element, start, end, outcome)."""
    with engine.reader.connect() as conn:
        rows = conn.execute(
            sa.select(t.activity_history)
            .where(t.activity_history.c.instance_id == instance_id)
            .order_by(t.activity_history.c.seq)
        )
        return [
            ActivityInfo(
                r.id,
                r.instance_id,
                r.element_id,
                r.element_kind,
                r.element_name,
                repository.py_time(r.started_at),
                repository.py_time(r.ended_at),
                r.outcome,
            )
            for r in rows
        ]


def variable_history(engine: Engine, instance_id: str) -> list[VariableChange]:
    with engine.reader.connect() as conn:
        rows = conn.execute(
            sa.select(t.variable_history)
            .where(t.variable_history.c.instance_id == instance_id)
            .order_by(t.variable_history.c.id)
        )
        return [
            VariableChange(r.instance_id, r.name, r.value, r.element_id, repository.py_time(r.at)) for r in rows
        ]


def definitions(engine: Engine, key: str | None = None) -> list[DefinitionInfo]:
    with engine.reader.connect() as conn:
        query = sa.select(t.definitions).order_by(t.definitions.c.key, t.definitions.c.version)
        if key is not None:
            query = query.where(t.definitions.c.key == key)
        return [definition_info(row) for row in conn.execute(query)]



def snapshot(inst: Instance, row: Any = None) -> InstanceInfo:
    """An immutable record of ``inst``; times and suspension come from its ``row`` when given."""
    return InstanceInfo(
        id=inst.id,
        process_key=inst.process_key,
        definition_id=inst.definition_id,
        business_key=inst.business_key,
        state=inst.state.value,
        variables=dict(inst.variables),
        active_elements=tuple(inst.active_elements),
        started_at=repository.py_time(row["started_at"]) if row is not None else None,
        ended_at=repository.py_time(row["ended_at"]) if row is not None else None,
        parent_instance_id=inst.parent_instance_id,
        suspended=bool(row["suspended"]) if row is not None else inst.suspended,
        error=inst.error,
    )


def _equal(query: Any, table: sa.Table, **values: Any) -> Any:
    """Add ``column == value`` for every filter given (None means "any")."""
    for name, value in values.items():
        if value is not None:
            query = query.where(table.c[name] == value)
    return query


def info_from_row(row: Any) -> InstanceInfo:
    return snapshot(repository.instance_from_row(row), row)


def job_info(r: Any) -> JobInfo:
    return JobInfo(
        id=r.id,
        kind=r.kind,
        state=r.state,
        instance_id=r.instance_id,
        element_id=r.element_id,
        due_at=repository.py_time(r.due_at),
        retries=r.retries,
        attempts=r.attempts,
        error_message=r.error_message,
        error_detail=r.error_detail,
        lock_owner=r.lock_owner,
        lock_expires_at=repository.py_time(r.lock_expires_at),
        exclusive=r.exclusive,
        priority=r.priority,
    )


def definition_info(row: Any) -> DefinitionInfo:
    return DefinitionInfo(
        row.id, row.key, row.version, row.name, row.executable, row.deployment_id,
        repository.py_time(row.deployed_at) or datetime.min,
    )
