"""Shared fixtures: an engine on SQLite (always) and on PostgreSQL (when reachable).

PostgreSQL tests use a database of their own, created for the session on the
server at 127.0.0.1:5432 and dropped afterwards. Without the server they skip
with a reason, unless BPMNLITE_REQUIRE_SERVICES=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bpmnlite import Engine, TaskContext, hookimpl
from bpmnlite.store import tables

PG_ADMIN_URL = os.environ.get("BPMNLITE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE = os.environ.get("BPMNLITE_REQUIRE_SERVICES") == "1"
MODELS = Path(__file__).parent / "models"
SHARED = Path(__file__).resolve().parents[2] / "shared"


def _pg_available() -> str | None:
    try:
        eng = sa.create_engine(PG_ADMIN_URL)
        with eng.connect() as conn:
            conn.execute(sa.text("select 1"))
        eng.dispose()
        return None
    except Exception as exc:  # the reason is shown in the skip message
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"


def need_service(reason: str | None, what: str) -> None:
    if reason is None:
        return
    if REQUIRE:
        pytest.fail(f"{what} is required (BPMNLITE_REQUIRE_SERVICES=1) but unreachable: {reason}")
    pytest.skip(f"{what} not reachable: {reason}")


def need_redis(url: str) -> None:
    """Check Redis at ``url``: skip without it, or fail under BPMNLITE_REQUIRE_SERVICES."""
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=2).ping()
        reason = None
    except Exception as exc:  # shown in the skip message
        reason = f"{type(exc).__name__}: {exc}"
    need_service(reason, "Redis on 127.0.0.1:6379")


def fresh_redis(url: str, queue: str) -> str:
    """Check Redis at ``url`` (see ``need_redis``), then delete the keys of Dramatiq ``queue`` there.

    Only that queue's: a test session running beside this one (another
    checkout, a helper) keeps its messages. Each module names its own queue.
    """
    import redis

    need_redis(url)
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(match=f"dramatiq:*{queue}*"):
        client.delete(key)
    return url


def session_queue(name: str) -> str:
    """A Dramatiq queue name for this test session only."""
    return f"{name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session."""
    need_service(_pg_available(), "PostgreSQL on 127.0.0.1:5432")
    name = f"bpmnlite_test_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _truncate(url: str) -> None:
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        insp = sa.inspect(conn)
        if insp.has_table("bpm_instances"):
            names = ", ".join(tbl.name for tbl in tables.metadata.sorted_tables)
            conn.execute(sa.text(f"TRUNCATE {names}"))
    eng.dispose()


class Recorder:
    """Test plugin: task types that record what ran, fail on demand, or throw BPMN errors."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail_times: dict[str, int] = {}

    @hookimpl
    def bpmnlite_task_types(self) -> dict[str, Any]:
        return {"record": self.record, "fail": self.fail, "throw": self.throw, "noop": lambda ctx: None}

    def record(self, ctx: TaskContext) -> None:
        self.calls.append(ctx.element_id)
        trace = list(ctx.get("trace", []))
        trace.append(ctx.element_id)
        ctx.set("trace", trace)
        left = self.fail_times.get(ctx.element_id, 0)
        if left:
            self.fail_times[ctx.element_id] = left - 1
            raise RuntimeError(f"planned failure of {ctx.element_id}")

    def fail(self, ctx: TaskContext) -> None:
        self.calls.append(ctx.element_id)
        raise RuntimeError(ctx.config.get("bpmnlite:message", "boom"))

    def throw(self, ctx: TaskContext) -> None:
        self.calls.append(ctx.element_id)
        raise ctx.error(ctx.config.get("bpmnlite:errorCode", "E1"), "thrown by test")


class Clock:
    """A controllable clock: time moves only when a test says so."""

    def __init__(self) -> None:
        from datetime import UTC, datetime

        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> Any:
        return self.now

    def advance(self, **delta: float) -> None:
        from datetime import timedelta

        self.now = self.now + timedelta(**delta)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'engine.db'}"
    url: str = request.getfixturevalue("pg_url")
    _truncate(url)
    return url


@pytest.fixture
def engine(db_url: str, recorder: Recorder, clock: Clock) -> Iterator[Engine]:
    eng = Engine(db_url, plugins=[recorder], clock=clock)
    try:
        yield eng
    finally:
        eng.close()


def model(name: str) -> Path:
    return MODELS / name
