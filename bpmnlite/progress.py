"""Progress and feedback that running handlers report, readable while they run.

A handler's job runs in one transaction that commits only at its end, so
progress is written apart from it, in its own short transaction (DESIGN §6).
On PostgreSQL that is a separate connection, visible to every reader at once.
SQLite allows one writer at a time and the job holds it, so the embedded
default keeps the latest reports in this process (readers of the same engine
see them at once) and writes them as soon as the job's transaction ends,
whatever its outcome.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from bpmnlite.records import ProgressInfo
from bpmnlite.store import repository
from bpmnlite.store import tables as t

if TYPE_CHECKING:
    from bpmnlite.engine import Engine

STATUSES = frozenset({"running", "done", "failed", "timed-out", "cancelled", "queued"})


class ProgressBoard:
    """Writes and reads progress items for one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.deferred = engine.db.dialect.name == "sqlite"
        self._pending: dict[str, ProgressInfo] = {}
        self._lock = threading.Lock()

    def report(
        self,
        key: str,
        *,
        instance_id: str | None,
        element_id: str | None,
        done: int | None = None,
        total: int | None = None,
        title: str | None = None,
        status: str | None = None,
        message: str | None = None,
        feedback: str | None = None,
        append: bool = False,
    ) -> ProgressInfo:
        """Update progress item ``key`` (creating it); unspecified fields keep their value."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown progress status {status!r}; use one of {sorted(STATUSES)}")
        now = self.engine.clock()
        with self._lock:
            current = self._pending.get(key) or self.get(key, include_pending=False)
            base = current or ProgressInfo(key, instance_id, element_id, title, 0, total, "running", None, None, now)
            text = base.feedback
            if feedback is not None:
                text = (text + "\n" + feedback if text else feedback) if append else feedback
            item = replace(
                base,
                done=base.done if done is None else done,
                total=base.total if total is None else total,
                title=base.title if title is None else title,
                status=base.status if status is None else status,
                message=base.message if message is None else message,
                feedback=text,
                updated_at=now,
            )
            if self.deferred:
                self._pending[key] = item
            else:
                self._write([item])
        return item

    def flush(self) -> None:
        """Write reports kept back while a SQLite job held the write lock."""
        with self._lock:
            items = list(self._pending.values())
            self._pending.clear()
        if items:
            self._write(items)

    def _write(self, items: list[ProgressInfo]) -> None:
        with self.engine.db.begin() as conn:
            for item in items:
                values = {
                    "instance_id": item.instance_id, "element_id": item.element_id, "title": item.title,
                    "done": item.done, "total": item.total, "status": item.status, "message": item.message,
                    "feedback": item.feedback, "updated_at": repository.db_time(item.updated_at),
                }
                updated = conn.execute(t.progress.update().where(t.progress.c.key == item.key).values(**values))
                if updated.rowcount == 0:
                    conn.execute(t.progress.insert().values(key=item.key, **values))

    def get(self, key: str, *, include_pending: bool = True) -> ProgressInfo | None:
        if include_pending and key in self._pending:
            return self._pending[key]
        with self.engine.reader.connect() as conn:
            row = conn.execute(sa.select(t.progress).where(t.progress.c.key == key)).first()
        return _info(row) if row is not None else None

    def of_instance(self, instance_id: str) -> list[ProgressInfo]:
        with self.engine.reader.connect() as conn:
            rows = conn.execute(sa.select(t.progress).where(t.progress.c.instance_id == instance_id)
                                .order_by(t.progress.c.updated_at))
            found = {r.key: _info(r) for r in rows}
        for key, item in list(self._pending.items()):
            if item.instance_id == instance_id:
                found[key] = item
        return list(found.values())


def _info(row: object) -> ProgressInfo:
    r = row  # a Row with the table's columns
    return ProgressInfo(
        key=r.key, instance_id=r.instance_id, element_id=r.element_id, title=r.title,  # type: ignore[attr-defined]
        done=r.done, total=r.total, status=r.status, message=r.message,  # type: ignore[attr-defined]
        feedback=r.feedback, updated_at=repository.py_time(r.updated_at),  # type: ignore[attr-defined]
    )


__all__ = ["ProgressBoard", "datetime"]
