"""Recording alerts: dedup by delivery, open-or-attach by dedup key, all inside one transaction.

Race safety comes from the database, never from read-then-write: the alert insert is
``ON CONFLICT (source, delivery_id) DO NOTHING`` and a new incident is
``ON CONFLICT (open_key) DO NOTHING``; whoever loses a race simply attaches to the winner's incident.
A batch costs a few statements, not a few per alert (``runbook.ledger.alert_batch``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa

from runbook.ledger.alert_batch import LAUNCH_INCIDENT, record_batch
from runbook.ledger.base import LedgerBase
from runbook.ledger.records import AlertIntake, AlertOutcome, to_alert, to_incident
from runbook.ledger.schema import alerts
from runbook.models import Alert, Incident, Severity

__all__ = ["LAUNCH_INCIDENT", "AlertsMixin"]


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
        if not intakes:
            return []
        return self._write(lambda conn: record_batch(conn, intakes, self._now()))

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
            (outcome,) = record_batch(conn, [intake], now, scenario=scenario, actor=actor)
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
