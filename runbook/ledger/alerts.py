"""Recording alerts: dedup by delivery, open-or-attach by dedup key, all inside one transaction.

Race safety comes from the database, never from read-then-write: the alert insert is
``ON CONFLICT (source, delivery_id) DO NOTHING`` and a new incident is
``ON CONFLICT (open_key) DO NOTHING``; whoever loses a race simply attaches to the winner's incident.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from runbook.errors import LedgerUnavailableError
from runbook.ledger.base import LedgerBase
from runbook.ledger.records import AlertIntake, AlertOutcome, to_alert, to_incident
from runbook.ledger.schema import alerts, incidents, outbox, timeline_events
from runbook.models import Alert, AlertStatus, Incident, IncidentStatus, Severity

LAUNCH_INCIDENT = "launch_incident"
# a key's incident can open and close under us between two statements; more than a few rounds of
# that means something is badly wrong
OPEN_OR_ATTACH_ROUNDS = 10

_link_alert = (
    sa.update(alerts)
    .where(alerts.c.id == sa.bindparam("alert_id"))
    .values(incident_id=sa.bindparam("link_incident_id"))
)


class AlertsMixin(LedgerBase):
    """Alerts in: ``record_alert``, ``record_alerts``, ``declare_incident``, ``alerts_for``."""

    def record_alert(
        self,
        alert: Alert,
        *,
        title: str | None = None,
        severity: Severity = Severity.P2,
        service: str = "",
        description: str = "",
    ) -> AlertOutcome:
        """Store one alert and open or attach its incident, atomically.

        A redelivery (same source and delivery id) changes nothing. A firing alert attaches to the
        open incident with its dedup key or opens one (with a ``launch_incident`` outbox row in the
        same transaction); a resolved alert only attaches, it never opens an incident.

        Args:
            alert: the normalized alert.
            title: the title if it opens an incident (default: the alert's summary).
            severity: the severity if it opens an incident; ``alert.severity_hint`` wins.
            service: the affected service (default: ``alert.service``).
            description: the description if it opens an incident.

        Returns:
            What happened, as an AlertOutcome.

        Raises:
            LedgerUnavailableError: the database cannot be reached; nothing was stored.
        """
        intake = AlertIntake(
            alert=alert, title=title, severity=severity, service=service, description=description
        )
        return self.record_alerts([intake])[0]

    def record_alerts(self, items: Sequence[Alert | AlertIntake]) -> list[AlertOutcome]:
        """Record several alerts in ONE transaction (the gateway's group commit).

        Args:
            items: alerts, or AlertIntake when the incident's title/severity/... are known.

        Returns:
            One AlertOutcome per item, in the order given.

        Raises:
            LedgerUnavailableError: the database cannot be reached; none of them was stored.
        """
        intakes = [i if isinstance(i, AlertIntake) else AlertIntake(alert=i) for i in items]
        # touching incidents in key order keeps two concurrent batches from deadlocking each other
        order = sorted(range(len(intakes)), key=lambda i: intakes[i].alert.dedup_key)

        def work(conn: sa.Connection) -> list[AlertOutcome]:
            now = self._now()
            links: list[dict[str, Any]] = []
            events: list[dict[str, Any]] = []
            outcomes: dict[int, AlertOutcome] = {}
            for index in order:
                outcomes[index] = self._ingest(conn, intakes[index], now, links, events)
            if links:
                conn.execute(_link_alert, links)
            if events:
                conn.execute(sa.insert(timeline_events), events)
            return [outcomes[i] for i in range(len(intakes))]

        if not intakes:
            return []
        return self._write(work)

    def declare_incident(
        self,
        title: str,
        severity: Severity | str,
        service: str = "",
        description: str = "",
        scenario: str | None = None,
        dedup_key: str | None = None,
        actor: str = "ui",
    ) -> Incident:
        """A person declares an incident (from the UI or the CLI).

        A synthetic alert (source ``"ui"``) is stored and the incident opened. Without a
        ``dedup_key`` each declaration gets a fresh one, so declarations never merge unless asked;
        with one, an open incident holding that key is returned instead.

        Args:
            title: what is wrong, in a few words.
            severity: P0..P3.
            service: the affected service.
            description: details.
            scenario: the runbook scenario, if known.
            dedup_key: merge with the open incident with this key, if any.
            actor: who declared it, for the timeline.

        Returns:
            The incident (new, or the open one with ``dedup_key``).

        Raises:
            LedgerUnavailableError: the database cannot be reached.
        """
        now = self._now()
        alert = Alert(
            source="ui",
            delivery_id=f"ui-{uuid.uuid4().hex}",
            dedup_key=dedup_key or f"ui-{uuid.uuid4().hex}",
            summary=title,
            severity_hint=Severity(severity),
            service=service,
            received_at=now,
        )
        intake = AlertIntake(
            alert=alert, title=title, severity=Severity(severity), service=service,
            description=description,
        )  # fmt: skip

        def work(conn: sa.Connection) -> Incident:
            links: list[dict[str, Any]] = []
            events: list[dict[str, Any]] = []
            outcome = self._ingest(conn, intake, now, links, events, scenario=scenario, actor=actor)
            conn.execute(_link_alert, links)
            conn.execute(sa.insert(timeline_events), events)
            assert outcome.incident_id is not None  # noqa: S101 - a firing alert always has one
            return to_incident(self._incident_row(conn, outcome.incident_id))

        return self._write(work)

    def alerts_for(self, incident_id: int) -> list[Alert]:
        """The alerts attached to an incident, oldest first.

        Raises:
            LedgerPermanentError: there is no such incident.
        """

        def work(conn: sa.Connection) -> list[Alert]:
            self._incident_row(conn, incident_id)
            rows = conn.execute(
                sa.select(alerts)
                .where(alerts.c.incident_id == incident_id)
                .order_by(alerts.c.received_at, alerts.c.id)
            ).mappings()
            return [to_alert(row) for row in rows]

        return self._read(work)

    # --- inside the transaction ---------------------------------------------------------------

    def _ingest(
        self,
        conn: sa.Connection,
        intake: AlertIntake,
        now: datetime,
        links: list[dict[str, Any]],
        events: list[dict[str, Any]],
        *,
        scenario: str | None = None,
        actor: str | None = None,
    ) -> AlertOutcome:
        alert = intake.alert
        values = alert.model_dump(exclude={"received_at"})
        values["received_at"] = alert.received_at or now
        stored = conn.execute(
            self._insert(conn, alerts)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["source", "delivery_id"])
            .returning(alerts.c.id)
        ).scalar_one_or_none()
        if stored is None:
            first = conn.execute(
                sa.select(alerts.c.id, alerts.c.incident_id).where(
                    alerts.c.source == alert.source, alerts.c.delivery_id == alert.delivery_id
                )
            ).one()
            return AlertOutcome(alert_id=first.id, incident_id=first.incident_id, duplicate=True)

        what = alert.summary or alert.dedup_key
        data = {"alert_id": stored, "source": alert.source, "delivery_id": alert.delivery_id}
        event: dict[str, Any] = {
            "at": now,
            "phase": None,
            "actor": actor or alert.source,
            "data": data,
        }
        if alert.status == AlertStatus.RESOLVED:
            incident_id = conn.execute(
                sa.update(incidents)
                .where(incidents.c.open_key == alert.dedup_key)
                .values(updated_at=now)
                .returning(incidents.c.id)
            ).scalar_one_or_none()
            if incident_id is None:
                return AlertOutcome(alert_id=stored)
            links.append({"alert_id": stored, "link_incident_id": incident_id})
            events.append(
                {**event, "incident_id": incident_id, "kind": "alert_resolved",
                 "message": f"{alert.source} reports resolved: {what}"}
            )  # fmt: skip
            return AlertOutcome(alert_id=stored, incident_id=incident_id, attached=True)

        incident_id, opened = self._open_or_attach(conn, intake, now, scenario)
        links.append({"alert_id": stored, "link_incident_id": incident_id})
        message = (
            f"incident opened by {alert.source} alert: {what}"
            if opened
            else f"{alert.source} alert attached: {what}"
        )
        events.append({**event, "incident_id": incident_id, "kind": "alert", "message": message})
        return AlertOutcome(
            alert_id=stored, incident_id=incident_id, opened=opened, attached=not opened
        )

    def _open_or_attach(
        self, conn: sa.Connection, intake: AlertIntake, now: datetime, scenario: str | None
    ) -> tuple[int, bool]:
        alert = intake.alert
        key = alert.dedup_key
        for _ in range(OPEN_OR_ATTACH_ROUNDS):
            attached = conn.execute(
                sa.update(incidents)
                .where(incidents.c.open_key == key)
                .values(alert_count=incidents.c.alert_count + 1, updated_at=now)
                .returning(incidents.c.id)
            ).scalar_one_or_none()
            if attached is not None:
                return attached, False
            opened = conn.execute(
                self._insert(conn, incidents)
                .values(**self._new_incident(intake, now, scenario))
                .on_conflict_do_nothing(index_elements=["open_key"])
                .returning(incidents.c.id)
            ).scalar_one_or_none()
            if opened is not None:
                conn.execute(
                    sa.insert(outbox).values(
                        kind=LAUNCH_INCIDENT, incident_id=opened,
                        payload={"incident_id": opened}, created_at=now, available_at=now,
                        attempts=0,
                    )
                )  # fmt: skip
                return opened, True
            # someone else opened it between our two statements: attach on the next round
        raise LedgerUnavailableError(
            f"could not open or attach an incident for dedup key {key!r}: it kept changing "
            "under concurrent writers; retry the delivery"
        )

    @staticmethod
    def _new_incident(intake: AlertIntake, now: datetime, scenario: str | None) -> dict[str, Any]:
        alert = intake.alert
        title = intake.title or alert.summary or alert.labels.get("alertname") or alert.dedup_key
        return {
            "dedup_key": alert.dedup_key,
            "open_key": alert.dedup_key,
            "title": title[:512],
            "service": intake.service or alert.service,
            "description": intake.description or alert.annotations.get("description", ""),
            "severity": str(alert.severity_hint or intake.severity),
            "status": IncidentStatus.DETECTED.value,
            "scenario": scenario,
            "detected_at": now,  # SLA clocks run from when we learned of it, by the injected clock
            "updated_at": now,
            "alert_count": 1,
            "escalation_level": 0,
        }
