"""Running one job, and the reconciler that keeps messages and rows in step.

``run_job`` is what a worker thread does with a message. The common case is
**one transaction**: the job's command claims the job row with
``SELECT ... FOR UPDATE SKIP LOCKED`` (an exclusive job also locks its
instance row the same way), runs the job, deletes the row and commits. A
duplicate message finds the row locked or gone and is dropped at once; a
worker that dies mid-job loses its connection, the database rolls the claim
back, and the reconciler re-sends the job. On failure the command rolls back
and a new transaction spends a retry (``failures``).

A job whose element has ``maxConcurrent`` takes the older two-step path: a
committed lock (``acquire``) counted by the other workers, then the command.

``reconcile`` runs in every worker, many at once: each due job is claimed by
setting ``dispatched_at`` in a conditional update, so only one scheduler
sends a given job per ``resend_after`` window.
"""

from __future__ import annotations

import traceback
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from bpmnlite.dispatch import is_time_limit
from bpmnlite.errors import Conflict, TaskStopped, UncaughtBpmnError
from bpmnlite.jobs import batch, control, failures
from bpmnlite.jobs.acquire import RUNNABLE, Claim, acquire, release
from bpmnlite.runtime.runner import Runner
from bpmnlite.runtime.state import FINAL_STATES, Wait
from bpmnlite.runtime.timers import parse_duration
from bpmnlite.store import repository
from bpmnlite.store import tables as t
from bpmnlite.store.writer import driver_query_one

if TYPE_CHECKING:
    from bpmnlite.engine import Engine

_JOBS = t.jobs
_CLAIM = sa.select(_JOBS).where(
    _JOBS.c.id == sa.bindparam("job_id"),
    _JOBS.c.state.in_(RUNNABLE),
    _JOBS.c.due_at <= sa.bindparam("now"),
    sa.or_(_JOBS.c.lock_owner.is_(None), _JOBS.c.lock_expires_at < sa.bindparam("now")),
)
_INSTANCES = t.instances
_LOCK_INSTANCE = sa.select(_INSTANCES).where(
    _INSTANCES.c.id == sa.bindparam("instance_id"),
    sa.or_(_INSTANCES.c.lease_owner.is_(None), _INSTANCES.c.lease_expires_at < sa.bindparam("now")),
)
# only what running a job reads (control.resume, element_limits, instance_from_row): the driver's
# per-column work on a 39-column row was about a tenth of a worker's CPU per job
_JOB_COLUMNS = batch.JOB_COLUMNS
_INSTANCE_COLUMNS = batch.INSTANCE_COLUMNS
# PostgreSQL: the job row and, for an exclusive job, its instance row, locked and read in one round trip.
# Sent straight to the driver: it is the first statement of every job, and SQLAlchemy's statement and
# result handling cost about as much CPU as the rest of the claim (same SQL as _CLAIM, _LOCK_INSTANCE).
_CLAIM_WITH_INSTANCE_PG = f"""
WITH claimed_job AS (
    SELECT * FROM bpm_jobs
     WHERE id = %(job_id)s AND state IN ({", ".join(f"'{state}'" for state in RUNNABLE)})
       AND due_at <= %(now)s AND (lock_owner IS NULL OR lock_expires_at < %(now)s)
       FOR UPDATE SKIP LOCKED
), locked_instance AS (
    SELECT bpm_instances.* FROM bpm_instances, claimed_job
     WHERE bpm_instances.id = claimed_job.instance_id AND claimed_job.exclusive
       AND (bpm_instances.lease_owner IS NULL OR bpm_instances.lease_expires_at < %(now)s)
       FOR UPDATE OF bpm_instances SKIP LOCKED
)
SELECT {", ".join(f"j.{name}" for name in _JOB_COLUMNS)}, {", ".join(f"i.{name}" for name in _INSTANCE_COLUMNS)}
  FROM claimed_job j LEFT JOIN locked_instance i ON true
"""
_UNDISPATCH = _JOBS.update().where(_JOBS.c.id == sa.bindparam("job_id")).values(dispatched_at=None)


