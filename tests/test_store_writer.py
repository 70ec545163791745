"""store.writer: rows written through the driver read back through SQLAlchemy exactly as Core would write them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from bpmnlite import Engine
from bpmnlite.errors import Conflict
from bpmnlite.store import database, repository
from bpmnlite.store import tables as t
from bpmnlite.store.writer import Batch


def _job_row(job_id: str, **overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": job_id, "kind": "async-before", "state": "executable", "instance_id": None, "token_id": "tok",
        "element_id": "a", "definition_id": "d", "due_at": datetime(2026, 3, 4, 5, 6, 7),
        "retries": 3, "retry_spec": None, "attempts": 0, "exclusive": True, "priority": 0,
        "lock_owner": None, "lock_expires_at": None, "dispatched_at": None,
        "payload": {"nested": [1, "two", None], "ü": True}, "error_message": None, "error_detail": None,
        "created_at": datetime(2026, 3, 4, 5, 6, 7, 890123),
    }
    row.update(overrides)
    return row


def test_rows_written_by_the_batch_equal_rows_written_by_core(db_url: str) -> None:
    engine = Engine(db_url, load_entry_points=False)
    with engine.db.begin() as conn:
        conn.execute(t.jobs.insert(), [_job_row("core"), _job_row("core-none", payload=None, exclusive=False)])
        batch = Batch(conn)
        batch.insert(t.jobs, [_job_row("raw"), _job_row("raw-none", payload=None, exclusive=False)])
        assert batch.flush() == -1
    with engine.db.connect() as conn:
        rows = {r.id: r._asdict() for r in conn.execute(sa.select(t.jobs))}
        # the stored form too, not only what SQLAlchemy makes of it
        stored = {r.id: r for r in conn.execute(sa.text("select id, created_at, payload from bpm_jobs"))}
    for core, raw in (("core", "raw"), ("core-none", "raw-none")):
        assert {**rows[core], "id": None} == {**rows[raw], "id": None}
        assert stored[core][1:] == stored[raw][1:]
    assert rows["raw"]["created_at"] == datetime(2026, 3, 4, 5, 6, 7, 890123)
    assert rows["raw"]["payload"] == {"nested": [1, "two", None], "ü": True}
    assert rows["raw-none"]["exclusive"] is False
    # time comparisons in SQL (due jobs, expired locks) see the same order for both
    with engine.db.connect() as conn:
        due = conn.execute(sa.select(t.jobs.c.id).where(t.jobs.c.due_at <= datetime(2026, 3, 4, 5, 6, 7))).all()
    assert sorted(r.id for r in due) == ["core", "core-none", "raw", "raw-none"]
    engine.close()


def test_a_database_error_in_a_batch_is_sqlalchemys_error_and_rolls_back(db_url: str) -> None:
    engine = Engine(db_url, load_entry_points=False)
    with engine.db.begin() as conn:
        conn.execute(t.jobs.insert(), [_job_row("taken")])
    with pytest.raises(sa.exc.IntegrityError), engine.db.begin() as conn:
        batch = Batch(conn)
        batch.insert(t.jobs, [_job_row("new")])
        batch.insert(t.jobs, [_job_row("taken")])  # duplicate primary key
        batch.flush()
    with engine.db.connect() as conn:
        assert [r.id for r in conn.execute(sa.select(t.jobs.c.id))] == ["taken"]
    engine.close()


def test_a_stale_instance_update_in_a_batch_is_a_conflict(db_url: str) -> None:
    engine = Engine(db_url, load_entry_points=False)
    engine.deploy('<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL" targetNamespace="x">'
                  '<process id="p" isExecutable="true"><startEvent id="s"/><userTask id="u"/>'
                  '<sequenceFlow id="f" sourceRef="s" targetRef="u"/></process></definitions>')
    started = engine.start("p")
    with engine.db.connect() as conn:
        first = repository.load_instance(conn, started.id)
        second = repository.load_instance(conn, started.id)
    with engine.db.begin() as conn:
        repository.save_instance(conn, first, datetime(2026, 1, 1))
    with pytest.raises(Conflict, match=started.id), engine.db.begin() as conn:
        batch = Batch(conn)
        repository.save_instance(conn, second, datetime(2026, 1, 1), batch)
        repository.check_saved(batch.flush(), [second.id])
    engine.close()


def test_a_dead_pooled_connection_is_replaced_after_it_sat_idle(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(database, "PING_AFTER_IDLE", 0.0)
    engine = database.connect(pg_url, pool_size=1, max_overflow=0)
    with engine.connect() as conn:
        pid = conn.execute(sa.text("select pg_backend_pid()")).scalar()
    _terminate(pg_url, pid)
    with engine.connect() as conn:  # the checkout pings the dead connection and replaces it
        assert conn.execute(sa.text("select pg_backend_pid()")).scalar() != pid
    engine.dispose()


def test_without_the_idle_ping_the_dead_connection_fails_its_command(pg_url: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(database, "PING_AFTER_IDLE", 3600.0)  # shows what the ping above is for
    engine = database.connect(pg_url, pool_size=1, max_overflow=0)
    with engine.connect() as conn:
        pid = conn.execute(sa.text("select pg_backend_pid()")).scalar()
    _terminate(pg_url, pid)
    with pytest.raises(sa.exc.OperationalError), engine.connect() as conn:
        conn.execute(sa.text("select 1"))
    with engine.connect() as conn:  # the pool dropped it: the next command works
        assert conn.execute(sa.text("select 1")).scalar() == 1
    engine.dispose()


def _terminate(pg_url: str, pid: object) -> None:
    """End a server backend, and wait (with a deadline) until it is gone."""
    admin = sa.create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(sa.text("select pg_terminate_backend(:pid)"), {"pid": pid})
    deadline = time.monotonic() + 30
    while True:
        with admin.connect() as conn:
            alive = conn.execute(sa.text("select count(*) from pg_stat_activity where pid = :pid"), {"pid": pid})
            if alive.scalar() == 0:
                break
        assert time.monotonic() < deadline, f"backend {pid} still alive after 30 s"
        time.sleep(0.05)
    admin.dispose()


def test_a_sqlite_file_is_checkpointed_in_the_background_and_the_thread_ends_with_the_engine(tmp_path: Path) -> None:
    import sqlite3
    import threading

    path = tmp_path / "bg.db"
    engine = Engine(f"sqlite:///{path}", load_entry_points=False)
    engine.deploy('<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL" targetNamespace="x">'
                  '<process id="p" isExecutable="true"><startEvent id="s"/><userTask id="u"/>'
                  '<sequenceFlow id="f" sourceRef="s" targetRef="u"/></process></definitions>')
    for _ in range(20):
        engine.start("p")

    def in_main_file() -> int:
        # immutable=1 reads the database file alone, ignoring the WAL: rows show up there only once
        # a checkpoint copied them (far fewer pages than SQLite's own automatic checkpoint needs)
        conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
        try:
            return int(conn.execute("select count(*) from bpm_instances").fetchone()[0])
        except sqlite3.Error:
            return 0
        finally:
            conn.close()

    deadline = time.monotonic() + 30
    while in_main_file() != 20:
        assert time.monotonic() < deadline, "the WAL was not checkpointed in the background"
        time.sleep(0.05)
    assert any(t.name == f"bpmnlite-sqlite-checkpoint:{path}" for t in threading.enumerate())
    engine.close()
    assert not any(t.name == f"bpmnlite-sqlite-checkpoint:{path}" for t in threading.enumerate())


def test_a_database_error_in_a_driver_query_is_sqlalchemys_error(pg_url: str) -> None:
    from bpmnlite.store.writer import driver_query_one

    engine = Engine(pg_url, load_entry_points=False)
    with pytest.raises(sa.exc.ProgrammingError, match="no_such_table"), engine.db.begin() as conn:
        driver_query_one(conn, "SELECT * FROM no_such_table WHERE id = %(id)s", {"id": "x"})
    with engine.db.begin() as conn:
        assert driver_query_one(conn, "SELECT %(a)s::int + 1", {"a": 41}) == (42,)
        assert driver_query_one(conn, "SELECT 1 WHERE false", {}) is None
    engine.close()


HOSTILE = [
    "it's", "''", "\\", "\\'", "x'); DROP TABLE bpm_jobs; --", "$$dollar$$", "%s", "%(x)s", "100%", "{mark}",
    "line\nbreak\ttab\r", "ünïcödé ✓ 𝄞", "E'\\x41'", ";", "", " ", "'" * 7,
]


def test_hostile_strings_written_as_literals_read_back_unchanged(pg_url: str) -> None:
    engine = Engine(pg_url, load_entry_points=False)
    with engine.db.begin() as conn:
        batch = Batch(conn)
        batch.insert(t.jobs, [_job_row(f"hostile-{i}", element_id=text, error_detail=text, payload={"v": text})
                              for i, text in enumerate(HOSTILE)])
        # and in a statement with marks, with an ``in_list``
        where, params = batch.in_list("id", ["hostile-0", "hostile-1"])
        batch.execute(f"UPDATE bpm_jobs SET error_message = {{mark}} WHERE {where}", [HOSTILE[4], *params])
        assert batch.flush() == -1
    with engine.db.connect() as conn:
        stored = {r.id: r for r in conn.execute(sa.select(t.jobs).where(t.jobs.c.id.like("hostile-%")))}
    assert len(stored) == len(HOSTILE)
    for i, text in enumerate(HOSTILE):
        row = stored[f"hostile-{i}"]
        assert (row.element_id, row.error_detail, row.payload) == (text, text, {"v": text})
    assert [stored[f"hostile-{i}"].error_message for i in range(3)] == [HOSTILE[4], HOSTILE[4], None]
    engine.close()


def test_values_the_literal_writer_does_not_know_are_bound_by_psycopg(pg_url: str) -> None:
    from decimal import Decimal

    from bpmnlite.store.writer import pg_literal

    assert pg_literal("a'b\\c") == "'a''b\\c'"
    assert (pg_literal(None), pg_literal(True), pg_literal(7), pg_literal(["a'"])) == (
        "NULL", "true", "7", "ARRAY['a''']::varchar[]")
    engine = Engine(pg_url, load_entry_points=False)
    with engine.db.begin() as conn:
        batch = Batch(conn)
        batch.insert(t.jobs, [_job_row("decimal-retries", retries=Decimal(4))])  # not a type pg_literal writes
        assert batch.flush() == -1
    # NUL cannot be stored in PostgreSQL text: psycopg refuses it, a database error of the command
    with pytest.raises(sa.exc.DBAPIError), engine.db.begin() as conn:
        batch = Batch(conn)
        batch.insert(t.jobs, [_job_row("nul-element", element_id="a\x00b")])
        batch.flush()
    with engine.db.connect() as conn:
        found = conn.execute(sa.select(t.jobs.c.id, t.jobs.c.retries)
                             .where(t.jobs.c.id.in_(["decimal-retries", "nul-element"])))
        assert {r.id: r.retries for r in found} == {"decimal-retries": 4}
    engine.close()


def test_with_standard_conforming_strings_off_psycopg_binds_the_batch(pg_url: str) -> None:
    engine = Engine(pg_url, load_entry_points=False)
    with engine.db.begin() as conn:
        conn.exec_driver_sql("SET LOCAL standard_conforming_strings = off")
        batch = Batch(conn)
        batch.insert(t.jobs, [_job_row("escapes-off", element_id="back\\slash'quote")])
        assert batch.flush() == -1
    with engine.db.connect() as conn:
        row = conn.execute(sa.select(t.jobs.c.element_id).where(t.jobs.c.id == "escapes-off")).one()
    assert row.element_id == "back\\slash'quote"
    engine.close()


@pytest.mark.parametrize("value", [
    0, -7, 2**70, True, False, None, "", "plain", "quote\" back\\ nl\n", "ünï ✓ 𝄞", "\x00\x1f", 1.5, float("nan"),
    [1, "a", None], {"k": [True, {"n": 1.25}]},
])
def test_to_json_writes_what_json_dumps_writes(value: object) -> None:
    import json

    from bpmnlite.store.writer import to_json

    assert to_json(value) == json.dumps(value)


def _visible(pg_url: str, job_id: str) -> bool:
    other = sa.create_engine(pg_url)
    try:
        with other.connect() as conn:
            return conn.execute(sa.select(t.jobs.c.id).where(t.jobs.c.id == job_id)).first() is not None
    finally:
        other.dispose()


def test_the_last_writes_of_a_command_carry_its_commit_on_postgresql(pg_url: str) -> None:
    engine = Engine(pg_url, load_entry_points=False)
    with engine.db.begin() as conn:
        batch = Batch(conn)
        batch.insert(t.jobs, [_job_row("carried-commit")])
        assert batch.flush(commit=True) == -1
        # committed by that one round trip, before the transaction's own end
        assert _visible(pg_url, "carried-commit")
        assert conn.connection.dbapi_connection.info.transaction_status.name == "IDLE"  # type: ignore[union-attr]
    engine.close()


def test_a_failing_statement_skips_the_carried_commit(pg_url: str) -> None:
    engine = Engine(pg_url, load_entry_points=False)
    with engine.db.begin() as conn:
        conn.execute(t.jobs.insert(), [_job_row("already-there")])
    with pytest.raises(sa.exc.IntegrityError), engine.db.begin() as conn:
        batch = Batch(conn)
        batch.insert(t.jobs, [_job_row("before-the-failure")])
        batch.insert(t.jobs, [_job_row("already-there")])  # duplicate primary key
        batch.flush(commit=True)
    assert not _visible(pg_url, "before-the-failure")
    engine.close()


def test_a_batch_that_checks_a_version_does_not_carry_the_commit(pg_url: str) -> None:
    engine = Engine(pg_url, load_entry_points=False)
    with engine.db.begin() as conn:
        batch = Batch(conn)
        batch.insert(t.jobs, [_job_row("checked-batch")])
        batch.execute("UPDATE bpm_jobs SET attempts = 1 WHERE id = {mark}", ["checked-batch"], check=True)
        assert batch.flush(commit=True) == -1
        assert not _visible(pg_url, "checked-batch")  # the check's caller decides: still open
    assert _visible(pg_url, "checked-batch")
    engine.close()


# ---------------------------------------------------------------- a transaction's first query carries its BEGIN
def _round_trips(dbapi: object, run: Callable[[], object], tmp_path: Path) -> list[str]:
    """What the client sent that waits for the server's answer (a simple Query, or a Sync), in libpq's trace."""
    from psycopg import pq

    pgconn = dbapi.pgconn  # type: ignore[attr-defined]
    path = tmp_path / f"trace-{uuid.uuid4().hex}"
    with open(path, "w") as out:
        pgconn.trace(out.fileno())
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            run()
        finally:
            pgconn.untrace()
    sent = [line.split("\t") for line in path.read_text().splitlines() if line.startswith("F\t")]
    return [fields[2] + (fields[3] if fields[2].startswith("Query") else "") for fields in sent
            if fields[2].startswith(("Query", "Sync"))]


def test_the_first_driver_query_of_a_transaction_carries_its_begin(pg_url: str, tmp_path: Path) -> None:
    from bpmnlite.store.writer import driver_query_one

    engine = Engine(pg_url, load_entry_points=False)
    with engine.db.begin() as conn:
        conn.execute(t.jobs.insert(), [_job_row("it's-first"), _job_row("second")])
    with engine.db.connect() as conn, conn.begin():
        dbapi = conn.connection.dbapi_connection
        found: list[object] = []
        sent = _round_trips(dbapi, lambda: found.append(driver_query_one(
            conn, "SELECT id, due_at, payload, exclusive FROM bpm_jobs WHERE id = %(id)s FOR UPDATE",
            {"id": "it's-first"}, carry_begin=True)), tmp_path)
        # one round trip: BEGIN and the query in one text; psycopg sent no BEGIN of its own
        assert len(sent) == 1 and sent[0].startswith('Query "BEGIN; SELECT id'), sent
        # the values come back as psycopg's own cursor reads them
        assert found == [("it's-first", datetime(2026, 3, 4, 5, 6, 7), {"nested": [1, "two", None], "ü": True}, True)]
        # the query ran in the transaction: its row lock is held until the commit
        other = sa.create_engine(pg_url)
        with pytest.raises(sa.exc.OperationalError, match="could not obtain lock"), other.connect() as busy:
            busy.exec_driver_sql("SELECT id FROM bpm_jobs WHERE id = 'it''s-first' FOR UPDATE NOWAIT")
        # a later query of the same transaction goes psycopg's usual way
        later = _round_trips(dbapi, lambda: driver_query_one(
            conn, "SELECT id FROM bpm_jobs WHERE id = ANY(%(ids)s)", {"ids": ["second"]}, carry_begin=True), tmp_path)
        assert not any("BEGIN" in what for what in later), later
    with other.connect() as free:  # committed: free again
        assert free.exec_driver_sql("SELECT id FROM bpm_jobs WHERE id = 'it''s-first' FOR UPDATE NOWAIT").all()
    other.dispose()
    engine.close()


def test_a_failing_first_driver_query_rolls_its_transaction_back(pg_url: str) -> None:
    from bpmnlite.store.writer import driver_query_one

    engine = Engine(pg_url, load_entry_points=False)
    with pytest.raises(sa.exc.DBAPIError) as failed, engine.connections.begin() as conn:
        driver_query_one(conn, "SELECT 1 / (length(%(text)s) - 3)", {"text": "abc"}, carry_begin=True)
    assert "division by zero" in str(failed.value)
    # the connection was not kept, and the next command runs as usual
    with engine.connections.begin() as conn:
        assert driver_query_one(conn, "SELECT %(text)s::text", {"text": "again"}, carry_begin=True) == ("again",)
        assert conn.connection.dbapi_connection.pgconn.transaction_status == 2  # in the transaction  # type: ignore[union-attr]
    engine.close()


def test_a_first_query_psycopg_must_open_goes_its_usual_way(pg_url: str, tmp_path: Path) -> None:
    from decimal import Decimal

    from bpmnlite.store.writer import driver_query_one

    engine = Engine(pg_url, load_entry_points=False)
    # an isolation level: psycopg's BEGIN says it, so it is psycopg's to send
    serial = engine.db.execution_options(isolation_level="SERIALIZABLE")
    with serial.connect() as conn, conn.begin():
        sent = _round_trips(conn.connection.dbapi_connection,
                            lambda: driver_query_one(conn, "SELECT %(n)s::int", {"n": 1}, carry_begin=True), tmp_path)
        assert sent[0] == 'Query "BEGIN ISOLATION LEVEL SERIALIZABLE"', sent
        assert conn.exec_driver_sql("SHOW transaction_isolation").scalar() == "serializable"
    # a value pg_literal does not write: bound by psycopg
    with engine.db.connect() as conn, conn.begin():
        assert driver_query_one(conn, "SELECT %(n)s::numeric", {"n": Decimal("1.5")}, carry_begin=True) == (
            Decimal("1.5"),)
    engine.close()


def test_a_start_on_postgresql_takes_two_round_trips(pg_url: str, tmp_path: Path) -> None:
    from .bpmn import bpmn, chain

    engine = Engine(pg_url, load_entry_points=False)
    body = '<startEvent id="start"/><userTask id="wait"/><endEvent id="end"/>' + chain("start", "wait", "end")
    key = f"two_trips_{uuid.uuid4().hex[:8]}"
    engine.deploy(bpmn(body, key))
    engine.start(key)  # the command's kept connection is set up now
    conn, _since = engine.connections._idle[-1]
    sent = _round_trips(conn.connection.dbapi_connection, lambda: engine.start(key), tmp_path)
    # the latest version, looked up with the BEGIN; then every row, with the COMMIT
    assert len(sent) == 2, sent
    assert sent[0].startswith('Query "BEGIN; SELECT id, key, version'), sent
    assert sent[1].startswith('Query "INSERT INTO'), sent[1][:200]  # no third one: it ends with COMMIT
    assert len(engine.instances(process_key=key)) == 2
    engine.close()
