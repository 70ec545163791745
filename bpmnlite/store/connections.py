"""Connections kept between commands, so a command does not pay for a pool checkout.

Checking a connection out of SQLAlchemy's pool and back in (events, reset,
the ``Connection`` object itself) cost about a third of what an in-process
command spends outside the runner and the database. ``CommandConnections``
keeps a few ``Connection`` objects checked out and idle between commands; a
command takes one from a list and gives it back after its commit.

What it keeps is safe to reuse:

* only a connection whose command ended cleanly goes back; after an error,
  or when SQLAlchemy invalidated it, it is closed and returns to the pool;
* a connection idle for longer than ``max_idle`` seconds is closed when
  taken, with its idle time handed to the pool's ping-when-idle check
  (``database.IDLE_SINCE``), so the next checkout pings it first;
* no more than ``keep`` are held, at most the pool's size: the pool's
  overflow is always left for everything else;
* ``close()`` (``Engine.close``) closes them all; one in use is closed when
  its command ends;
* a forked child forgets the ones it inherited (they are its parent's
  connections: sharing a socket or a SQLite handle corrupts both sides) and
  checks out its own.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection
from sqlalchemy.engine import Engine as SAEngine

from bpmnlite.store.database import IDLE_SINCE, PING_AFTER_IDLE


class CommandConnections:
    """A short list of idle connections for commands; ``begin()`` is ``db.begin()`` without the checkout."""

    def __init__(self, db: SAEngine, *, keep: int | None = None, max_idle: float = PING_AFTER_IDLE) -> None:
        self.db = db
        size = getattr(db.pool, "size", None)
        self.keep = keep if keep is not None else (size() if callable(size) else 1)
        self.max_idle = max_idle
        self.closed = False
        self._idle: list[tuple[Connection, float]] = []
        _ALL.add(self)

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A connection in a transaction: committed when the block ends, rolled back if it raises."""
        conn = self._take()
        clean = False
        try:
            with conn.begin():
                yield conn
            clean = True
        finally:
            self._give_back(conn, clean)

    def close(self) -> None:
        self.closed = True
        while self._idle:
            try:
                conn, _since = self._idle.pop()
            except IndexError:  # another thread took the last one
                break
            conn.close()

    def _take(self) -> Connection:
        now = time.monotonic()
        while True:
            try:
                conn, since = self._idle.pop()  # atomic: two threads never get the same one
            except IndexError:
                return self.db.connect()
            if now - since < self.max_idle and not conn.invalidated:
                return conn
            info = conn.info
            conn.close()
            info[IDLE_SINCE] = since  # it sat idle since then: the pool pings it before its next use

    def _give_back(self, conn: Connection, clean: bool) -> None:
        if clean and not conn.invalidated and not self.closed and len(self._idle) < self.keep:
            self._idle.append((conn, time.monotonic()))
        else:
            conn.close()


_ALL: weakref.WeakSet[CommandConnections] = weakref.WeakSet()


def _forget_inherited() -> None:
    for connections in list(_ALL):
        connections._idle = []  # not closed: closing would end the parent's sessions too


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_inherited)
