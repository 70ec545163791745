"""Schema migrations: an existing database upgrades with its data, and ends up as ``tables.py`` says.

Each test builds a database at an older revision with Alembic, writes rows
as that revision's engine did, then lets ``Engine`` upgrade it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from bpmnlite import Engine
from bpmnlite.store import database, tables
from tests.bpmn import bpmn
from tests.conftest import PG_ADMIN_URL, _pg_available, need_service

SCRIPTS = bpmn(
    '<startEvent id="s"/><sequenceFlow id="f1" sourceRef="s" targetRef="a"/>'
    '<scriptTask id="a" scriptFormat="python"><script>x = x + 1</script></scriptTask>'
    '<sequenceFlow id="f2" sourceRef="a" targetRef="w"/>'
    '<userTask id="w"/><sequenceFlow id="f3" sourceRef="w" targetRef="e"/><endEvent id="e"/>',
    "mig",
)


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    need_service(_pg_available(), "PostgreSQL on 127.0.0.1:5432")
    name = f"bpmnlite_mig_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def migrate(url: str, action: str, revision: str) -> None:
    engine = database.connect(url)
    config = Config()
    config.set_main_option("script_location", str(database.MIGRATIONS))
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            getattr(command, action)(config, revision)
    finally:
        engine.dispose()


def schema_differences(url: str) -> list[object]:
    """What Alembic's comparison finds, plus the keys and index predicates it does not compare."""
    engine = database.connect(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": "bpm_schema_version"})
            found: list[object] = list(compare_metadata(context, tables.metadata))
            inspector = sa.inspect(conn)
            for table in tables.metadata.sorted_tables:
                keys = inspector.get_pk_constraint(table.name)["constrained_columns"]
                if keys != [c.name for c in table.primary_key.columns]:
                    found.append(("primary key", table.name, keys))
                stored = {ix["name"]: ix for ix in inspector.get_indexes(table.name)}
                for index in table.indexes:
                    option = f"{conn.dialect.name}_where"
                    wanted = index.dialect_options[conn.dialect.name]["where"]
                    where = stored[index.name].get("dialect_options", {}).get(option)
                    if (wanted is None) != (where is None):
                        found.append(("index predicate", index.name, where))
            if conn.dialect.name == "sqlite":
                for name in ("bpm_activity_history", "bpm_variable_history"):
                    sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).scalar()
                    if "WITHOUT ROWID" not in sql:
                        found.append(("rowid", name))
            return found
    finally:
        engine.dispose()


T0 = datetime(2026, 11, 1, 12, 0, 0)


def write_0001_history(url: str, instance_id: str) -> None:
    """History as revision 0001 stored it: string activity ids, a database sequence for variables."""
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    activity = sa.Table("bpm_activity_history", meta, autoload_with=engine)
    variable = sa.Table("bpm_variable_history", meta, autoload_with=engine)
    with engine.begin() as conn:
        conn.execute(activity.insert(), [
            {"id": f"act{i}", "instance_id": instance_id, "token_id": "tok", "element_id": f"old{i}",
             "element_kind": "scriptTask", "element_name": None, "started_at": T0,
             "ended_at": T0 if i < 2 else None, "outcome": "completed" if i < 2 else None, "seq": i}
            for i in range(3)
        ])
        for value in (1, 2, 3):  # the sequence gives them ids 1, 2, 3
            conn.execute(variable.insert().values(instance_id=instance_id, name="x", value=value,
                                                  element_id="old", at=T0))
    engine.dispose()


def test_upgrade_from_0001_keeps_history_and_matches_the_tables(empty_url: str) -> None:
    migrate(empty_url, "upgrade", "0001")
    write_0001_history(empty_url, "old-instance")

    engine = Engine(empty_url)  # upgrades to the head revision
    try:
        assert [a.element_id for a in engine.history("old-instance")] == ["old0", "old1", "old2"]
        assert [c.value for c in engine.variable_history("old-instance")] == [1, 2, 3]
        # new rows go into the new keys, after the old ones
        engine.deploy(SCRIPTS)
        inst = engine.start("mig", {"x": 0})
        assert [c.value for c in engine.variable_history(inst.id)] == [0, 1]
        (task,) = engine.tasks(instance_id=inst.id)
        engine.complete_task(task.id)  # ends the user task's row, written by the command before
        rows = engine.history(inst.id)
        assert [(a.element_id, a.outcome) for a in rows] == [
            ("s", "completed"), ("a", "completed"), ("w", "completed"), ("e", "completed")]
    finally:
        engine.close()
    assert schema_differences(empty_url) == []


def test_downgrade_to_0001_and_back(empty_url: str) -> None:
    engine = Engine(empty_url)
    engine.deploy(SCRIPTS)
    inst = engine.start("mig", {"x": 0})
    engine.set_variables(inst.id, {"x": 5})
    engine.close()
    reader = Engine(empty_url)
    before = [(c.name, c.value) for c in reader.variable_history(inst.id)]
    reader.close()
    assert before == [("x", 0), ("x", 1), ("x", 5)]

    migrate(empty_url, "downgrade", "0001")
    write_0001_history(empty_url, "later")  # the old sequence goes on after the renumbered rows
    migrate(empty_url, "upgrade", "head")

    engine = Engine(empty_url)
    try:
        assert [(c.name, c.value) for c in engine.variable_history(inst.id)] == before
        assert [c.value for c in engine.variable_history("later")] == [1, 2, 3]
        assert [a.element_id for a in engine.history(inst.id)] == ["s", "a", "w"]
    finally:
        engine.close()
    assert schema_differences(empty_url) == []


def test_lookups_by_business_key_and_parent_use_the_partial_indexes(tmp_path: Path) -> None:
    """Most instances have neither; the indexes leave them out, and a lookup by value still uses them."""
    engine = Engine(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        with engine.db.connect() as conn:
            for column, index in (("business_key", "ix_bpm_instances_business_key"),
                                  ("parent_instance_id", "ix_bpm_instances_parent")):
                plan = conn.exec_driver_sql(
                    f"EXPLAIN QUERY PLAN SELECT id FROM bpm_instances WHERE {column} = ?", ("k",)
                ).all()
                assert any(index in str(row) for row in plan), plan
        engine.deploy(SCRIPTS)
        engine.start("mig", {"x": 0}, business_key="order-1")
        engine.start("mig", {"x": 0})
        assert [i.business_key for i in engine.instances(business_key="order-1")] == ["order-1"]
    finally:
        engine.close()
