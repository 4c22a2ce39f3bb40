"""Work that outlives a process: SLA deadlines, the outbox, and dead letters."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from runbook.errors import LedgerPermanentError
from runbook.ledger.base import LedgerBase
from runbook.ledger.records import DeadLetter, Deadline, OutboxItem, public_headers
from runbook.ledger.schema import OPEN_STATUS_VALUES, dead_letters, deadlines, incidents, outbox
from runbook.models import incident_key

# a claimed outbox row comes back to the queue after this long unless marked done or retried
OUTBOX_LEASE_S = 60.0
MAX_ERROR_CHARS = 2000


class QueueMixin(LedgerBase):
    """Deadlines (SLA clocks), the outbox (messages after commit), dead letters (bad deliveries)."""

    # --- deadlines ----------------------------------------------------------------------------

    def set_deadlines(self, incident_id: int, due: Mapping[str, datetime]) -> list[Deadline]:
        """Set (insert or move) the incident's phase deadlines.

        A deadline whose due time is unchanged keeps its met/escalated stamps; a moved one loses
        them, since the new clock has not been met or escalated yet.

        Args:
            incident_id: the incident.
            due: phase name -> due time.

        Returns:
            All of the incident's deadlines afterwards.

        Raises:
            LedgerPermanentError: no such incident.
        """

        def work(conn: sa.Connection) -> list[Deadline]:
            self._incident_row(conn, incident_id)
            if due:
                insert = self._insert(conn, deadlines)
                same = deadlines.c.due_at == insert.excluded.due_at
                statement = insert.on_conflict_do_update(
                    index_elements=["incident_id", "phase"],
                    set_={
                        "due_at": insert.excluded.due_at,
                        "met_at": sa.case((same, deadlines.c.met_at), else_=None),
                        "escalated_at": sa.case((same, deadlines.c.escalated_at), else_=None),
                    },
                )
                rows = [
                    {"incident_id": incident_id, "phase": p, "due_at": d} for p, d in due.items()
                ]
                for row in rows:
                    conn.execute(statement.values(**row))
            return self._deadlines(conn, incident_id)

        return self._write(work)

    def deadlines(self, incident_id: int) -> list[Deadline]:
        """The incident's deadlines, earliest first."""
        return self._read(lambda conn: self._deadlines(conn, incident_id))

    def _deadlines(self, conn: sa.Connection, incident_id: int) -> list[Deadline]:
        rows = conn.execute(
            sa.select(deadlines)
            .where(deadlines.c.incident_id == incident_id)
            .order_by(deadlines.c.due_at, deadlines.c.phase)
        ).mappings()
        return [Deadline.model_validate(dict(r)) for r in rows]

    def due_deadlines(self, now: datetime | None = None) -> list[Deadline]:
        """Deadlines that are due and neither met nor escalated, of incidents still open.

        Args:
            now: the time to compare with (default: the ledger's clock).

        Returns:
            The due deadlines, earliest first.
        """
        at = now or self._now()
        query = (
            sa.select(deadlines)
            .join(incidents, incidents.c.id == deadlines.c.incident_id)
            .where(
                deadlines.c.met_at.is_(None),
                deadlines.c.escalated_at.is_(None),
                deadlines.c.due_at <= at,
                incidents.c.status.in_(OPEN_STATUS_VALUES),
            )
            .order_by(deadlines.c.due_at, deadlines.c.id)
        )
        return self._read(
            lambda conn: [Deadline.model_validate(dict(r)) for r in conn.execute(query).mappings()]
        )

    def mark_deadline(
        self,
        incident_id: int,
        phase: str,
        *,
        met_at: datetime | None = None,
        escalated_at: datetime | None = None,
    ) -> Deadline:
        """Stamp a deadline as met or escalated (give at least one).

        Raises:
            LedgerPermanentError: neither stamp given, or no such deadline.
        """
        values = {k: v for k, v in (("met_at", met_at), ("escalated_at", escalated_at)) if v}
        if not values:
            raise LedgerPermanentError("mark_deadline needs met_at or escalated_at")

        def work(conn: sa.Connection) -> Deadline:
            row = (
                conn.execute(
                    sa.update(deadlines)
                    .where(deadlines.c.incident_id == incident_id, deadlines.c.phase == phase)
                    .values(**values)
                    .returning(*deadlines.c)
                )
                .mappings()
                .one_or_none()
            )
            if row is None:
                raise LedgerPermanentError(
                    f"no {phase!r} deadline for {incident_key(incident_id)}; set it with "
                    "set_deadlines first"
                )
            return Deadline.model_validate(dict(row))

        return self._write(work)

    # --- outbox -------------------------------------------------------------------------------

    def outbox_enqueue(
        self, kind: str, payload: dict[str, Any], incident_id: int | None = None
    ) -> OutboxItem:
        """Queue a message for the dispatcher.

        Args:
            kind: what to do, e.g. ``launch_incident``.
            payload: its JSON-serializable arguments.
            incident_id: the incident it concerns, if any.

        Returns:
            The queued item, available now.
        """

        def work(conn: sa.Connection) -> OutboxItem:
            now = self._now()
            row = (
                conn.execute(
                    sa.insert(outbox)
                    .values(
                        kind=kind,
                        incident_id=incident_id,
                        payload=payload,
                        created_at=now,
                        available_at=now,
                        attempts=0,
                    )  # fmt: skip
                    .returning(*outbox.c)
                )
                .mappings()
                .one()
            )
            return OutboxItem.model_validate(dict(row))

        return self._write(work)

    def outbox_claim(self, limit: int = 10, now: datetime | None = None) -> list[OutboxItem]:
        """Take up to ``limit`` available items for delivery, leasing them for 60 s.

        Each claimed item's attempts goes up by one and it is hidden until the lease ends, so a
        dispatcher that dies mid-delivery does not lose it. On PostgreSQL, ``FOR UPDATE SKIP
        LOCKED`` keeps two dispatchers from taking the same row.

        Args:
            limit: the most items to take.
            now: the time to compare with (default: the ledger's clock).

        Returns:
            The claimed items, oldest available first.
        """
        at = now or self._now()

        def work(conn: sa.Connection) -> list[OutboxItem]:
            query = (
                sa.select(outbox.c.id)
                .where(outbox.c.dispatched_at.is_(None), outbox.c.available_at <= at)
                .order_by(outbox.c.available_at, outbox.c.id)
                .limit(limit)
            )
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ids = list(conn.execute(query).scalars())
            if not ids:
                return []
            rows = conn.execute(
                sa.update(outbox)
                .where(outbox.c.id.in_(ids))
                .values(
                    attempts=outbox.c.attempts + 1,
                    available_at=at + timedelta(seconds=OUTBOX_LEASE_S),
                )
                .returning(*outbox.c)
            ).mappings()
            items = [OutboxItem.model_validate(dict(r)) for r in rows]
            return sorted(items, key=lambda item: ids.index(item.id))

        return self._write(work)

    def outbox_done(self, item_id: int) -> None:
        """Mark an item delivered; it is never claimed again."""
        self._outbox_update(item_id, dispatched_at=self._now())

    def outbox_retry(self, item_id: int, error: str, delay_s: float) -> None:
        """Put an item back for another try after ``delay_s`` seconds, noting why it failed."""
        self._outbox_update(
            item_id,
            last_error=error[:MAX_ERROR_CHARS],
            available_at=self._now() + timedelta(seconds=max(0.0, delay_s)),
        )

    def _outbox_update(self, item_id: int, **values: Any) -> None:
        def work(conn: sa.Connection) -> None:
            result = conn.execute(sa.update(outbox).where(outbox.c.id == item_id).values(**values))
            if result.rowcount != 1:
                raise LedgerPermanentError(f"no outbox item {item_id} in the ledger")

        self._write(work)

    def outbox_stats(self) -> dict[str, Any]:
        """How far behind the dispatcher is.

        Returns:
            ``{"pending": n, "oldest_age_s": seconds or None}`` over items not yet delivered.
        """
        query = sa.select(sa.func.count(outbox.c.id), sa.func.min(outbox.c.created_at)).where(
            outbox.c.dispatched_at.is_(None)
        )
        pending, oldest = self._read(lambda conn: conn.execute(query).one())
        age = (self._now() - oldest).total_seconds() if oldest is not None else None
        return {"pending": int(pending), "oldest_age_s": age}

    # --- dead letters -------------------------------------------------------------------------

    def dead_letter(
        self, source: str, reason: str, raw_body: bytes, headers: Mapping[str, str]
    ) -> int:
        """Keep a delivery that could not be accepted, for inspection.

        Authorization, signature, token and cookie headers are dropped before storing.

        Args:
            source: the sender (alertmanager, pagerduty, ...).
            reason: why it was refused.
            raw_body: the body exactly as received.
            headers: the request headers.

        Returns:
            The dead letter's id.
        """
        values = {
            "source": source,
            "received_at": self._now(),
            "reason": reason,
            "headers": public_headers(headers),
            "raw_body": bytes(raw_body),
        }
        return self._write(
            lambda conn: conn.execute(
                sa.insert(dead_letters).values(**values).returning(dead_letters.c.id)
            ).scalar_one()
        )

    def dead_letters(self, limit: int = 50) -> list[DeadLetter]:
        """The newest dead letters first."""
        query = (
            sa.select(dead_letters)
            .order_by(dead_letters.c.received_at.desc(), dead_letters.c.id.desc())
            .limit(limit)
        )
        return self._read(
            lambda conn: [
                DeadLetter.model_validate(dict(r)) for r in conn.execute(query).mappings()
            ]
        )
