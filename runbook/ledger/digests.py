"""Daily digest sends in the ledger: which day's summary was emailed, to whom, and when.

One table (migration 0004), on the ledger's one metadata:

- ``digest_sends``: one row per UTC calendar day whose digest a run set out to email (the day the
  summary ends, ``"YYYY-MM-DD"``, UNIQUE). Its state is ``sending`` while a run holds the send,
  ``sent`` once the mail went out (with ``sent_to``), ``failed`` when it could not (with ``error``).

The row is the digest's idempotency key: the digest is not about one incident, so it cannot be an
action in the ``actions`` table. A run first claims the day (``claim_digest``): only the run that
inserts the row, or takes over a ``failed`` one, sends; a re-run of a day already ``sent`` (or being
sent by another run) sends nothing. Each method is one transaction: on PostgreSQL the UNIQUE insert
and the ``WHERE state = 'failed'`` update let exactly one of two racing runs claim the day; SQLite
has one writer at a time.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from runbook.errors import LedgerPermanentError
from runbook.ledger.base import LedgerBase
from runbook.ledger.schema import ID, UTCDateTime, in_values, metadata

DIGEST_STATES = ("sending", "sent", "failed")
DigestState = Literal["sending", "sent", "failed"]
# what a run records when it is done with a claimed day
FINISHED_STATES = ("sent", "failed")
ERROR_MAX = 500

digest_sends = sa.Table(
    "digest_sends",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("day", sa.String(10), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("sent_to", sa.JSON, nullable=False),
    sa.Column("error", sa.String(ERROR_MAX), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("day"),
    sa.CheckConstraint(in_values("state", DIGEST_STATES), name="state"),
)


class DigestSend(BaseModel):
    """The record of one day's digest email."""

    model_config = ConfigDict(extra="ignore")

    day: str = Field(description='The UTC calendar day the summary ends, "YYYY-MM-DD".')
    state: DigestState
    sent_to: list[str] = Field(default_factory=list)
    error: str | None = None
    created_at: datetime
    updated_at: datetime = Field(description="When the state last changed (when it was sent).")


def digest_day(at: datetime) -> str:
    """The UTC calendar day of ``at`` as ``"YYYY-MM-DD"`` (a naive ``at`` is taken to be UTC)."""
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.date().isoformat()


def _checked_day(day: str) -> str:
    try:
        ok = len(day) == 10 and date.fromisoformat(day).isoformat() == day
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise LedgerPermanentError(f'a digest day is a "YYYY-MM-DD" date, not {day!r}')
    return day


class DigestsMixin(LedgerBase):
    """``claim_digest``, ``finish_digest``, ``digest_send``."""

    def claim_digest(self, day: str) -> tuple[DigestSend, bool]:
        """Claim the sending of ``day``'s digest, unless it was sent or is being sent.

        The day's row is created in state ``sending``; a ``failed`` row is taken over (set to
        ``sending``). Of two runs claiming the same day at once, exactly one gets ``claimed``.

        Args:
            day: the UTC day the summary ends, ``"YYYY-MM-DD"`` (see ``digest_day``).

        Returns:
            ``(send, claimed)``: claimed is False when the row is ``sent`` or ``sending`` (it is
            returned unchanged, saying when and to whom it was sent).

        Raises:
            LedgerPermanentError: ``day`` is not a ``"YYYY-MM-DD"`` date.
        """
        _checked_day(day)

        def work(conn: sa.Connection) -> tuple[DigestSend, bool]:
            now = self._now()
            # RETURNING says whether this transaction wrote the row (psycopg's rowcount may be -1)
            claimed = conn.execute(
                self._insert(conn, digest_sends)
                .values(
                    day=day, state="sending", sent_to=[], error=None, created_at=now, updated_at=now
                )
                .on_conflict_do_nothing(index_elements=["day"])
                .returning(digest_sends.c.id)
            ).first()
            if claimed is None:
                # on PostgreSQL a concurrent take-over blocks here, then re-checks the WHERE
                claimed = conn.execute(
                    sa.update(digest_sends)
                    .where(digest_sends.c.day == day, digest_sends.c.state == "failed")
                    .values(state="sending", updated_at=now)
                    .returning(digest_sends.c.id)
                ).first()
            return self._digest(conn, day), claimed is not None

        return self._write(work)

    def finish_digest(
        self,
        day: str,
        state: DigestState,
        sent_to: list[str] | None = None,
        error: str | None = None,
    ) -> DigestSend:
        """Record what became of ``day``'s send: ``sent`` (to ``sent_to``) or ``failed`` (``error``).

        Args:
            day: the day claimed with ``claim_digest``.
            state: ``"sent"`` or ``"failed"``.
            sent_to: who it was sent to (stored as given; empty when None).
            error: why it failed: a short line without secrets (cut to 500 characters).

        Returns:
            The updated record.

        Raises:
            LedgerPermanentError: a state other than sent/failed, a malformed day, or a day never
                claimed.
        """
        _checked_day(day)
        if state not in FINISHED_STATES:
            raise LedgerPermanentError(
                f"a digest send finishes as one of {', '.join(FINISHED_STATES)}, not {state!r}"
            )
        values = {
            "state": state,
            "sent_to": list(sent_to or []),
            "error": None if error is None else error[:ERROR_MAX],
        }

        def work(conn: sa.Connection) -> DigestSend:
            conn.execute(
                sa.update(digest_sends)
                .where(digest_sends.c.day == day)
                .values(**values, updated_at=self._now())
            )
            return self._digest(conn, day)

        return self._write(work)

    def digest_send(self, day: str) -> DigestSend | None:
        """The record of ``day``'s digest, or None when no run claimed that day."""
        _checked_day(day)
        return self._read(lambda conn: self._digest_or_none(conn, day))

    def _digest_or_none(self, conn: sa.Connection, day: str) -> DigestSend | None:
        row = (
            conn.execute(sa.select(digest_sends).where(digest_sends.c.day == day))
            .mappings()
            .one_or_none()
        )
        return None if row is None else DigestSend.model_validate(dict(row))

    def _digest(self, conn: sa.Connection, day: str) -> DigestSend:
        send = self._digest_or_none(conn, day)
        if send is None:
            raise LedgerPermanentError(
                f"no digest send recorded for {day}; claim the day first (claim_digest)"
            )
        return send
