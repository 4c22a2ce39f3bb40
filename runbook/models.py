"""The core data of an incident, as pydantic models.

These are what the ledger stores, the gateway produces, the flows pass around and the CLI prints.
They carry no I/O.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from runbook.errors import InvalidTransition


class Severity(enum.StrEnum):
    """Runbook severity levels; P0 is the most severe."""

    P0 = "P0"
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"

    @property
    def rank(self) -> int:
        """0 for P0 ... 3 for P3: lower is more severe."""
        return int(self.value[1])

    def is_higher_than(self, other: Severity) -> bool:
        """True when this severity is more severe than ``other``."""
        return self.rank < other.rank


class Phase(enum.StrEnum):
    """The five phases of the runbook's incident-response checklist, in order."""

    DETECT = "detect"
    TRIAGE = "triage"
    MITIGATE = "mitigate"
    RCA = "rca"
    COMMUNICATE = "communicate"


class IncidentStatus(enum.StrEnum):
    """Lifecycle of an incident. See ``TRANSITIONS`` for the legal moves."""

    DETECTED = "detected"
    TRIAGING = "triaging"
    MITIGATING = "mitigating"
    MONITORING = "monitoring"
    RESOLVED = "resolved"
    CLOSED = "closed"
    REVIEW_SCHEDULED = "review_scheduled"
    REVIEWED = "reviewed"

    @property
    def is_open(self) -> bool:
        """Open incidents still need work before they are resolved."""
        return self in OPEN_STATUSES


OPEN_STATUSES = frozenset(
    {
        IncidentStatus.DETECTED,
        IncidentStatus.TRIAGING,
        IncidentStatus.MITIGATING,
        IncidentStatus.MONITORING,
    }
)

_S = IncidentStatus
TRANSITIONS: dict[IncidentStatus, frozenset[IncidentStatus]] = {
    # a false alarm or an alert that clears by itself can resolve from any open state
    _S.DETECTED: frozenset({_S.TRIAGING, _S.RESOLVED}),
    _S.TRIAGING: frozenset({_S.MITIGATING, _S.RESOLVED}),
    # mitigating -> triaging: the first hypothesis was wrong, go back and look again
    _S.MITIGATING: frozenset({_S.MONITORING, _S.TRIAGING, _S.RESOLVED}),
    # monitoring -> mitigating: the problem recurred while we watched
    _S.MONITORING: frozenset({_S.RESOLVED, _S.MITIGATING}),
    # resolved -> triaging: reopened (it came back after we declared victory)
    _S.RESOLVED: frozenset({_S.CLOSED, _S.TRIAGING}),
    _S.CLOSED: frozenset({_S.REVIEW_SCHEDULED, _S.TRIAGING}),
    _S.REVIEW_SCHEDULED: frozenset({_S.REVIEWED}),
    _S.REVIEWED: frozenset(),
}


def check_transition(current: IncidentStatus, new: IncidentStatus) -> None:
    """Raise InvalidTransition unless ``current -> new`` is a legal lifecycle move.

    Raises:
        InvalidTransition: naming both states and the moves that are allowed from ``current``.
    """
    if new not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[current])) or "none"
        raise InvalidTransition(
            f"an incident cannot go from {current.value!r} to {new.value!r}; "
            f"from {current.value!r} it may go to: {allowed}"
        )


