"""The database schema (SQLAlchemy Core tables).

The instance row carries its token tree and variables as JSON: a command
reads one row and writes one row, whatever the shape of the model. Side
tables index what callers outside the instance need to find: open user tasks,
message and signal subscriptions, jobs (async continuations and timers), and
history. The Alembic migrations in ``migrations/`` create exactly these tables.

Times are stored as naive UTC datetimes (SQLite has no time zones).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()

ID = 32  # uuid4 hex

deployments = Table(
    "bpm_deployments",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("name", String(255)),
    Column("source_name", String(255)),
    Column("checksum", String(64), nullable=False),
    Column("source", Text, nullable=False),
    Column("deployed_at", DateTime, nullable=False),
)

definitions = Table(
    "bpm_definitions",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("deployment_id", String(ID), nullable=False),
    Column("key", String(255), nullable=False),
    Column("version", Integer, nullable=False),
    Column("name", String(255)),
    Column("checksum", String(64), nullable=False),
    Column("executable", Boolean, nullable=False),
    Column("deployed_at", DateTime, nullable=False),
    UniqueConstraint("key", "version", name="uq_bpm_definitions_key_version"),
)

instances = Table(
    "bpm_instances",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("definition_id", String(ID), nullable=False),
    Column("process_key", String(255), nullable=False),
    Column("business_key", String(255)),
    Column("state", String(16), nullable=False),
    Column("version", Integer, nullable=False),
    Column("variables", JSON, nullable=False),
    Column("tokens", JSON, nullable=False),
    Column("parent_instance_id", String(ID)),
    Column("parent_token_id", String(ID)),
    Column("root_instance_id", String(ID)),
    Column("callback_message", String(255)),
    # set by cancel() before it waits for a running job: handlers see it and stop early
    Column("stop_requested", Boolean, nullable=False, default=False),
    Column("suspended", Boolean, nullable=False, default=False),
    # the lease that keeps exclusive jobs of one instance from running at the same time
    Column("lease_owner", String(128)),
    Column("lease_expires_at", DateTime),
    Column("error", Text),
    Column("started_at", DateTime, nullable=False),
    Column("ended_at", DateTime),
    Index("ix_bpm_instances_state_key", "state", "process_key"),
    # most instances have neither: partial indexes leave them out (migration 0002)
    Index("ix_bpm_instances_business_key", "business_key",
          sqlite_where=text("business_key IS NOT NULL"), postgresql_where=text("business_key IS NOT NULL")),
    Index("ix_bpm_instances_parent", "parent_instance_id",
          sqlite_where=text("parent_instance_id IS NOT NULL"),
          postgresql_where=text("parent_instance_id IS NOT NULL")),
)

tasks = Table(
    "bpm_tasks",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("instance_id", String(ID), nullable=False),
    Column("token_id", String(ID), nullable=False),
    Column("element_id", String(255), nullable=False),
    Column("definition_id", String(ID), nullable=False),
    Column("name", String(255)),
    Column("state", String(16), nullable=False),  # open / completed / cancelled
    Column("attributes", JSON),
    Column("created_at", DateTime, nullable=False),
    Column("ended_at", DateTime),
    Index("ix_bpm_tasks_instance", "instance_id", "state"),
    Index("ix_bpm_tasks_token", "token_id"),
    Index("ix_bpm_tasks_state", "state", "element_id"),
)

subscriptions = Table(
    "bpm_subscriptions",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("name", String(255), nullable=False),
    Column("instance_id", String(ID)),  # None: a start event of a definition
    Column("token_id", String(ID)),
    Column("element_id", String(255), nullable=False),
    Column("definition_id", String(ID), nullable=False),
    Column("business_key", String(255)),
    Column("created_at", DateTime, nullable=False),
    Index("ix_bpm_subscriptions_name", "kind", "name"),
    Index("ix_bpm_subscriptions_token", "token_id"),
    Index("ix_bpm_subscriptions_instance", "instance_id"),
)

jobs = Table(
    "bpm_jobs",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("kind", String(16), nullable=False),
    # executable (due now or at due_at), timer, deadletter (an incident), suspended
    Column("state", String(16), nullable=False),
    Column("instance_id", String(ID)),
    Column("token_id", String(ID)),
    Column("element_id", String(255), nullable=False),
    Column("definition_id", String(ID), nullable=False),
    Column("due_at", DateTime),
    Column("retries", Integer, nullable=False),
    Column("retry_spec", String(64)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("exclusive", Boolean, nullable=False, default=True),
    Column("priority", Integer, nullable=False, default=0),
    Column("lock_owner", String(128)),
    Column("lock_expires_at", DateTime),
    # when a message was last sent for it: the reconciler re-sends only stale ones
    Column("dispatched_at", DateTime),
    Column("payload", JSON),
    Column("error_message", Text),  # neutral text, fit for end users
    Column("error_detail", Text),  # the full error and traceback, for operators
    Column("created_at", DateTime, nullable=False),
    Index("ix_bpm_jobs_due", "state", "due_at"),
    Index("ix_bpm_jobs_instance", "instance_id"),
    Index("ix_bpm_jobs_token", "token_id"),
)

# The two history tables are keyed (instance, id): an instance's history is one range of the
# key, and each row costs one index entry, not two. On SQLite they are WITHOUT ROWID tables,
# stored in that key's order (migration 0002).
activity_history = Table(
    "bpm_activity_history",
    metadata,
    Column("instance_id", String(ID), primary_key=True),
    Column("id", String(ID), primary_key=True),
    Column("token_id", String(ID), nullable=False),
    Column("element_id", String(255), nullable=False),
    Column("element_kind", String(32), nullable=False),
    Column("element_name", String(255)),
    Column("started_at", DateTime, nullable=False),
    Column("ended_at", DateTime),
    Column("outcome", String(16)),
    Column("seq", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

progress = Table(
    "bpm_progress",
    metadata,
    # a progress key shared by several steps (seed 002), or "<instance id>:<element id>" by default
    Column("key", String(255), primary_key=True),
    Column("instance_id", String(ID)),
    Column("element_id", String(255)),
    Column("title", String(255)),
    Column("done", Integer, nullable=False),
    Column("total", Integer),
    Column("status", String(32), nullable=False),
    Column("message", Text),
    Column("feedback", Text),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_bpm_progress_instance", "instance_id"),
)

variable_history = Table(
    "bpm_variable_history",
    metadata,
    Column("instance_id", String(ID), primary_key=True),
    # orders an instance's changes: the command's sequence number (as activity history's seq)
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("name", String(255), nullable=False),
    Column("value", JSON),
    Column("element_id", String(255)),
    Column("at", DateTime, nullable=False),
    sqlite_with_rowid=False,
)
