"""Initial service tables: exactly what ``metadata.create_all`` made before migrations.

A database made before migrations existed has these tables already; the store stamps it at
this revision instead (``service.migrations.upgrade``). If it lacks some of them (made by a
release before ``relaxtune_cluster`` existed), this revision creates only the missing ones.

Revision ID: 0001
Revises:
Create Date: 2026-12-06 18:49:08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("relaxtune_jobs", "relaxtune_tokens", "relaxtune_quotas", "relaxtune_cluster")


def _existing() -> set[str]:
    if context.is_offline_mode():
        return set()
    return set(sa.inspect(op.get_bind()).get_table_names())


def upgrade() -> None:
    existing = _existing()
    if "relaxtune_jobs" not in existing:
        op.create_table(
            "relaxtune_jobs",
            sa.Column("id", sa.String(32), nullable=False),
            sa.Column("tenant", sa.String(64), nullable=False),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("spec", sa.Text(), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("cancel_requested", sa.Boolean(), nullable=False),
            sa.Column("progress", sa.Text(), nullable=False),
            sa.Column("best", sa.Text(), nullable=True),
            sa.Column("error", sa.Text(), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("claimed_by", sa.String(200), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_relaxtune_jobs_queue", "relaxtune_jobs", ["status", "created_at"])
        op.create_index("ix_relaxtune_jobs_status", "relaxtune_jobs", ["status"])
        op.create_index("ix_relaxtune_jobs_tenant", "relaxtune_jobs", ["tenant"])
    if "relaxtune_tokens" not in existing:
        op.create_table(
            "relaxtune_tokens",
            sa.Column("id", sa.String(32), nullable=False),
            sa.Column("name", sa.String(64), nullable=False),
            sa.Column("tenant", sa.String(64), nullable=False),
            sa.Column("token_hash", sa.String(64), nullable=False),
            sa.Column("admin", sa.Boolean(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("name"),
        )
    if "relaxtune_quotas" not in existing:
        op.create_table(
            "relaxtune_quotas",
            sa.Column("tenant", sa.String(64), nullable=False),
            sa.Column("limits", sa.Text(), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("tenant"),
        )
    if "relaxtune_cluster" not in existing:
        op.create_table(
            "relaxtune_cluster",
            sa.Column("worker_id", sa.String(200), nullable=False),
            sa.Column("state", sa.Text(), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("worker_id"),
        )


def downgrade() -> None:
    op.drop_table("relaxtune_cluster")
    op.drop_table("relaxtune_quotas")
    op.drop_table("relaxtune_tokens")
    op.drop_index("ix_relaxtune_jobs_tenant", table_name="relaxtune_jobs")
    op.drop_index("ix_relaxtune_jobs_status", table_name="relaxtune_jobs")
    op.drop_index("ix_relaxtune_jobs_queue", table_name="relaxtune_jobs")
    op.drop_table("relaxtune_jobs")
