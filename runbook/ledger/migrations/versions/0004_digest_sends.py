"""Daily digest sends: one row per UTC day whose digest email a run claimed.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# frozen copies of the values in runbook/ledger/digests.py at this revision
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
SEND_STATE = "state IN ('sending', 'sent', 'failed')"


def upgrade() -> None:
    op.create_table(
        "digest_sends",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("sent_to", sa.JSON, nullable=False),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_digest_sends"),
        sa.UniqueConstraint("day", name="uq_digest_sends_day"),
        sa.CheckConstraint(SEND_STATE, name="ck_digest_sends_state"),
    )


def downgrade() -> None:
    op.drop_table("digest_sends")
