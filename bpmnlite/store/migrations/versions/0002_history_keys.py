"""History keyed by (instance, id); partial indexes for business key and parent.

Every command writes history rows, and each row used to cost two index
entries: its own key and the instance index. Keyed by (instance_id, id), a row
costs one, and an instance's history is one range of the key. On SQLite the
two tables become WITHOUT ROWID tables (stored in key order), so the tables are
copied; on PostgreSQL the keys change in place.

Variable history ids were a database sequence; the engine now gives them
(the command's sequence numbers, as activity history's ``seq``). Old ids are
small integers, so old changes still sort before new ones.

Most instances have no business key and no parent: those two indexes now
leave them out (``WHERE ... IS NOT NULL``); a lookup by value still uses them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = 32
_ACTIVITY = "instance_id, id, token_id, element_id, element_kind, element_name, started_at, ended_at, outcome, seq"
_VARIABLE = "instance_id, id, name, value, element_id, at"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_upgrade()
    else:
        _postgresql_upgrade()
    _partial_instance_indexes(partial=True)


def downgrade() -> None:
    _partial_instance_indexes(partial=False)
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_downgrade()
    else:
        _postgresql_downgrade()


def _partial_instance_indexes(*, partial: bool) -> None:
    for name, column in (("ix_bpm_instances_business_key", "business_key"),
                         ("ix_bpm_instances_parent", "parent_instance_id")):
        op.drop_index(name, "bpm_instances")
        where = sa.text(f"{column} IS NOT NULL") if partial else None
        op.create_index(name, "bpm_instances", [column], sqlite_where=where, postgresql_where=where)


def _activity_columns(*, keyed: bool) -> list[sa.Column[object]]:
    return [
        sa.Column("instance_id", sa.String(ID), primary_key=keyed, nullable=False),
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("token_id", sa.String(ID), nullable=False),
        sa.Column("element_id", sa.String(255), nullable=False),
        sa.Column("element_kind", sa.String(32), nullable=False),
        sa.Column("element_name", sa.String(255)),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("ended_at", sa.DateTime),
        sa.Column("outcome", sa.String(16)),
        sa.Column("seq", sa.BigInteger, nullable=False),
    ]


def _variable_columns(*, keyed: bool) -> list[sa.Column[object]]:
    key: list[sa.Column[object]]
    if keyed:
        key = [sa.Column("instance_id", sa.String(ID), primary_key=True),
               sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False)]
    else:
        key = [sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
               sa.Column("instance_id", sa.String(ID), nullable=False)]
    return [
        *key,
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("value", sa.JSON),
        sa.Column("element_id", sa.String(255)),
        sa.Column("at", sa.DateTime, nullable=False),
    ]


def _sqlite_upgrade() -> None:
    op.create_table("bpm_activity_history_new", *_activity_columns(keyed=True), sqlite_with_rowid=False)
    op.create_table("bpm_variable_history_new", *_variable_columns(keyed=True), sqlite_with_rowid=False)
    op.execute(f"INSERT INTO bpm_variable_history_new ({_VARIABLE}) SELECT {_VARIABLE} FROM bpm_variable_history")
    _sqlite_swap()


def _sqlite_downgrade() -> None:
    op.create_table("bpm_activity_history_new", *_activity_columns(keyed=False))
    op.create_table("bpm_variable_history_new", *_variable_columns(keyed=False))
    # the engine's ids are too large for the old sequence: number the changes again, in their order
    op.execute(
        "INSERT INTO bpm_variable_history_new (instance_id, name, value, element_id, at) "
        "SELECT instance_id, name, value, element_id, at FROM bpm_variable_history ORDER BY instance_id, id"
    )
    _sqlite_swap()
    op.create_index("ix_bpm_activity_history_instance", "bpm_activity_history", ["instance_id"])
    op.create_index("ix_bpm_variable_history_instance", "bpm_variable_history", ["instance_id"])


def _sqlite_swap() -> None:
    """Copy activity history into its new table and put both new tables in the old ones' place."""
    op.execute(f"INSERT INTO bpm_activity_history_new ({_ACTIVITY}) SELECT {_ACTIVITY} FROM bpm_activity_history")
    op.drop_table("bpm_activity_history")  # with their instance indexes
    op.drop_table("bpm_variable_history")
    op.rename_table("bpm_activity_history_new", "bpm_activity_history")
    op.rename_table("bpm_variable_history_new", "bpm_variable_history")


def _postgresql_upgrade() -> None:
    op.drop_constraint("bpm_activity_history_pkey", "bpm_activity_history", type_="primary")
    op.create_primary_key("bpm_activity_history_pkey", "bpm_activity_history", ["instance_id", "id"])
    op.drop_index("ix_bpm_activity_history_instance", "bpm_activity_history")
    op.drop_constraint("bpm_variable_history_pkey", "bpm_variable_history", type_="primary")
    op.execute("ALTER TABLE bpm_variable_history ALTER COLUMN id DROP DEFAULT")
    op.execute("DROP SEQUENCE IF EXISTS bpm_variable_history_id_seq")
    op.alter_column("bpm_variable_history", "id", type_=sa.BigInteger, existing_nullable=False)
    op.create_primary_key("bpm_variable_history_pkey", "bpm_variable_history", ["instance_id", "id"])
    op.drop_index("ix_bpm_variable_history_instance", "bpm_variable_history")


def _postgresql_downgrade() -> None:
    op.drop_constraint("bpm_activity_history_pkey", "bpm_activity_history", type_="primary")
    op.create_primary_key("bpm_activity_history_pkey", "bpm_activity_history", ["id"])
    op.create_index("ix_bpm_activity_history_instance", "bpm_activity_history", ["instance_id"])
    op.drop_constraint("bpm_variable_history_pkey", "bpm_variable_history", type_="primary")
    # number the changes again, in their order, from a fresh sequence
    op.execute("CREATE SEQUENCE bpm_variable_history_id_seq")
    op.execute(
        "UPDATE bpm_variable_history AS v SET id = n.rn FROM (SELECT instance_id, id, "
        "row_number() OVER (ORDER BY instance_id, id) AS rn FROM bpm_variable_history) AS n "
        "WHERE v.instance_id = n.instance_id AND v.id = n.id"
    )
    op.alter_column("bpm_variable_history", "id", type_=sa.Integer, existing_nullable=False)
    op.execute("SELECT setval('bpm_variable_history_id_seq', "
               "COALESCE((SELECT max(id) FROM bpm_variable_history), 0) + 1, false)")
    op.execute("ALTER TABLE bpm_variable_history ALTER COLUMN id SET DEFAULT nextval('bpm_variable_history_id_seq')")
    op.execute("ALTER SEQUENCE bpm_variable_history_id_seq OWNED BY bpm_variable_history.id")
    op.create_primary_key("bpm_variable_history_pkey", "bpm_variable_history", ["id"])
    op.create_index("ix_bpm_variable_history_instance", "bpm_variable_history", ["instance_id"])
