"""Alembic environment: runs bpmnlite's migrations on the engine's connection."""

from __future__ import annotations

from alembic import context

from bpmnlite.store.tables import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is None:
    from sqlalchemy import create_engine

    connectable = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite:///bpmnlite.db")
    with connectable.connect() as conn:
        context.configure(connection=conn, target_metadata=metadata, version_table="bpm_schema_version")
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, version_table="bpm_schema_version")
    with context.begin_transaction():
        context.run_migrations()
