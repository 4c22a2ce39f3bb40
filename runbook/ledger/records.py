"""Pydantic models that only the ledger's API uses, and row-to-model conversion.

The incident's own models (Incident, Alert, TimelineEvent, Action, ActionItem) live in
``runbook.models``; these are the ledger's bookkeeping around them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import RowMapping

from runbook.models import Action, ActionItem, Alert, Incident, Severity, TimelineEvent

# request headers that must never be stored: credentials and signatures
SECRET_HEADER_PARTS = (
    "authorization",
    "signature",
    "token",
    "secret",
    "api-key",
    "apikey",
    "cookie",
)


class AlertIntake(BaseModel):
    """One alert to record, with what to use if it opens an incident.

    Attributes:
        alert: the normalized alert.
        title: the incident title if one is opened (default: the alert's summary, else its key).
        severity: the incident severity if one is opened; the alert's ``severity_hint`` wins.
        service: the affected service (default: the alert's ``service``).
        description: the incident description (default: the alert's ``description`` annotation).
    """

    alert: Alert
    title: str | None = None
    severity: Severity = Severity.P2
    service: str = ""
    description: str = ""


class AlertOutcome(BaseModel):
    """What recording one alert did.

    Attributes:
        alert_id: the stored alert's id (the first delivery's id when this one is a duplicate).
        incident_id: the incident the alert belongs to, if any.
        opened: this alert opened a new incident.
        duplicate: this ``(source, delivery_id)`` was already recorded; nothing changed.
        attached: this alert joined an incident that was already open.
    """

    alert_id: int
    incident_id: int | None = None
    opened: bool = False
    duplicate: bool = False
    attached: bool = False


class Deadline(BaseModel):
    """An SLA clock of one incident phase: due, met or escalated."""

    model_config = ConfigDict(extra="ignore")

    id: int
    incident_id: int
    phase: str
    due_at: datetime
    met_at: datetime | None = None
    escalated_at: datetime | None = None


class OutboxItem(BaseModel):
    """A message to deliver outside the ledger's transaction (e.g. launch an incident's flow run)."""

    model_config = ConfigDict(extra="ignore")

    id: int
    kind: str
    incident_id: int | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    available_at: datetime
    attempts: int = 0
    last_error: str | None = None
    dispatched_at: datetime | None = None


class DeadLetter(BaseModel):
    """A delivery the gateway could not accept, kept for inspection (secret headers removed)."""

    model_config = ConfigDict(extra="ignore")

    id: int
    source: str
    received_at: datetime
    reason: str
    headers: dict[str, str] = Field(default_factory=dict)
    raw_body: bytes = b""


def public_headers(headers: Any) -> dict[str, str]:
    """Drop credential and signature headers; keep the rest (names lower-cased).

    Args:
        headers: a mapping or a list of ``(name, value)`` pairs.

    Returns:
        The headers safe to store.
    """
    pairs = headers.items() if hasattr(headers, "items") else headers
    kept: dict[str, str] = {}
    for name, value in pairs:
        lower = str(name).lower()
        if not any(part in lower for part in SECRET_HEADER_PARTS):
            kept[lower] = str(value)
    return kept


def to_incident(row: RowMapping) -> Incident:
    """Incident model from an ``incidents`` row."""
    return Incident.model_validate(dict(row))


def to_alert(row: RowMapping) -> Alert:
    """Alert model from an ``alerts`` row."""
    return Alert.model_validate(dict(row))


def to_event(row: RowMapping) -> TimelineEvent:
    """TimelineEvent model from a ``timeline_events`` row."""
    return TimelineEvent.model_validate(dict(row))


def to_action(row: RowMapping) -> Action:
    """Action model from an ``actions`` row."""
    return Action.model_validate(dict(row))


def to_action_item(row: RowMapping) -> ActionItem:
    """ActionItem model from an ``action_items`` row."""
    return ActionItem.model_validate(dict(row))
