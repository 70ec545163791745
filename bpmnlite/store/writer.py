"""Writing a command's rows through the driver, in as few round trips as the database allows.

A command ends with a burst of writes: history rows, new jobs and tasks, the
instance row. Through SQLAlchemy Core each statement pays for statement
building, cache-key generation and per-row type processing, which cost more
than SQLite itself and about as much as a PostgreSQL round trip. So the hot
writes go to the DB-API connection of the command's own transaction, with SQL
text made once per table and values converted here the way SQLAlchemy's types
store them (so every read through SQLAlchemy sees the same values):

* ``DateTime``: naive UTC; on SQLite the text ``YYYY-MM-DD HH:MM:SS.ffffff``.
* ``JSON``: ``json.dumps`` text (``None`` becomes JSON ``null``, as SQLAlchemy's
  ``JSON`` type stores it).
* ``Boolean``: 0/1 on SQLite.

On PostgreSQL the statements of one ``Batch`` go out as one query text with
the values written in as literals (``pg_literal``): one network round trip
for all of them. A database error is re-raised
as SQLAlchemy's ``DBAPIError``, so the engine classifies it as it does any other.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

_STATEMENTS: dict[tuple[str, str, tuple[str, ...]], tuple[str, tuple[tuple[int, Any], ...]]] = {}


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo is not None else value


_encode_str = json.encoder.encode_basestring_ascii  # what json.dumps uses by default (ensure_ascii)


def to_json(value: Any) -> str:
    """``json.dumps(value)``, the same text, with a short way for the scalars most variables hold.

    ``json.dumps`` costs about a microsecond even for a small int (argument
    checks, an encoder per call); a command writes one per variable update.
    """
    kind = type(value)
    if kind is str:
        return _encode_str(value)
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    return json.dumps(value)



def _sqlite_bool(value: Any) -> Any:
    return None if value is None else int(bool(value))


_TIME = object()  # marks DateTime columns: converted through the batch's memo


def _converter(column: sa.Column[Any], sqlite: bool) -> Any:
    kind = column.type
    if isinstance(kind, sa.JSON):
        return to_json
    if isinstance(kind, sa.DateTime):
        return _TIME
    if isinstance(kind, sa.Boolean):
        return _sqlite_bool if sqlite else None
    return None


def _insert_sql(dialect: str, table: sa.Table, columns: tuple[str, ...]) -> tuple[str, tuple[tuple[int, Any], ...]]:
    key = (dialect, table.name, columns)
    found = _STATEMENTS.get(key)
    if found is None:
        mark = "?" if dialect == "sqlite" else "%s"
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"
        converters = ((i, _converter(table.c[name], dialect == "sqlite")) for i, name in enumerate(columns))
        found = sql, tuple((i, conv) for i, conv in converters if conv is not None)
        _STATEMENTS[key] = found
    return found


class Batch:
    """The writes of one command, sent through the driver when ``flush`` is called.

    ``check`` statements must change exactly one row (an instance's optimistic
    version check); ``flush`` returns the index of the first one that did not,
    or -1.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name
        self.sqlite = self.dialect == "sqlite"
        self.mark = "?" if self.sqlite else "%s"
        self._ops: list[tuple[str, Any, bool, bool]] = []  # sql, params, many, check
        self._times: dict[datetime, Any] = {}

    # ------------------------------------------------------------------ building
    def insert(self, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
        """INSERT rows that all have the same keys (datetimes aware or naive UTC)."""
        if not rows:
            return
        sql, converters = _insert_sql(self.dialect, table, tuple(rows[0]))
        time = self.time
        params = []
        for row in rows:
            values = list(row.values())
            for i, conv in converters:
                values[i] = time(values[i]) if conv is _TIME else conv(values[i])
            params.append(values)
        self._ops.append((sql, params, True, False))

    def insert_values(self, table: sa.Table, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        """INSERT rows whose values the caller already converted (``time``, ``json``), in ``columns`` order."""
        if rows:
            sql, _converters = _insert_sql(self.dialect, table, columns)
            self._ops.append((sql, rows, True, False))

    def execute(self, sql: str, params: Sequence[Any], *, check: bool = False) -> None:
        """One statement; ``sql`` writes ``{mark}`` for each placeholder (``in_list`` makes ``IN`` lists)."""
        self._ops.append((sql.replace("{mark}", self.mark), tuple(params), False, check))

    def in_list(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """``column IN (...)`` for SQLite, ``column = ANY(%s)`` (one array parameter) for PostgreSQL."""
        if self.sqlite:
            return f"{column} IN ({', '.join('?' * len(values))})", list(values)
        return f"{column} = ANY(%s)", [list(values)]

    def time(self, value: datetime | None) -> Any:
        """A datetime as this database stores it: naive UTC, and text on SQLite (memoised: a command
        stamps most rows with the same few times)."""
        if value is None:
            return None
        stored = self._times.get(value)
        if stored is None:
            naive = _naive_utc(value)
            stored = naive.isoformat(" ", "microseconds") if self.sqlite else naive
            self._times[value] = stored
        return stored

    # ------------------------------------------------------------------ sending
    def flush(self, *, commit: bool = False) -> int:
        """Send every statement in order; returns the index among ``check`` statements that failed, or -1.

        ``commit`` (PostgreSQL, a batch without ``check`` statements): the
        same round trip commits the transaction. The driver then sees it idle,
        so the caller's commit sends nothing more. If a statement fails, the
        ones after it, the ``COMMIT`` too, do not run, and the transaction is
        rolled back as usual.
        """
        ops, self._ops = self._ops, []
        if not ops:
            return -1
        if commit and not self.sqlite and not any(check for *_rest, check in ops):
            ops.append(("COMMIT", (), False, False))
        dbapi = self.conn.connection.dbapi_connection
        assert dbapi is not None
        with _driver_errors(self.conn, ops[0][0], None):
            rowcounts = _run(dbapi.cursor(), ops) if self.sqlite else _run_postgres(dbapi, ops)
        return next((i for i, count in enumerate(rowcounts) if count != 1), -1)


@contextmanager
def _driver_errors(conn: Connection, sql: str, params: Any) -> Iterator[None]:
    """Re-raise the driver's errors as SQLAlchemy's ``DBAPIError``, which the engine classifies."""
    base = conn.dialect.loaded_dbapi.Error
    try:
        yield
    except base as exc:
        raise sa.exc.DBAPIError.instance(sql, params, exc, base) from exc


def _run(cursor: Any, ops: list[tuple[str, Any, bool, bool]]) -> list[int]:
    """Statement by statement (SQLite); returns the row counts of the ``check`` statements."""
    checked = []
    for sql, params, many, check in ops:
        if many:
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, params)
        if check:
            checked.append(cursor.rowcount)
    cursor.close()
    return checked


def _run_postgres(dbapi: Any, ops: list[tuple[str, Any, bool, bool]]) -> list[int]:
    """All statements as one query text: one round trip, one wait.

    (Pipeline mode measured slower here: it waits on the socket once per
    statement.) Rows of an INSERT become one multi-row VALUES list. The values
    are written into the text as literals by ``pg_literal``. psycopg's
    client-side binding does the same through its generic adapters, but it
    also parses the whole text for placeholders on every call (a batch of
    jobs is too long for its cache): that was half of a worker's Python time.
    A batch holding a value ``pg_literal`` does not write goes psycopg's way.
    """
    from psycopg import ClientCursor

    text: str | None = None
    if _standard_strings(dbapi):
        try:
            text = _literal_text(ops)
        except _NotLiteral:
            text = None
    cursor = ClientCursor(dbapi)
    try:
        if text is not None:
            cursor.execute(text)  # no parameters: psycopg sends the text as it is
        else:
            cursor.execute(*_bound_text(ops))
        checked = []
        for index, (_sql, _values, _many, check) in enumerate(ops):
            if index:
                cursor.nextset()
            if check:
                checked.append(cursor.rowcount)
        return checked
    finally:
        cursor.close()


def _bound_text(ops: list[tuple[str, Any, bool, bool]]) -> tuple[str, list[Any]]:
    """The statements with ``%s`` placeholders, and their values in order (for psycopg to bind)."""
    texts: list[str] = []
    params: list[Any] = []
    for sql, values, many, _check in ops:
        if many:
            head, row = sql.split(" VALUES ", 1)
            texts.append(f"{head} VALUES {', '.join([row] * len(values))}")
            for value in values:
                params.extend(value)
        else:
            texts.append(sql)
            params.extend(values)
    return ";\n".join(texts), params


def _literal_text(ops: list[tuple[str, Any, bool, bool]]) -> str:
    """The statements with their values written in as literals (each ``%s`` of our SQL is one value)."""
    lit = pg_literal
    texts: list[str] = []
    for sql, values, many, _check in ops:
        if many:
            head = sql.split(" VALUES ", 1)[0]
            rows = ", ".join(["(" + ", ".join([lit(v) for v in row]) + ")" for row in values])
            texts.append(f"{head} VALUES {rows}")
            continue
        parts = sql.split("%s")
        if len(parts) != len(values) + 1:
            raise _NotLiteral("placeholders and values differ")
        out = [parts[0]]
        for value, part in zip(values, parts[1:], strict=True):
            out.append(lit(value))
            out.append(part)
        texts.append("".join(out))
    return ";\n".join(texts)


class _NotLiteral(Exception):
    """A value ``pg_literal`` does not write: psycopg binds that batch."""


def _standard_strings(dbapi: Any) -> bool:
    """Whether backslashes are ordinary characters in quoted strings (PostgreSQL's default since 9.1)."""
    return bool(dbapi.info.parameter_status("standard_conforming_strings") == "on")


def pg_literal(value: Any) -> str:
    """A PostgreSQL literal for the value types a batch writes; ``_NotLiteral`` for any other.

    Only for a connection with ``standard_conforming_strings = on``: a
    string is then quoted by doubling its quotes, and nothing else in it is
    special. A string holding NUL (which no PostgreSQL text can hold) is
    refused here, so psycopg reports it as a database error would.
    """
    kind = type(value)
    if kind is str:
        if "\x00" in value:
            raise _NotLiteral("NUL in a string")
        text: str = value
        return "'" + text.replace("'", "''") + "'"
    if value is None:
        return "NULL"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is datetime and value.tzinfo is None:
        stamp: datetime = value
        return "'" + stamp.isoformat(" ", "microseconds") + "'::timestamp"
    if kind is float and math.isfinite(value):
        return repr(value)
    if kind is list and value and all(type(v) is str for v in value):
        return "ARRAY[" + ", ".join([pg_literal(v) for v in value]) + "]::varchar[]"
    raise _NotLiteral(kind.__name__)


def driver_query_one(conn: Connection, sql: str, params: dict[str, Any], *,
                     carry_begin: bool = False) -> tuple[Any, ...] | None:
    """The first row of a query sent straight to the driver, in the connection's transaction.

    For the hottest reads only; ``sql`` uses the driver's own placeholders. A
    database error is re-raised as SQLAlchemy's ``DBAPIError``. With
    ``carry_begin``, on PostgreSQL, a query that opens its transaction is sent
    with the ``BEGIN`` (``_begin_with``): for a query cheap to plan, since it
    goes as text, never as a prepared statement.
    """
    rows = _driver_query(conn, sql, params, every=False, carry_begin=carry_begin)
    return rows[0] if rows else None


def driver_query_all(conn: Connection, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Every row of a query sent straight to the driver (see ``driver_query_one``)."""
    return _driver_query(conn, sql, params, every=True, carry_begin=False)


def _driver_query(conn: Connection, sql: str, params: dict[str, Any], *, every: bool,
                  carry_begin: bool) -> list[tuple[Any, ...]]:
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    if carry_begin and conn.dialect.name == "postgresql":
        with _driver_errors(conn, sql, params):
            rows = _begin_with(dbapi, sql, params)
        if rows is not None:
            return rows if every else rows[:1]
    cursor = dbapi.cursor()
    try:
        with _driver_errors(conn, sql, params):
            cursor.execute(sql, params)
            found = cursor.fetchall() if every else [row for row in [cursor.fetchone()] if row is not None]
        return [tuple(row) for row in found]
    finally:
        cursor.close()


def _begin_with(dbapi: Any, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]] | None:
    """The first query of a transaction, sent with its ``BEGIN`` in one round trip; None when it is not
    the first, or cannot go this way (the caller then sends it as usual).

    psycopg opens a transaction with a ``BEGIN`` of its own, one round trip
    before the first statement: for a start's look-up of the latest version,
    one of its three round trips. Here the two go out as one text
    (``BEGIN; <query>``, values as ``pg_literal`` writes them); the server is
    then in the transaction, psycopg sees it so and sends no ``BEGIN``, and
    the commit or rollback is psycopg's as always. Only for what psycopg
    would open with a plain ``BEGIN``: no isolation level or read-only flag
    set on the connection, not in autocommit, and standard strings.

    Not for a job's claim: as text, PostgreSQL plans it on every call, and
    that cost it more CPU than the round trip saved (``docs/performance.md``);
    sent the usual way, psycopg prepares it after a few calls.
    """
    from psycopg import errors, pq
    from psycopg.adapt import Transformer

    pgconn = dbapi.pgconn
    if (pgconn.transaction_status != pq.TransactionStatus.IDLE or dbapi.autocommit
            or dbapi.isolation_level is not None or dbapi.read_only is not None or not _standard_strings(dbapi)):
        return None
    try:
        text = "BEGIN; " + sql % {name: pg_literal(value) for name, value in params.items()}
    except _NotLiteral:
        return None
    result = pgconn.exec_(text.encode())  # blocking, without the GIL
    if result.status != pq.ExecStatus.TUPLES_OK:
        if pgconn.status != pq.ConnStatus.OK:
            raise errors.OperationalError(f"the connection was lost: {pgconn.error_message.decode(errors='replace')}")
        raise errors.error_from_result(result, encoding=dbapi.info.encoding)
    loader = Transformer(dbapi)
    loader.set_pgresult(result)
    rows: list[tuple[Any, ...]] = loader.load_rows(0, result.ntuples, tuple)
    return rows
