"""The committed job lock, for jobs of an element with ``maxConcurrent``.

Most jobs are claimed inside their own command (``jobs.executor``: a row
lock taken with ``FOR UPDATE SKIP LOCKED``, nothing committed). A job whose
element limits how many of its jobs run at once needs the others to see it
running, so it takes a committed lock first: one atomic conditional
``UPDATE ... WHERE`` that also counts the element's running jobs. The worker
that wins owns the job until the lock expires; everyone else drops the
message. An exclusive job also takes a lease on its instance row, so two
exclusive jobs of one instance never run at the same time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bpmnlite.store import repository
from bpmnlite.store import tables as t

RUNNABLE = ("executable", "timer")


@dataclass(frozen=True, slots=True)
class Claim:
    """A job this worker owns until ``expires_at``."""

    job_id: str
    instance_id: str | None
    owner: str
    exclusive: bool
    expires_at: datetime


def acquire(conn: Connection, job_id: str, owner: str, now: datetime, lock_for: timedelta,
            max_concurrent: int | None = None) -> Claim | None:
    """Lock ``job_id`` for ``owner`` if it is due, unlocked (or its lock expired) and allowed to run.

    Returns None when another worker has it, it is gone, not due, its
    instance is leased by another exclusive job, or its element already runs
    ``max_concurrent`` jobs. Runs in the caller's transaction.
    """
    stamp = repository.db_time(now)
    expires = now + lock_for
    jobs = t.jobs
    conditions: list[Any] = [
        jobs.c.id == job_id,
        jobs.c.state.in_(RUNNABLE),
        jobs.c.due_at <= stamp,
        sa.or_(jobs.c.lock_owner.is_(None), jobs.c.lock_expires_at < stamp),
    ]
    if max_concurrent is not None:
        if conn.dialect.name == "postgresql":
            # READ COMMITTED would let concurrent acquisitions all see a free slot: take turns per element
            # (SQLite transactions are serial already)
            key = f"bpmnlite:{job_id}"
            row = conn.execute(sa.select(jobs.c.definition_id, jobs.c.element_id).where(jobs.c.id == job_id)).first()
            if row is not None:
                key = f"bpmnlite:{row.definition_id}:{row.element_id}"
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(key))))
        running = sa.alias(jobs, "running")
        busy = (
            sa.select(sa.func.count())
            .select_from(running)
            .where(
                running.c.element_id == jobs.c.element_id,
                running.c.definition_id == jobs.c.definition_id,
                running.c.lock_owner.is_not(None),
                running.c.lock_expires_at >= stamp,
                running.c.id != job_id,
            )
            .scalar_subquery()
        )
        conditions.append(busy < max_concurrent)
    result = conn.execute(
        jobs.update().where(*conditions).values(lock_owner=owner, lock_expires_at=repository.db_time(expires))
    )
    if result.rowcount != 1:
        return None
    row = conn.execute(sa.select(jobs.c.instance_id, jobs.c.exclusive).where(jobs.c.id == job_id)).first()
    assert row is not None
    claim = Claim(job_id, row.instance_id, owner, bool(row.exclusive), expires)
    if claim.exclusive and claim.instance_id is not None:
        leased = conn.execute(
            t.instances.update()
            .where(
                t.instances.c.id == claim.instance_id,
                sa.or_(
                    t.instances.c.lease_owner.is_(None),
                    t.instances.c.lease_owner == owner,
                    t.instances.c.lease_expires_at < stamp,
                ),
            )
            .values(lease_owner=owner, lease_expires_at=repository.db_time(expires))
        )
        if leased.rowcount != 1:
            release(conn, claim)
            return None
    return claim


def release(conn: Connection, claim: Claim) -> None:
    """Give up the job lock and the instance lease (the job row may already be gone)."""
    conn.execute(
        t.jobs.update()
        .where(t.jobs.c.id == claim.job_id, t.jobs.c.lock_owner == claim.owner)
        .values(lock_owner=None, lock_expires_at=None)
    )
    if claim.exclusive and claim.instance_id is not None:
        conn.execute(
            t.instances.update()
            .where(t.instances.c.id == claim.instance_id, t.instances.c.lease_owner == claim.owner)
            .values(lease_owner=None, lease_expires_at=None)
        )


def still_owned(conn: Connection, claim: Claim) -> bool:
    """Whether the lock is still ours (a long job whose lock expired may have been taken over)."""
    row = conn.execute(sa.select(t.jobs.c.lock_owner).where(t.jobs.c.id == claim.job_id)).first()
    return row is not None and row.lock_owner == claim.owner