def give_back(engine: Engine, job_id: str) -> None:
    """Leave a job unstarted for another worker: the reconciler sends it again at its next tick."""
    with engine.db.begin() as conn:
        conn.execute(_UNDISPATCH, {"job_id": job_id})


class _NotRun(Exception):
    """Leaves the job's transaction without running it (nothing was written)."""

    def __init__(self, outcome: str, row: Any = None) -> None:
        super().__init__(outcome)
        self.outcome = outcome
        self.row = row


def element_limits(engine: Engine, conn: Any, row: Any) -> tuple[int | None, int | None]:
    """(max_concurrent, timeout in ms) of the job's element (the graph is cached after the first job)."""
    graph = engine.deployer.graph(conn, row.definition_id)
    node = graph.nodes.get(row.element_id)
    if node is None:
        return None, None
    cfg = node.asynchronous
    timeout = int(parse_duration(cfg.timeout).total_seconds() * 1000) if cfg.timeout else None
    return cfg.max_concurrent, timeout


CHAIN_LIMIT = 10
"""The most jobs a message runs in a row after its own (see ``run_job``): the rest of the queue gets its turn."""


def run_job(engine: Engine, job_id: str, owner: str, now: datetime | None = None, *, chain: bool = True) -> str:
    """Claim and run one job. Returns done, failed, incident, conflict, stopped, skipped or gone.

    ``now`` (default: the engine clock) decides whether the job is due.

    With ``chain``, when the job's command created jobs that are due at once
    (the next async step of the instance, usually), this thread runs the first
    of them next, in its own transaction, and sends messages for the others:
    no broker round trip and no wait for a consumer for the common chain of
    async steps. Each job keeps its own transaction, claim and time limit. A
    crash between two of them loses no job: the unsent one's row is due, and
    the reconciler sends it after ``resend_after``. Chaining stops after
    ``CHAIN_LIMIT`` jobs and when the worker is stopping.

    On PostgreSQL, with ``chain`` and ``Engine.job_batch`` above 1, the job
    and the chained jobs run as batches: with other due jobs of other
    instances, several in one transaction (see ``jobs.batch``).
    """
    if job_id in engine.finished_jobs:
        return "skipped"  # this process ran it in a batch: the message came late (``jobs.batch``)
    batching = chain and engine.job_batch > 1 and engine.db.dialect.name == "postgresql"
    if batching and now is None:
        outcome, created = _first_batch(engine, job_id, owner)
    else:
        outcome, created = _run_one(engine, job_id, owner, now, chained=False)
    for _ in range(CHAIN_LIMIT if chain else 0):
        if not created or engine.stopping.is_set():
            break
        if batching:
            listed, later = created[:engine.job_batch], created[engine.job_batch:]
            try:
                done = batch.run_batch(engine, listed, owner, extra=engine.job_batch - len(listed))
            except BaseException as exc:
                # the batch rolled back (a time limit outside every job's own run, the database
                # gone at the claim): the jobs it was given get their messages, as unchained ones
                engine._send(created)
                if is_time_limit(exc):
                    return outcome
                raise
            engine._send(later + done.not_run)
            created = done.created
            continue
        current, rest = created[0], created[1:]
        engine._send(rest)
        try:
            _outcome, created = _run_one(engine, current, owner, None, chained=True)
        except BaseException as exc:
            if is_time_limit(exc):  # Dramatiq's interrupt, meant for the job running now
                engine.job_timed_out(current, owner=owner)
                return outcome
            raise
    engine._send(created)
    return outcome


