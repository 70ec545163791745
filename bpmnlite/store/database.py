"""Connecting to the database and bringing its schema to the current version.

SQLite (the embedded default) runs in WAL mode with a busy timeout, and every
transaction starts with ``BEGIN IMMEDIATE``: a command reads and then writes,
and a deferred SQLite transaction that tries to upgrade its read lock while
another writer is active fails at once instead of waiting.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine as SAEngine

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD = "0001"


def connect(url: str, **kwargs: Any) -> SAEngine:
    """Create the SQLAlchemy engine for ``url`` with bpmnlite's settings."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:")
        options: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": 30}}
        if memory:
            options["poolclass"] = sa.pool.StaticPool
        engine = sa.create_engine(url, **options, **kwargs)
        _sqlite_settings(engine, wal=not memory)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    engine = sa.create_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_when_idle(engine, PING_AFTER_IDLE)
    return engine


PING_AFTER_IDLE = 10.0
"""Seconds a pooled connection may sit unused before its next checkout pings the server first."""


def _ping_when_idle(engine: SAEngine, after: float) -> None:
    """Ping a pooled connection on checkout only when it sat idle for ``after`` seconds.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: one round trip
    (and one server transaction) per command, a sixth of an async job's cost.
    A connection in steady use is known good; one that sat idle may have been
    cut by a server restart or a firewall, so it is checked, and replaced when
    dead. (A connection that dies while in use fails its command; the pool
    then drops it, and a job's retry or the caller's next call gets a new one.)
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["bpmnlite_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("bpmnlite_idle_since")
        if since is None or time.monotonic() - since < after:
            return
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            dbapi_connection.rollback()
        except Exception as exc:  # the pool discards this connection and checks out another
            raise sa.exc.DisconnectionError(f"pooled connection is dead: {exc}") from exc


def _sqlite_settings(engine: SAEngine, *, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # take transaction control from pysqlite so BEGIN IMMEDIATE can be issued
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if wal:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # readers (engine.reader) never block in WAL mode; writers queue up front
        # straight to the driver: SQLAlchemy's statement path costs more than SQLite's BEGIN itself
        read = conn.get_execution_options().get("bpmnlite_read")
        conn.connection.dbapi_connection.execute("BEGIN" if read else "BEGIN IMMEDIATE")


def reader(engine: SAEngine) -> SAEngine:
    """The same pool for read-only work: on SQLite a deferred (non-blocking) transaction."""
    return engine.execution_options(bpmnlite_read=True)


def upgrade(engine: SAEngine) -> None:
    """Apply pending Alembic migrations (a no-op when the schema is current)."""
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        if inspector.has_table("bpm_schema_version"):
            current = conn.execute(sa.text("SELECT version_num FROM bpm_schema_version")).scalar()
            if current == HEAD:
                return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
