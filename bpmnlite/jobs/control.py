"""Operating on jobs: resuming them, re-arming timer cycles, retries, suspension, locks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bpmnlite.errors import Conflict, NotFound
from bpmnlite.queries import job_info
from bpmnlite.records import InstanceInfo, JobInfo
from bpmnlite.runtime import activities, events, timers
from bpmnlite.runtime.effects import JobKind, JobRecord
from bpmnlite.runtime.graph import ExecutionGraph
from bpmnlite.runtime.runner import Runner
from bpmnlite.runtime.state import FINAL_STATES, Instance, Wait, new_id
from bpmnlite.store import repository
from bpmnlite.store import tables as t

if TYPE_CHECKING:
    from bpmnlite.engine import Engine


def retry(engine: Engine, job_id: str, retries: int | None = None) -> JobInfo:
    """Make an incident (or a failing job) runnable again with ``retries`` attempts."""
    if retries is not None and retries < 1:
        raise ValueError("a retried job needs at least 1 attempt")
    with engine.db.begin() as conn:
        row = conn.execute(sa.select(t.jobs).where(t.jobs.c.id == job_id)).first()
        if row is None:
            raise NotFound(f"no job {job_id!r}")
        state = (
            "timer"
            if row.kind in (JobKind.TIMER.value, JobKind.START_TIMER.value) and row.state != "deadletter"
            else "executable"
        )
        if row.instance_id is not None:
            suspended = conn.execute(
                sa.select(t.instances.c.suspended).where(t.instances.c.id == row.instance_id)
            ).scalar()
            if suspended:
                state = "suspended"  # it runs when the instance is activated
        conn.execute(
            t.jobs.update()
            .where(t.jobs.c.id == job_id)
            .values(
                state=state,
                retries=engine.default_retries if retries is None else retries,
                due_at=repository.db_time(engine.clock()),
                lock_owner=None,
                lock_expires_at=None,
            )
        )
        new = conn.execute(sa.select(t.jobs).where(t.jobs.c.id == job_id)).first()
    assert new is not None
    return job_info(new)


def release_locks(engine: Engine, owner: str) -> None:
    """Give back every job lock and instance lease held by ``owner`` (a stopping worker)."""
    with engine.db.begin() as conn:
        conn.execute(t.jobs.update().where(t.jobs.c.lock_owner == owner)
                     .values(lock_owner=None, lock_expires_at=None, dispatched_at=None))
        conn.execute(t.instances.update().where(t.instances.c.lease_owner == owner)
                     .values(lease_owner=None, lease_expires_at=None))


def set_suspended(engine: Engine, instance_id: str, suspended: bool) -> InstanceInfo:
    with engine.db.begin() as conn:
        inst = repository.load_instance(conn, instance_id)
        if inst.state in FINAL_STATES:
            raise Conflict(f"process instance {instance_id} has already ended ({inst.state.value})")
        conn.execute(t.instances.update().where(t.instances.c.id == instance_id).values(suspended=suspended))
        jobs = t.jobs
        if suspended:
            conn.execute(jobs.update().where(jobs.c.instance_id == instance_id, jobs.c.state.in_(("executable", "timer")))
                         .values(state="suspended"))
        else:
            for kind, state in ((JobKind.TIMER.value, "timer"), (JobKind.ASYNC_BEFORE.value, "executable"),
                                (JobKind.ASYNC_AFTER.value, "executable")):
                conn.execute(jobs.update().where(jobs.c.instance_id == instance_id, jobs.c.state == "suspended",
                                                 jobs.c.kind == kind).values(state=state, dispatched_at=None))
    return engine.instance(instance_id)


def resume(engine: Engine, conn: Connection, runner: Runner, row: Any) -> None:
    kind = JobKind(row.kind)
    if kind is JobKind.START_TIMER:
        graph = engine.deployer.graph(conn, row.definition_id)
        start = graph.nodes[row.element_id]
        rearm(engine, runner, row, None, graph)
        events.start_instance(runner, row.definition_id, graph, {}, None, start=start)
        return
    inst = runner.instance(row.instance_id)
    if inst.state in FINAL_STATES:
        return
    if kind is JobKind.TIMER:
        owner_exists = row.token_id == inst.id or row.token_id in inst.tokens
        if not owner_exists:
            return
        graph = runner.graph_of(inst)
        element = graph.nodes[row.payload["element"]]
        if events.is_cycle_reusable(element):
            rearm(engine, runner, row, inst, graph)
        events.deliver(runner, inst, row.token_id, element.id, None)
        return
    token = inst.tokens.get(row.token_id)
    if kind is JobKind.CALL_RETURN:
        if token is not None and token.wait is Wait.CALL and token.data.get("child") == row.payload["child"]:
            child = runner.env.load_instance(row.payload["child"])  # read only: it has completed
            activities.return_from_child(runner, inst, token, child)
        return
    if token is None or token.wait not in (Wait.ASYNC_BEFORE, Wait.ASYNC_AFTER):
        return  # stale: the token moved on (e.g. an interrupting boundary event)
    token.data["resumed"] = 1
    token.wait = Wait.NONE
    runner.enqueue(inst, token)


def rearm(engine: Engine, runner: Runner, row: Any, inst: Instance | None, graph: ExecutionGraph) -> None:
    """Schedule the next firing of a timer cycle."""
    timer = (row.payload or {}).get("timer") or {}
    if timer.get("kind") != "timeCycle":
        return
    due = repository.py_time(row.due_at) or runner.now
    nxt = timers.next_cycle(timer["text"], due, timer.get("remaining"))
    if nxt is None:
        return

    runner.effects.jobs.append(
        JobRecord(
            id=new_id(),
            kind=JobKind(row.kind),
            instance_id=row.instance_id,
            token_id=row.token_id,
            element_id=row.element_id,
            definition_id=row.definition_id,
            due_at=nxt.due_at,
            payload={"timer": timers.to_json(nxt), "element": row.payload["element"]},
        )
    )