def _first_batch(engine: Engine, job_id: str, owner: str) -> tuple[str, list[str]]:
    """The message's job heads a batch: a message whose job another worker already ran still brings
    due jobs along. A job a batch does not run (busy instance, ``maxConcurrent``...) runs on its own."""
    try:
        done = batch.run_batch(engine, [job_id], owner, extra=engine.job_batch - 1)
    except BaseException as exc:
        if is_time_limit(exc):  # struck outside every job's own run: the batch rolled back
            engine._send([job_id])
            return "skipped", []
        raise
    created = done.created
    # the batch held the others it could not run while other workers' messages for them came and went:
    # send them now, before this job runs alone, or they would wait for it (``maxConcurrent`` jobs of
    # one element then ran one after another)
    engine._send([j for j in done.not_run if j != job_id])
    if job_id in done.not_run:
        outcome, alone = _run_one(engine, job_id, owner, None, chained=False)
        created = created + alone
    else:
        outcome = done.outcomes.get(job_id, "skipped")  # not claimed: running elsewhere, gone, or not due
    return outcome, created


def run_alone(engine: Engine, job_id: str, owner: str) -> tuple[str, list[str]]:
    """Run one job in its own transaction, as a chained job; returns its outcome and the jobs it created."""
    try:
        return _run_one(engine, job_id, owner, None, chained=True)
    except BaseException as exc:
        if is_time_limit(exc):
            return engine.job_timed_out(job_id, owner=owner), []
        raise


def _run_one(engine: Engine, job_id: str, owner: str, now: datetime | None, *,
             chained: bool) -> tuple[str, list[str]]:
    """Run one job; returns its outcome and the jobs its command created, not yet sent."""
    now = now or engine.clock()
    stamp = repository.db_time(now)
    postgres = engine.db.dialect.name == "postgresql"
    try:
        with engine._command(send=False) as (conn, runner):
            row, inst_row = _claim(conn, job_id, stamp, postgres)
            if row is None:
                raise _NotRun("skipped")  # running elsewhere, gone, not due, or not runnable
            max_concurrent, timeout = element_limits(engine, conn, row)
            if max_concurrent is not None:
                raise _NotRun("limited", row)
            if row.exclusive and row.instance_id is not None:
                if inst_row is None:
                    raise _NotRun("busy", row)  # another exclusive job of the instance runs
                runner.adopt(repository.instance_from_row(inst_row))
            if engine.dispatcher is not None and (timeout is not None or chained):
                # a chained job gets a fresh limit: the element's, or the one every message gets
                engine.dispatcher.limit_current_job(timeout or int(engine.lock_duration.total_seconds() * 1000))
            runner.effects.consumed_jobs.add(job_id)
            runner.in_job = True
            control.resume(engine, conn, runner, row)
    except _NotRun as stop:
        if stop.outcome == "limited":
            return _run_limited(engine, job_id, owner, now, stop.row), []
        if stop.outcome == "busy":
            # the running job usually sends it when it ends (``may_wait``); the reconciler is the backstop
            give_back(engine, job_id)
        return "skipped", []
    except Exception as exc:
        return job_failed(engine, job_id, exc, traceback.format_exc(), owner), []
    if row.exclusive and row.instance_id is not None and may_wait(runner, row.instance_id):
        # jobs of the same instance that found it locked by this one
        waiting = due_jobs_of_instance(engine, row.instance_id, exclude=job_id)
        engine._send([j for j in waiting if j not in runner.created_jobs])
    return "done", list(runner.created_jobs)


def job_failed(engine: Engine, job_id: str, exc: BaseException, detail: str, owner: str) -> str:
    """What a job's failed command (already rolled back) comes to; returns the outcome."""
    if isinstance(exc, Conflict):
        # another command changed the instance first: run again, without spending a retry
        engine._send([job_id])
        return "conflict"
    if isinstance(exc, TaskStopped):
        return "stopped"  # the instance is being cancelled; the cancel removes the job
    if isinstance(exc, UncaughtBpmnError):
        return failures.record_failure(engine, job_id, exc, incident=True)
    if not isinstance(exc, Exception):  # Dramatiq's time-limit interrupt itself
        return engine.job_timed_out(job_id, owner=owner)
    # any other failure: retry after a back-off, or an incident; the interrupt may strike inside
    # a database call and be replaced by the driver's error
    return failures.record_failure(engine, job_id, exc, incident=False, detail=detail, timed_out=is_time_limit(exc))


