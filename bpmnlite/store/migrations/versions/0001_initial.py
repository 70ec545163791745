"""Initial schema: deployments, definitions, instances, tasks, subscriptions, jobs, history.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = 32


def upgrade() -> None:
    op.create_table(
        "bpm_deployments",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("name", sa.String(255)),
        sa.Column("source_name", sa.String(255)),
        sa.Column("checksum", sa.String(64), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("deployed_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "bpm_definitions",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("deployment_id", sa.String(ID), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("name", sa.String(255)),
        sa.Column("checksum", sa.String(64), nullable=False),
        sa.Column("executable", sa.Boolean, nullable=False),
        sa.Column("deployed_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("key", "version", name="uq_bpm_definitions_key_version"),
    )
    op.create_table(
        "bpm_instances",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("definition_id", sa.String(ID), nullable=False),
        sa.Column("process_key", sa.String(255), nullable=False),
        sa.Column("business_key", sa.String(255)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("variables", sa.JSON, nullable=False),
        sa.Column("tokens", sa.JSON, nullable=False),
        sa.Column("parent_instance_id", sa.String(ID)),
        sa.Column("parent_token_id", sa.String(ID)),
        sa.Column("root_instance_id", sa.String(ID)),
        sa.Column("callback_message", sa.String(255)),
        sa.Column("stop_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("suspended", sa.Boolean, nullable=False),
        sa.Column("lease_owner", sa.String(128)),
        sa.Column("lease_expires_at", sa.DateTime),
        sa.Column("error", sa.Text),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("ended_at", sa.DateTime),
    )
    op.create_index("ix_bpm_instances_state_key", "bpm_instances", ["state", "process_key"])
    op.create_index("ix_bpm_instances_business_key", "bpm_instances", ["business_key"])
    op.create_index("ix_bpm_instances_parent", "bpm_instances", ["parent_instance_id"])
    op.create_table(
        "bpm_tasks",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("instance_id", sa.String(ID), nullable=False),
        sa.Column("token_id", sa.String(ID), nullable=False),
        sa.Column("element_id", sa.String(255), nullable=False),
        sa.Column("definition_id", sa.String(ID), nullable=False),
        sa.Column("name", sa.String(255)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attributes", sa.JSON),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("ended_at", sa.DateTime),
    )
    op.create_index("ix_bpm_tasks_instance", "bpm_tasks", ["instance_id", "state"])
    op.create_index("ix_bpm_tasks_token", "bpm_tasks", ["token_id"])
    op.create_index("ix_bpm_tasks_state", "bpm_tasks", ["state", "element_id"])
    op.create_table(
        "bpm_subscriptions",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("instance_id", sa.String(ID)),
        sa.Column("token_id", sa.String(ID)),
        sa.Column("element_id", sa.String(255), nullable=False),
        sa.Column("definition_id", sa.String(ID), nullable=False),
        sa.Column("business_key", sa.String(255)),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_bpm_subscriptions_name", "bpm_subscriptions", ["kind", "name"])
    op.create_index("ix_bpm_subscriptions_token", "bpm_subscriptions", ["token_id"])
    op.create_index("ix_bpm_subscriptions_instance", "bpm_subscriptions", ["instance_id"])
    op.create_table(
        "bpm_jobs",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("instance_id", sa.String(ID)),
        sa.Column("token_id", sa.String(ID)),
        sa.Column("element_id", sa.String(255), nullable=False),
        sa.Column("definition_id", sa.String(ID), nullable=False),
        sa.Column("due_at", sa.DateTime),
        sa.Column("retries", sa.Integer, nullable=False),
        sa.Column("retry_spec", sa.String(64)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("exclusive", sa.Boolean, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("lock_owner", sa.String(128)),
        sa.Column("lock_expires_at", sa.DateTime),
        sa.Column("dispatched_at", sa.DateTime),
        sa.Column("payload", sa.JSON),
        sa.Column("error_message", sa.Text),
        sa.Column("error_detail", sa.Text),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_bpm_jobs_due", "bpm_jobs", ["state", "due_at"])
    op.create_index("ix_bpm_jobs_instance", "bpm_jobs", ["instance_id"])
    op.create_index("ix_bpm_jobs_token", "bpm_jobs", ["token_id"])
    op.create_table(
        "bpm_activity_history",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("instance_id", sa.String(ID), nullable=False),
        sa.Column("token_id", sa.String(ID), nullable=False),
        sa.Column("element_id", sa.String(255), nullable=False),
        sa.Column("element_kind", sa.String(32), nullable=False),
        sa.Column("element_name", sa.String(255)),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("ended_at", sa.DateTime),
        sa.Column("outcome", sa.String(16)),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_bpm_activity_history_instance", "bpm_activity_history", ["instance_id"])
    op.create_table(
        "bpm_progress",
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("instance_id", sa.String(ID)),
        sa.Column("element_id", sa.String(255)),
        sa.Column("title", sa.String(255)),
        sa.Column("done", sa.Integer, nullable=False),
        sa.Column("total", sa.Integer),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("message", sa.Text),
        sa.Column("feedback", sa.Text),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_bpm_progress_instance", "bpm_progress", ["instance_id"])
    op.create_table(
        "bpm_variable_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("instance_id", sa.String(ID), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("value", sa.JSON),
        sa.Column("element_id", sa.String(255)),
        sa.Column("at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_bpm_variable_history_instance", "bpm_variable_history", ["instance_id"])


def downgrade() -> None:
    for table in (
        "bpm_progress",
        "bpm_variable_history",
        "bpm_activity_history",
        "bpm_jobs",
        "bpm_subscriptions",
        "bpm_tasks",
        "bpm_instances",
        "bpm_definitions",
        "bpm_deployments",
    ):
        op.drop_table(table)
