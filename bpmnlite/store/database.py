"""Connecting to the database and bringing its schema to the current version.

SQLite (the embedded default) runs in WAL mode with a busy timeout, and every
transaction starts with ``BEGIN IMMEDIATE``: a command reads and then writes,
and a deferred SQLite transaction that tries to upgrade its read lock while
another writer is active fails at once instead of waiting.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine as SAEngine

log = logging.getLogger("bpmnlite.store")

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD = "0002"


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
        if not memory and engine.url.database:
            _checkpoint_in_background(engine, engine.url.database)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    engine = sa.create_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_when_idle(engine, PING_AFTER_IDLE)
    return engine


PING_AFTER_IDLE = 10.0
"""Seconds a pooled connection may sit unused before its next checkout pings the server first."""
IDLE_SINCE = "bpmnlite_idle_since"
"""Key in a pooled connection's ``info``: when it was last given back (``time.monotonic()``)."""


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
        record.info[IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(IDLE_SINCE)
        if since is None or time.monotonic() - since < after:
            return
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            dbapi_connection.rollback()
        except Exception as exc:  # the pool discards this connection and checks out another
            raise sa.exc.DisconnectionError(f"pooled connection is dead: {exc}") from exc


CHECKPOINT_EVERY = 0.2
"""Seconds between two background WAL checkpoints of a SQLite file (see ``_checkpoint_in_background``)."""
AUTOCHECKPOINT_PAGES = 20_000
"""SQLite's own checkpoint, in the committing connection, only when the WAL outgrows this (a backstop)."""


def _checkpoint_in_background(engine: SAEngine, path: str) -> None:
    """Copy the WAL into the database file in a thread of its own, not in a command's commit.

    SQLite checkpoints by default in whichever commit pushes the WAL past 1,000
    pages: that commit pays for copying and syncing everything, about 40% of an
    embedded command's commit time on average. Here a daemon thread runs a
    PASSIVE checkpoint (it waits for no reader and no writer) every
    ``CHECKPOINT_EVERY`` seconds while the engine is open, and the connections'
    own automatic checkpoint only backs it up at ``AUTOCHECKPOINT_PAGES``. A
    crash loses nothing: the WAL is the committed data until it is copied. The
    thread ends with ``dispose()`` (``Engine.close``), or soon after the engine
    is garbage collected or its file deleted.
    """
    stop = threading.Event()
    started = threading.Lock()
    state: dict[str, threading.Thread] = {}
    alive = weakref.ref(engine)  # an engine dropped without close() ends the thread too

    def run() -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not stop.wait(CHECKPOINT_EVERY):
                if alive() is None or not os.path.exists(path):
                    return
                try:
                    if conn is None:
                        conn = sqlite3.connect(path, timeout=1, isolation_level=None, check_same_thread=False)
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:  # busy or gone: the next round, or SQLite's own checkpoint, does it
                    log.debug("background checkpoint of %s failed", path, exc_info=True)
        finally:
            if conn is not None:
                conn.close()

    @event.listens_for(engine, "connect")
    def _start(_dbapi_connection: Any, _record: Any) -> None:
        with started:
            if "thread" not in state:
                state["thread"] = threading.Thread(target=run, name=f"bpmnlite-sqlite-checkpoint:{path}", daemon=True)
                state["thread"].start()

    @event.listens_for(engine, "engine_disposed")
    def _stop(_engine: Any) -> None:
        stop.set()
        with started:
            thread = state.pop("thread", None)
        if thread is not None:
            thread.join(5)
        stop.clear()


def _sqlite_settings(engine: SAEngine, *, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # take transaction control from pysqlite so BEGIN IMMEDIATE can be issued
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if wal:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
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