def _claim(conn: Any, job_id: str, stamp: Any, postgres: bool) -> tuple[Any, Any]:
    """Lock and read the job row, and an exclusive job's instance row; (None, None) when the job is
    not ours to run, (job, None) when its instance is locked by another job (or it needs none)."""
    params = {"job_id": job_id, "now": stamp}
    if postgres:
        found = driver_query_one(conn, _CLAIM_WITH_INSTANCE_PG, params)
        if found is None:
            return None, None
        split = len(_JOB_COLUMNS)
        job = batch.JobRow(zip(_JOB_COLUMNS, found[:split], strict=True))
        if found[split] is None:
            return job, None
        return job, dict(zip(_INSTANCE_COLUMNS, found[split:], strict=True))
    row = conn.execute(_CLAIM, params).first()
    if row is None or not (row.exclusive and row.instance_id is not None):
        return row, None
    inst = conn.execute(_LOCK_INSTANCE, {"instance_id": row.instance_id, "now": stamp}).mappings().first()
    return row, inst


def may_wait(runner: Runner, instance_id: str) -> bool:
    """Whether another job of the instance may have found it locked by the job that just ran.

    Only an instance with more tokens at async waits than the command
    created jobs for, or with a call activity whose child may hand back,
    can have one; the usual chain of async steps has none, and saves the query.
    """
    inst = runner.instances.get(instance_id)
    if inst is None or inst.state in FINAL_STATES:
        return False
    at_async = 0
    for token in inst.tokens.values():
        if token.wait is Wait.CALL:
            return True
        if token.wait in (Wait.ASYNC_BEFORE, Wait.ASYNC_AFTER):
            at_async += 1
    return at_async > len(runner.created_jobs)


def _run_limited(engine: Engine, job_id: str, owner: str, now: datetime, row: Any) -> str:
    """A job whose element has ``maxConcurrent``: a committed lock the other workers count, then the command."""
    with engine.db.begin() as conn:
        max_concurrent, timeout = element_limits(engine, conn, row)
        claim = acquire(conn, job_id, owner, now, engine.lock_duration, max_concurrent)
    if claim is None:
        return "skipped"
    if timeout is not None and engine.dispatcher is not None:
        engine.dispatcher.limit_current_job(timeout)
    try:
        return _run_claimed(engine, job_id, claim)
    finally:
        # a slot of this element is free again: wake the jobs that waited for one
        engine._send(due_jobs_of_element(engine, row.definition_id, row.element_id, max_concurrent or 1))


def due_jobs_of_element(engine: Engine, definition_id: str, element_id: str, limit: int) -> list[str]:
    stamp = repository.db_time(engine.clock())
    with engine.reader.connect() as conn:
        rows = conn.execute(
            sa.select(t.jobs.c.id).where(
                t.jobs.c.definition_id == definition_id, t.jobs.c.element_id == element_id,
                t.jobs.c.state.in_(RUNNABLE), t.jobs.c.due_at <= stamp, t.jobs.c.lock_owner.is_(None),
            ).order_by(t.jobs.c.priority.desc(), t.jobs.c.due_at).limit(limit)
        )
        return [r.id for r in rows]


def _run_claimed(engine: Engine, job_id: str, claim: Claim) -> str:
    try:
        created = engine._run_job_command(job_id, claim)  # it sends messages for the jobs it created
    except Conflict:
        # another command changed the instance first: run again, without spending a retry
        with engine.db.begin() as conn:
            release(conn, claim)
            conn.execute(t.jobs.update().where(t.jobs.c.id == job_id).values(dispatched_at=None))
        engine._send([job_id])
        return "conflict"
    except TaskStopped:
        # the instance is being cancelled: give the job back; the cancel removes it
        with engine.db.begin() as conn:
            release(conn, claim)
        return "stopped"
    except UncaughtBpmnError as err:
        outcome = failures.record_failure(engine, job_id, err, incident=True, claim=claim)
        return outcome
    except Exception as exc:  # any other failure: retry after a back-off, or an incident
        timed_out = is_time_limit(exc)  # the interrupt may strike inside a DB call and be replaced
        return failures.record_failure(engine, job_id, exc, incident=False, detail=traceback.format_exc(),
                                       claim=claim, timed_out=timed_out)
    if claim.exclusive and claim.instance_id:
        # jobs of the same instance that waited for our lease
        waiting = due_jobs_of_instance(engine, claim.instance_id, exclude=job_id)
        engine._send([j for j in waiting if j not in created])
    return "done"