class AlertStatus(enum.StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class Alert(BaseModel):
    """One alert, normalized from whatever sender delivered it.

    ``dedup_key`` groups alerts about the same problem: firing alerts with the same key attach to the
    one open incident. ``delivery_id`` identifies one delivery: a redelivery with the same
    ``(source, delivery_id)`` is recognised and changes nothing.
    """

    model_config = ConfigDict(frozen=False)

    source: str = Field(
        description="alertmanager, grafana, pagerduty, datadog, sentry, generic, watch, ui"
    )
    delivery_id: str = Field(description="unique per delivery from this source")
    fingerprint: str = Field(default="", description="the sender's identity of the alert")
    dedup_key: str = Field(description="alerts with the same key belong to the same incident")
    status: AlertStatus = AlertStatus.FIRING
    summary: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    severity_hint: Severity | None = None
    service: str = ""
    links: list[str] = Field(default_factory=list)
    received_at: datetime | None = None
    raw_body: bytes = b""


class Incident(BaseModel):
    """An incident as the ledger holds it."""

    id: int
    dedup_key: str
    title: str
    service: str = ""
    description: str = ""
    severity: Severity
    status: IncidentStatus
    scenario: str | None = None
    detected_at: datetime
    acknowledged_at: datetime | None = None
    mitigated_at: datetime | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    updated_at: datetime | None = None
    alert_count: int = 0
    escalation_level: int = 0
    ticket_ref: str | None = None
    diagnosis: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        """Human reference, e.g. ``INC-42``."""
        return incident_key(self.id)

    @property
    def is_open(self) -> bool:
        return self.status.is_open


def incident_key(incident_id: int) -> str:
    """``INC-<id>``: how people and flow run names refer to an incident."""
    return f"INC-{incident_id}"


def parse_incident_ref(ref: str | int) -> int:
    """Accept ``42``, ``"42"`` or ``"INC-42"`` (any case) and return 42.

    Raises:
        ValueError: with what a valid reference looks like.
    """
    if isinstance(ref, int):
        return ref
    text = ref.strip().upper()
    if text.startswith("INC-"):
        text = text[4:]
    if not text.isdigit():
        raise ValueError(f"{ref!r} is not an incident reference; use a number or INC-<number>")
    return int(text)


class TimelineEvent(BaseModel):
    """One line of the incident's timeline."""

    id: int | None = None
    incident_id: int
    at: datetime
    kind: str = Field(
        description="alert, phase_started, phase_ended, action, escalation, note, ..."
    )
    phase: Phase | None = None
    message: str
    actor: str = "runbook"
    data: dict[str, Any] = Field(default_factory=dict)


class ActionStatus(enum.StrEnum):
    PLANNED = "planned"
    APPLIED = "applied"
    FAILED = "failed"
    SKIPPED = "skipped"


class Action(BaseModel):
    """A side effect on a real system, recorded under an idempotency key before it runs."""

    id: int | None = None
    incident_id: int
    idempotency_key: str
    kind: str = Field(
        description="rollback_deployment, page_oncall, create_ticket, post_message, ..."
    )
    target: str = ""
    status: ActionStatus = ActionStatus.PLANNED
    plan: dict[str, Any] = Field(default_factory=dict)
    result: dict[str, Any] = Field(default_factory=dict)
    actor: str = "runbook"
    created_at: datetime | None = None
    updated_at: datetime | None = None


class ActionItemStatus(enum.StrEnum):
    OPEN = "open"
    IN_PROGRESS = "in_progress"
    DONE = "done"


class ActionItem(BaseModel):
    """A follow-up task from the RCA or the post-incident review."""

    id: int | None = None
    incident_id: int
    title: str
    owner: str = ""
    due_at: datetime | None = None
    status: ActionItemStatus = ActionItemStatus.OPEN
    source: str = "rca"
    created_at: datetime | None = None


class Evidence(BaseModel):
    """One observation supporting (or weakening) a hypothesis."""

    signal: str
    value: Any = None
    weight: float = 0.0
    note: str = ""


class Hypothesis(BaseModel):
    scenario: str
    score: float
    evidence: list[Evidence] = Field(default_factory=list)


class Diagnosis(BaseModel):
    """Scenarios of the runbook ranked by the evidence gathered in triage."""

    hypotheses: list[Hypothesis] = Field(default_factory=list)

    @property
    def top(self) -> Hypothesis | None:
        return max(self.hypotheses, key=lambda h: h.score, default=None)
