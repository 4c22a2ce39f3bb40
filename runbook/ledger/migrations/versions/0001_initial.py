"""The ledger's first schema: incidents, alerts, timeline, actions, action items, deadlines, outbox,
dead letters.

Revision ID: 0001
Revises:
Create Date: 2026-05-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# frozen copies of the values in schema.py at this revision: a migration never imports live code
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
INCIDENT_STATUS = "status IN ('detected', 'triaging', 'mitigating', 'monitoring', 'resolved', 'closed', 'review_scheduled', 'reviewed')"
SEVERITY = "severity IN ('P0', 'P1', 'P2', 'P3')"
ACTION_STATUS = "status IN ('planned', 'applied', 'failed', 'skipped')"
ACTION_ITEM_STATUS = "status IN ('open', 'in_progress', 'done')"


def _id() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("id", ID, primary_key=True, autoincrement=True)


def _incident_fk(table: str, nullable: bool = False) -> list:  # type: ignore[type-arg]
    return [
        sa.Column("incident_id", ID, nullable=nullable),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name=f"fk_{table}_incident_id_incidents"
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "incidents",
        _id(),
        sa.Column("dedup_key", sa.String(512), nullable=False),
        sa.Column("title", sa.String(512), nullable=False),
        sa.Column("service", sa.String(200), nullable=False, server_default=""),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("severity", sa.String(2), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("scenario", sa.String(100), nullable=True),
        sa.Column("detected_at", TS, nullable=False),
        sa.Column("acknowledged_at", TS, nullable=True),
        sa.Column("mitigated_at", TS, nullable=True),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("closed_at", TS, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("alert_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("escalation_level", sa.Integer, nullable=False, server_default="0"),
        sa.Column("ticket_ref", sa.String(200), nullable=True),
        sa.Column("diagnosis", sa.JSON, nullable=True),
        sa.Column("open_key", sa.String(512), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_incidents"),
        sa.UniqueConstraint("open_key", name="uq_incidents_open_key"),
        sa.CheckConstraint(INCIDENT_STATUS, name="ck_incidents_status"),
        sa.CheckConstraint(SEVERITY, name="ck_incidents_severity"),
    )
    op.create_index("ix_incidents_status", "incidents", ["status"])
    op.create_index("ix_incidents_detected_at", "incidents", ["detected_at"])

    op.create_table(
        "alerts",
        _id(),
        sa.Column("source", sa.String(50), nullable=False),
        sa.Column("delivery_id", sa.String(256), nullable=False),
        sa.Column("fingerprint", sa.String(256), nullable=False, server_default=""),
        sa.Column("dedup_key", sa.String(512), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("summary", sa.Text, nullable=False, server_default=""),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("annotations", sa.JSON, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("severity_hint", sa.String(2), nullable=True),
        sa.Column("service", sa.String(200), nullable=False, server_default=""),
        sa.Column("links", sa.JSON, nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("raw_body", sa.LargeBinary, nullable=False),
        *_incident_fk("alerts", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.UniqueConstraint("source", "delivery_id", name="uq_alerts_source_delivery_id"),
    )
    op.create_index("ix_alerts_incident_id", "alerts", ["incident_id"])

    op.create_table(
        "timeline_events",
        _id(),
        *_incident_fk("timeline_events"),
        sa.Column("at", TS, nullable=False),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("phase", sa.String(20), nullable=True),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_timeline_events"),
    )
    op.create_index("ix_timeline_events_incident_id_at", "timeline_events", ["incident_id", "at"])

    op.create_table(
        "actions",
        _id(),
        *_incident_fk("actions"),
        sa.Column("idempotency_key", sa.String(512), nullable=False),
        sa.Column("kind", sa.String(100), nullable=False),
        sa.Column("target", sa.String(512), nullable=False, server_default=""),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("plan", sa.JSON, nullable=False),
        sa.Column("result", sa.JSON, nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_actions"),
        sa.UniqueConstraint("idempotency_key", name="uq_actions_idempotency_key"),
        sa.CheckConstraint(ACTION_STATUS, name="ck_actions_status"),
    )
    op.create_index("ix_actions_incident_id", "actions", ["incident_id"])

    op.create_table(
        "action_items",
        _id(),
        *_incident_fk("action_items"),
        sa.Column("title", sa.String(512), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False, server_default=""),
        sa.Column("due_at", TS, nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("source", sa.String(50), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_action_items"),
        sa.CheckConstraint(ACTION_ITEM_STATUS, name="ck_action_items_status"),
    )
    op.create_index("ix_action_items_incident_id", "action_items", ["incident_id"])

    op.create_table(
        "deadlines",
        _id(),
        *_incident_fk("deadlines"),
        sa.Column("phase", sa.String(50), nullable=False),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("met_at", TS, nullable=True),
        sa.Column("escalated_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_deadlines"),
        sa.UniqueConstraint("incident_id", "phase", name="uq_deadlines_incident_id_phase"),
    )
    op.create_index("ix_deadlines_due_at", "deadlines", ["due_at"])

    op.create_table(
        "outbox",
        _id(),
        sa.Column("kind", sa.String(100), nullable=False),
        *_incident_fk("outbox", nullable=True),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("available_at", TS, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("dispatched_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.create_index(
        "ix_outbox_dispatched_at_available_at", "outbox", ["dispatched_at", "available_at"]
    )

    op.create_table(
        "dead_letters",
        _id(),
        sa.Column("source", sa.String(50), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("headers", sa.JSON, nullable=False),
        sa.Column("raw_body", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
    )
    op.create_index("ix_dead_letters_received_at", "dead_letters", ["received_at"])


def downgrade() -> None:
    for table in (
        "dead_letters",
        "outbox",
        "deadlines",
        "action_items",
        "actions",
        "timeline_events",
        "alerts",
        "incidents",
    ):
        op.drop_table(table)
