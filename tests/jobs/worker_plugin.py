"""Task types for worker-process tests; loaded into workers with ``bpmnlite worker --plugin``.

``count`` records each attempt, then the effect once per idempotency key, in tables of
the database named by BPMNLITE_TEST_EFFECTS_DB. ``slow`` does the same after sleeping
``sleep`` seconds (a genuinely slow job, so a test can kill the worker while it runs).
"""

from __future__ import annotations

import os
import time
from typing import Any

import sqlalchemy as sa

from bpmnlite import TaskContext, hookimpl

metadata = sa.MetaData()
attempts = sa.Table(
    "test_attempts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("instance_id", sa.String(32)), sa.Column("element_id", sa.String(64)),
)
effects = sa.Table(
    "test_effects", metadata,
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("instance_id", sa.String(32)), sa.Column("element_id", sa.String(64)),
)
_engine: sa.Engine | None = None


def db() -> sa.Engine:
    global _engine
    if _engine is None:
        _engine = sa.create_engine(os.environ["BPMNLITE_TEST_EFFECTS_DB"])
    return _engine


def _record(ctx: TaskContext) -> None:
    with db().begin() as conn:
        conn.execute(attempts.insert().values(instance_id=ctx.instance_id, element_id=ctx.element_id))
    time.sleep(float(ctx.get("sleep", 0)) if ctx.element.attributes.get("bpmnlite:slow") else 0)
    with db().begin() as conn:
        stmt = sa.dialects.postgresql.insert(effects).values(
            key=ctx.idempotency_key, instance_id=ctx.instance_id, element_id=ctx.element_id
        ).on_conflict_do_nothing()
        conn.execute(stmt)


@hookimpl
def bpmnlite_task_types() -> dict[str, Any]:
    return {"count": _record}
