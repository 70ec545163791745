"""Connections kept between commands (store.connections): reused when clean, dropped when not, pinged after idling."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from bpmnlite import Engine, ExecutionError

from .bpmn import bpmn, chain
from .conftest import _truncate

MODEL = bpmn(
    '<startEvent id="s"/><scriptTask id="t"><script>x = 1 / y</script></scriptTask><endEvent id="e"/>'
    + chain("s", "t", "e")
)


def count_checkouts(engine: Engine) -> list[int]:
    seen = [0]

    @event.listens_for(engine.db, "checkout")
    def _checkout(*_args: object) -> None:
        seen[0] += 1

    return seen


@pytest.fixture
def sqlite_engine(tmp_path: object) -> Iterator[Engine]:
    eng = Engine(f"sqlite:///{tmp_path}/c.db")
    eng.deploy(MODEL)
    yield eng
    eng.close()


def test_commands_in_a_row_check_out_one_connection(sqlite_engine: Engine) -> None:
    checkouts = count_checkouts(sqlite_engine)
    for _ in range(5):
        assert sqlite_engine.start("p", {"y": 1}).state == "completed"
    assert checkouts[0] == 1
    assert sqlite_engine.db.pool.checkedout() == 1  # kept, idle, for the next command


def test_a_failed_command_gives_its_connection_back_to_the_pool(sqlite_engine: Engine) -> None:
    sqlite_engine.start("p", {"y": 1})
    checkouts = count_checkouts(sqlite_engine)
    with pytest.raises(ExecutionError):
        sqlite_engine.start("p", {"y": 0})  # ZeroDivisionError in the script: the command rolls back
    assert sqlite_engine.db.pool.checkedout() == 0  # not kept: it went back through the pool's reset
    assert sqlite_engine.start("p", {"y": 1}).state == "completed"
    assert checkouts[0] == 1  # the next command checked out again
    assert len(sqlite_engine.instances()) == 2


def test_threads_never_share_a_connection(sqlite_engine: Engine) -> None:
    in_use: set[int] = set()
    clash: list[int] = []
    lock = threading.Lock()
    original = sqlite_engine.connections.begin

    def begin() -> object:
        manager = original()

        class Watch:
            def __enter__(self) -> sa.Connection:
                conn = manager.__enter__()
                with lock:
                    if id(conn) in in_use:
                        clash.append(id(conn))
                    in_use.add(id(conn))
                self.conn = conn
                return conn

            def __exit__(self, *exc: object) -> object:
                with lock:
                    in_use.discard(id(self.conn))
                return manager.__exit__(*exc)

        return Watch()

    sqlite_engine.connections.begin = begin  # type: ignore[method-assign]

    def starts() -> None:
        for _ in range(40):
            sqlite_engine.start("p", {"y": 1})

    threads = [threading.Thread(target=starts) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert clash == []
    assert len(sqlite_engine.instances()) == 160
    assert sqlite_engine.db.pool.checkedout() <= sqlite_engine.connections.keep


def test_close_returns_every_kept_connection(sqlite_engine: Engine) -> None:
    sqlite_engine.start("p", {"y": 1})
    assert sqlite_engine.db.pool.checkedout() == 1
    sqlite_engine.close()
    assert sqlite_engine.db.pool.checkedout() == 0


def test_a_connection_that_idled_is_pinged_and_replaced_when_dead(pg_url: str) -> None:
    """PostgreSQL: a kept connection whose server process died in its idle time does not fail a command."""
    _truncate(pg_url)
    engine = Engine(pg_url)
    try:
        engine.deploy(MODEL)
        engine.start("p", {"y": 1})
        ((conn, since),) = engine.connections._idle
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        conn.rollback()
        admin = sa.create_engine(pg_url)
        with admin.begin() as other:
            assert other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
        admin.dispose()
        # as if it had sat idle for a minute (PING_AFTER_IDLE is 10 s)
        engine.connections._idle[0] = (conn, since - 60)
        assert engine.start("p", {"y": 1}).state == "completed"
        assert len(engine.instances()) == 2
    finally:
        engine.close()


def test_a_forked_child_does_not_use_its_parents_kept_connection(sqlite_engine: Engine) -> None:
    import os

    sqlite_engine.start("p", {"y": 1})
    (kept,) = sqlite_engine.connections._idle
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it would reuse, then run a command of its own
        try:
            inherited = len(sqlite_engine.connections._idle)
            sqlite_engine.start("p", {"y": 1})
            os.write(write, f"{inherited} {len(sqlite_engine.instances())}".encode())
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == "0 2"  # nothing inherited to reuse; its command committed through its own connection
    assert sqlite_engine.connections._idle[0][0] is kept[0]  # the parent's is still the parent's
    assert sqlite_engine.start("p", {"y": 1}).state == "completed"
    assert len(sqlite_engine.instances()) == 3