def due_jobs_of_instance(engine: Engine, instance_id: str, exclude: str) -> list[str]:
    stamp = repository.db_time(engine.clock())
    with engine.reader.connect() as conn:
        rows = conn.execute(
            sa.select(t.jobs.c.id).where(
                t.jobs.c.instance_id == instance_id, t.jobs.c.state.in_(RUNNABLE),
                t.jobs.c.due_at <= stamp, t.jobs.c.lock_owner.is_(None), t.jobs.c.id != exclude,
            )
        )
        return [r.id for r in rows]


def hold_claim(conn: Any, claim: Claim) -> Any:
    """First statement of a job's transaction: lock the job row, and check it is still ours.

    The row lock (``FOR UPDATE`` on PostgreSQL; SQLite's write lock is
    already exclusive) keeps another worker from taking the job over while
    this transaction runs, even past the lock expiry; if this process dies,
    the database drops the row lock with the connection. Returns the row, or
    None when the job is gone or was taken over after our lock expired.
    """
    query = sa.select(t.jobs).where(t.jobs.c.id == claim.job_id, t.jobs.c.lock_owner == claim.owner)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return conn.execute(query).first()


def reconcile(engine: Engine, now: datetime | None = None, limit: int = 500) -> list[str]:
    """Claim and return due jobs whose message may be lost (never sent, or sent long ago).

    Also frees expired job locks and instance leases, so a job of a dead
    worker runs again. Safe to run in many workers at once.
    """
    now = now or engine.clock()
    stamp = repository.db_time(now)
    stale = repository.db_time(now - engine.resend_after)
    jobs = t.jobs
    postgres = engine.db.dialect.name == "postgresql"
    with engine.db.begin() as conn:
        # a job still running past its lock holds its row lock: skip it rather than wait for it
        expired = sa.select(jobs.c.id).where(jobs.c.lock_owner.is_not(None), jobs.c.lock_expires_at < stamp)
        if postgres:
            expired = expired.with_for_update(skip_locked=True)
        ids = [r.id for r in conn.execute(expired)]
        if ids:
            conn.execute(jobs.update().where(jobs.c.id.in_(ids))
                         .values(lock_owner=None, lock_expires_at=None, dispatched_at=None))
        leases = sa.select(t.instances.c.id).where(
            t.instances.c.lease_owner.is_not(None), t.instances.c.lease_expires_at < stamp
        )
        if postgres:
            leases = leases.with_for_update(skip_locked=True)
        lease_ids = [r.id for r in conn.execute(leases)]
        if lease_ids:
            conn.execute(t.instances.update().where(t.instances.c.id.in_(lease_ids))
                         .values(lease_owner=None, lease_expires_at=None))
        due = (
            sa.select(jobs.c.id).where(
                jobs.c.state.in_(RUNNABLE), jobs.c.due_at <= stamp, jobs.c.lock_owner.is_(None),
                sa.or_(jobs.c.dispatched_at.is_(None), jobs.c.dispatched_at < stale),
            ).order_by(jobs.c.priority.desc(), jobs.c.due_at).limit(limit)
        )
        if postgres:
            # a running job holds its row lock (and shows no lock owner): it needs no message
            due = due.with_for_update(skip_locked=True)
        candidates = [r.id for r in conn.execute(due)]
        if not candidates:
            return []
        # one statement claims them all; a job another scheduler claimed meanwhile no longer matches
        result = conn.execute(
            jobs.update()
            .where(jobs.c.id.in_(candidates), sa.or_(jobs.c.dispatched_at.is_(None), jobs.c.dispatched_at < stale))
            .values(dispatched_at=stamp)
            .returning(jobs.c.id)
        )
        return [r.id for r in result]
