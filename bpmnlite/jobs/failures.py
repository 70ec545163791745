"""What happens when a job fails: a retry after a back-off, or an incident.

Runs in its own transaction, after the job's command rolled back, so the
instance stays at its last wait state and only the job row records the
failure. The user-facing message is neutral; the full error and traceback
are kept apart for operators (seed 002: never forward raw errors to users).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from bpmnlite.errors import BpmnError, UncaughtBpmnError
from bpmnlite.jobs.acquire import Claim, release
from bpmnlite.jobs.retry import parse_retries
from bpmnlite.store import repository
from bpmnlite.store import tables as t

if TYPE_CHECKING:
    from bpmnlite.engine import Engine


def neutral_message(exc: BaseException, *, timed_out: bool = False) -> str:
    """A short message fit for end users: what failed, not the provider's raw text."""
    element = getattr(exc, "element_id", None)
    where = f"step {element!r}" if element else "a step"
    if timed_out:
        return f"{where} timed out"
    if isinstance(exc, (BpmnError, UncaughtBpmnError)):
        return f"{where} ended with business error {getattr(exc, 'code', '')!r}, which nothing handles"
    return f"{where} failed"


def record_failure(
    engine: Engine,
    job_id: str,
    exc: BaseException,
    *,
    incident: bool,
    detail: str | None = None,
    claim: Claim | None = None,
    timed_out: bool = False,
) -> str:
    """Spend one retry of ``job_id`` (all of them when ``incident``); returns failed, incident or gone."""
    now = engine.clock()
    with engine.db.begin() as conn:
        if claim is not None:
            release(conn, claim)
        query = sa.select(t.jobs).where(t.jobs.c.id == job_id)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)  # locked: another worker runs it again already
        row = conn.execute(query).first()
        if row is None:
            return "gone"
        backoff = (row.payload or {}).get("backoff")
        policy = parse_retries(row.retry_spec, engine.default_retries, backoff)
        left = 0 if incident else row.retries - 1
        text = f"{type(exc).__name__}: {exc}" if not timed_out else f"timed out: {exc}"
        values: dict[str, Any] = {
            "retries": max(left, 0),
            "attempts": row.attempts + 1,
            "error_message": neutral_message(exc, timed_out=timed_out),
            "error_detail": text + (f"\n\n{detail}" if detail else ""),
            "lock_owner": None,
            "lock_expires_at": None,
            "dispatched_at": None,
        }
        if left <= 0:
            values["state"] = "deadletter"
            outcome = "incident"
        else:
            values["due_at"] = repository.db_time(now + policy.backoff)
            outcome = "failed"
        conn.execute(t.jobs.update().where(t.jobs.c.id == job_id).values(**values))
    first_line = str(values["error_detail"]).splitlines()[0]
    engine._job_failed(job_id, row.element_id, first_line, int(values["retries"]))
    if outcome == "incident":
        engine._incident_raised(job_id, first_line)
    return outcome
