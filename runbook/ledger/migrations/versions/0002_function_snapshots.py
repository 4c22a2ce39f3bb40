"""Edge-function source snapshots (what the edge-timeouts playbook redeploys).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "function_snapshots",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("project_ref", sa.String(64), nullable=False),
        sa.Column("slug", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("entrypoint_path", sa.String(500), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("taken_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_function_snapshots"),
        sa.UniqueConstraint(
            "project_ref", "slug", "version", name="uq_function_snapshots_project_ref_slug_version"
        ),
    )


def downgrade() -> None:
    op.drop_table("function_snapshots")
