"""What happens when a job fails: a retry after a back-off, or an incident.

Runs in its own transaction, after the job's command rolled back, so the
instance stays at its last wait state and only the job row records the
failure. The user-facing message is neutral; the full error and traceback
are kept apart for operators (seed 002: never forward raw errors to users).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from bpmnlite.errors import BpmnError
from bpmnlite.jobs.retry import parse_retries
from bpmnlite.store import repository
from bpmnlite.store import tables as t

if TYPE_CHECKING:
    from bpmnlite.engine import Engine


def neutral_message(exc: BaseException) -> str:
    """A short message fit for end users: what failed, not the provider's raw text."""
    if isinstance(exc, BpmnError):
        return f"business error {exc.code!r} was not handled"
    element = getattr(exc, "element_id", None)
    return f"step {element!r} failed" if element else "a step failed"


def record_failure(
    engine: Engine, job_id: str, exc: BaseException, *, incident: bool, detail: str | None = None
) -> str:
    """Spend one retry of ``job_id`` (or all of them when ``incident``); returns failed/incident/gone."""
    now = engine.clock()
    with engine.db.begin() as conn:
        row = conn.execute(sa.select(t.jobs).where(t.jobs.c.id == job_id)).first()
        if row is None:
            return "gone"
        backoff = (row.payload or {}).get("backoff")
        policy = parse_retries(row.retry_spec, engine.default_retries, backoff)
        left = 0 if incident else row.retries - 1
        values = {
            "retries": max(left, 0),
            "attempts": row.attempts + 1,
            "error_message": neutral_message(exc),
            "error_detail": f"{type(exc).__name__}: {exc}" + (f"\n\n{detail}" if detail else ""),
            "lock_owner": None,
            "lock_expires_at": None,
        }
        if left <= 0:
            values["state"] = "deadletter"
            outcome = "incident"
        else:
            values["due_at"] = repository.db_time(now + policy.backoff)
            outcome = "failed"
        conn.execute(t.jobs.update().where(t.jobs.c.id == job_id).values(**values))
    return outcome
