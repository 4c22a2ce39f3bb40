"""Post-incident reviews: ticked checklist items and the scheduled review runs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# frozen copies of the values in runbook/ledger/reviews.py at this revision
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
RUN_STATE = "state IN ('scheduled', 'reminded', 'quiet', 'cancelled')"


def upgrade() -> None:
    op.create_table(
        "review_items",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("incident_id", ID, nullable=False),
        sa.Column("review_key", sa.String(50), nullable=False),
        sa.Column("item_key", sa.String(100), nullable=False),
        sa.Column("done_at", TS, nullable=False),
        sa.Column("done_by", sa.String(200), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name="pk_review_items"),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name="fk_review_items_incident_id_incidents"
        ),
        sa.UniqueConstraint(
            "incident_id",
            "review_key",
            "item_key",
            name="uq_review_items_incident_id_review_key_item_key",
        ),
    )
    op.create_table(
        "review_runs",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("incident_id", ID, nullable=False),
        sa.Column("review_key", sa.String(50), nullable=False),
        sa.Column("scheduled_for", TS, nullable=False),
        sa.Column("flow_run_id", sa.String(64), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_review_runs"),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name="fk_review_runs_incident_id_incidents"
        ),
        sa.UniqueConstraint(
            "incident_id", "review_key", name="uq_review_runs_incident_id_review_key"
        ),
        sa.CheckConstraint(RUN_STATE, name="ck_review_runs_state"),
    )


def downgrade() -> None:
    op.drop_table("review_runs")
    op.drop_table("review_items")
