"""Reading incidents, moving them through the lifecycle, and their timeline."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runbook.errors import InvalidTransition, LedgerPermanentError
from runbook.ledger.base import LedgerBase
from runbook.ledger.records import to_event, to_incident
from runbook.ledger.schema import incidents, timeline_events
from runbook.models import (
    Diagnosis,
    Incident,
    IncidentStatus,
    Phase,
    Severity,
    TimelineEvent,
    check_transition,
    incident_key,
)

# a conditional UPDATE that keeps losing to concurrent moves gives up after this many rounds
TRANSITION_ROUNDS = 5


class IncidentUpdate(BaseModel):
    """The fields ``update_incident`` may change, with their types (validation only)."""

    model_config = ConfigDict(extra="forbid")

    # the defaults are never stored: only the fields the caller set are (exclude_unset)
    severity: Severity = Severity.P2
    scenario: str | None = None
    ticket_ref: str | None = None
    diagnosis: dict[str, Any] | None = None
    acknowledged_at: datetime | None = None
    escalation_level: int = Field(default=0, ge=0)
    title: str = Field(default="-", min_length=1, max_length=512)
    description: str = ""


UPDATABLE = tuple(IncidentUpdate.model_fields)


class IncidentsMixin(LedgerBase):
    """Incidents: read, list, transition, update; the timeline."""

    def get_incident(self, incident_id: int) -> Incident:
        """The incident with this id.

        Raises:
            LedgerPermanentError: there is no such incident.
        """
        return self._read(lambda conn: to_incident(self._incident_row(conn, incident_id)))

    def list_incidents(
        self, *, open_only: bool = False, since: datetime | None = None, limit: int | None = None
    ) -> list[Incident]:
        """Incidents, newest first.

        Args:
            open_only: only detected, triaging, mitigating or monitoring ones.
            since: only those detected at or after this time.
            limit: at most this many.

        Returns:
            The incidents.
        """
        query = sa.select(incidents).order_by(incidents.c.detected_at.desc(), incidents.c.id.desc())
        if open_only:
            query = query.where(incidents.c.open_key.is_not(None))
        if since is not None:
            query = query.where(incidents.c.detected_at >= since)
        if limit is not None:
            query = query.limit(limit)
        return self._read(lambda conn: [to_incident(r) for r in conn.execute(query).mappings()])

    def transition(
        self,
        incident_id: int,
        new_status: IncidentStatus | str,
        *,
        actor: str = "runbook",
        reason: str = "",
    ) -> Incident:
        """Move an incident to ``new_status`` if the lifecycle allows it, race-safely.

        Stamps ``mitigated_at`` on entering monitoring, ``resolved_at`` and ``closed_at``; keeps
        ``open_key`` (NULL once no longer open, the dedup key again on reopen); writes a ``status``
        timeline event with ``from``/``to``.

        Args:
            incident_id: the incident.
            new_status: where it goes.
            actor: who moved it, for the timeline.
            reason: why, for the timeline.

        Returns:
            The incident after the move.

        Raises:
            InvalidTransition: the lifecycle forbids the move (nothing changed).
            LedgerPermanentError: no such incident, or reopening while another incident is open
                for the same dedup key.
        """
        new = IncidentStatus(new_status)

        def work(conn: sa.Connection) -> Incident:
            for _ in range(TRANSITION_ROUNDS):
                row = self._incident_row(conn, incident_id)
                current = IncidentStatus(row["status"])
                check_transition(current, new)
                values = self._transition_values(row, current, new)
                if self._conditional_update(conn, row, current, values):
                    self._status_event(conn, incident_id, current, new, actor, reason, values)
                    return to_incident(self._incident_row(conn, incident_id))
            raise InvalidTransition(
                f"{incident_key(incident_id)} kept changing status while moving it to "
                f"{new.value!r}; look at its timeline and retry"
            )

        return self._write(work)

    def _transition_values(
        self, row: sa.RowMapping, current: IncidentStatus, new: IncidentStatus
    ) -> dict[str, Any]:
        now = self._now()
        values: dict[str, Any] = {"status": new.value, "updated_at": now}
        if new == IncidentStatus.MONITORING:
            values["mitigated_at"] = now
        elif new == IncidentStatus.RESOLVED:
            values["resolved_at"] = now
        elif new == IncidentStatus.CLOSED:
            values["closed_at"] = now
        if new.is_open and not current.is_open:
            # reopened: it is not resolved any more; the timeline keeps the earlier stamps
            values.update(open_key=row["dedup_key"], resolved_at=None, closed_at=None)
        elif not new.is_open:
            values["open_key"] = None
        return values

    def _conditional_update(
        self,
        conn: sa.Connection,
        row: sa.RowMapping,
        current: IncidentStatus,
        values: dict[str, Any],
    ) -> bool:
        statement = (
            sa.update(incidents)
            .where(incidents.c.id == row["id"], incidents.c.status == current.value)
            .values(**values)
        )
        if not values.get("open_key"):
            return conn.execute(statement).rowcount == 1
        # reopening can collide with a newer open incident for the same key: the savepoint keeps
        # the transaction usable so the error can name that incident
        try:
            with conn.begin_nested():
                return conn.execute(statement).rowcount == 1
        except sa.exc.IntegrityError as error:
            holder = conn.execute(
                sa.select(incidents.c.id).where(incidents.c.open_key == row["dedup_key"])
            ).scalar_one_or_none()
            other = incident_key(holder) if holder is not None else "another incident"
            raise LedgerPermanentError(
                f"cannot reopen {incident_key(row['id'])}: {other} is already open for dedup key "
                f"{row['dedup_key']!r}; work on {other} instead, or resolve it first"
            ) from error

    def _status_event(
        self,
        conn: sa.Connection,
        incident_id: int,
        current: IncidentStatus,
        new: IncidentStatus,
        actor: str,
        reason: str,
        values: dict[str, Any],
    ) -> None:
        message = f"status {current.value} -> {new.value}" + (f": {reason}" if reason else "")
        conn.execute(
            sa.insert(timeline_events).values(
                incident_id=incident_id, at=values["updated_at"], kind="status", phase=None,
                message=message, actor=actor,
                data={"from": current.value, "to": new.value, "reason": reason},
            )
        )  # fmt: skip

    def update_incident(self, incident_id: int, **fields: Any) -> Incident:
        """Change some of an incident's fields.

        Args:
            incident_id: the incident.
            **fields: any of severity, scenario, ticket_ref, diagnosis (dict or Diagnosis),
                acknowledged_at, escalation_level, title, description.

        Returns:
            The incident after the change. A severity change also writes a ``severity`` event.

        Raises:
            LedgerPermanentError: an unknown field name or a bad value (nothing changed), or no
                such incident.
        """
        unknown = sorted(set(fields) - set(UPDATABLE))
        if unknown:
            raise LedgerPermanentError(
                f"update_incident cannot change {', '.join(unknown)}; it changes only: "
                f"{', '.join(UPDATABLE)} (use transition() for the status)"
            )
        if isinstance(fields.get("diagnosis"), Diagnosis):
            fields["diagnosis"] = fields["diagnosis"].model_dump(mode="json")
        try:
            values = IncidentUpdate.model_validate(fields).model_dump(exclude_unset=True)
        except ValidationError as error:
            problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in error.errors())
            raise LedgerPermanentError(f"update_incident got a bad value ({problems})") from error
        if "severity" in values:
            values["severity"] = values["severity"].value

        def work(conn: sa.Connection) -> Incident:
            row = self._incident_row(conn, incident_id)
            if not values:
                return to_incident(row)
            now = self._now()
            conn.execute(
                sa.update(incidents)
                .where(incidents.c.id == incident_id)
                .values(**values, updated_at=now)
            )
            old, new = row["severity"], values.get("severity", row["severity"])
            if new != old:
                conn.execute(
                    sa.insert(timeline_events).values(
                        incident_id=incident_id, at=now, kind="severity", phase=None,
                        message=f"severity {old} -> {new}", actor="runbook",
                        data={"from": old, "to": new},
                    )
                )  # fmt: skip
            return to_incident(self._incident_row(conn, incident_id))

        return self._write(work)

    def add_event(
        self,
        incident_id: int,
        kind: str,
        message: str,
        *,
        phase: Phase | str | None = None,
        actor: str = "runbook",
        data: dict[str, Any] | None = None,
        at: datetime | None = None,
    ) -> TimelineEvent:
        """Append a line to the incident's timeline.

        Args:
            incident_id: the incident.
            kind: alert, phase_started, phase_ended, action, escalation, note, ...
            message: what happened, for people.
            phase: the runbook phase it belongs to, if any.
            actor: who did it.
            data: structured details (JSON-serializable).
            at: when (default: now by the ledger's clock).

        Returns:
            The stored event, with its id.

        Raises:
            LedgerPermanentError: no such incident.
        """
        event = TimelineEvent(
            incident_id=incident_id, at=at or self._now(), kind=kind, message=message,
            phase=Phase(phase) if phase else None, actor=actor, data=data or {},
        )  # fmt: skip
        values = event.model_dump(exclude={"id"})

        def work(conn: sa.Connection) -> TimelineEvent:
            self._incident_row(conn, incident_id)
            event_id = conn.execute(
                sa.insert(timeline_events).values(**values).returning(timeline_events.c.id)
            ).scalar_one()
            return event.model_copy(update={"id": event_id})

        return self._write(work)

    def timeline(self, incident_id: int) -> list[TimelineEvent]:
        """The incident's timeline, ordered by (at, id).

        Raises:
            LedgerPermanentError: no such incident.
        """

        def work(conn: sa.Connection) -> list[TimelineEvent]:
            self._incident_row(conn, incident_id)
            rows = conn.execute(
                sa.select(timeline_events)
                .where(timeline_events.c.incident_id == incident_id)
                .order_by(timeline_events.c.at, timeline_events.c.id)
            ).mappings()
            return [to_event(row) for row in rows]

        return self._read(work)
