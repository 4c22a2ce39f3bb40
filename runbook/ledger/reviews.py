"""Post-incident reviews in the ledger: ticked checklist items and the scheduled review runs.

Two tables (migration 0003), on the ledger's one metadata:

- ``review_items``: one row per checklist item ticked off for an incident (review key, item key, when,
  by whom). An item without a row is open; ticking twice keeps the first tick.
- ``review_runs``: one row per review of an incident whose Prefect run was scheduled (its flow-run id,
  when it is due, and what became of it). The row is what keeps a re-resolved incident from getting
  its reminders twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict

from runbook.errors import LedgerPermanentError
from runbook.ledger.base import LedgerBase
from runbook.ledger.schema import ID, UTCDateTime, in_values, metadata

REVIEW_RUN_STATES = ("scheduled", "reminded", "quiet", "cancelled")
ReviewRunState = Literal["scheduled", "reminded", "quiet", "cancelled"]

review_items = sa.Table(
    "review_items",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("incident_id", ID, sa.ForeignKey("incidents.id"), nullable=False),
    sa.Column("review_key", sa.String(50), nullable=False),
    sa.Column("item_key", sa.String(100), nullable=False),
    sa.Column("done_at", UTCDateTime, nullable=False),
    sa.Column("done_by", sa.String(200), nullable=False, server_default=""),
    sa.UniqueConstraint("incident_id", "review_key", "item_key"),
)

review_runs = sa.Table(
    "review_runs",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("incident_id", ID, sa.ForeignKey("incidents.id"), nullable=False),
    sa.Column("review_key", sa.String(50), nullable=False),
    sa.Column("scheduled_for", UTCDateTime, nullable=False),
    sa.Column("flow_run_id", sa.String(64), nullable=True),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("incident_id", "review_key"),
    sa.CheckConstraint(in_values("state", REVIEW_RUN_STATES), name="state"),
)


class ReviewItem(BaseModel):
    """A checklist item ticked off."""

    model_config = ConfigDict(extra="ignore")

    incident_id: int
    review_key: str
    item_key: str
    done_at: datetime
    done_by: str = ""


class ReviewRun(BaseModel):
    """A review run scheduled in Prefect for an incident."""

    model_config = ConfigDict(extra="ignore")

    incident_id: int
    review_key: str
    scheduled_for: datetime
    flow_run_id: str | None = None
    state: ReviewRunState = "scheduled"
    created_at: datetime | None = None


class ReviewsMixin(LedgerBase):
    """``tick_review_items``, ``review_items_done``, ``record_review_run``, ``review_runs``."""

    def tick_review_items(
        self, incident_id: int, pairs: Iterable[tuple[str, str]], by: str = ""
    ) -> list[ReviewItem]:
        """Mark checklist items done; an item done already keeps its first tick.

        Args:
            incident_id: the incident.
            pairs: ``(review key, item key)`` pairs, checked against the policy by the caller.
            by: who ticked them.

        Returns:
            Every item of the incident that is done now.

        Raises:
            LedgerPermanentError: no such incident.
        """
        wanted = list(dict.fromkeys(pairs))

        def work(conn: sa.Connection) -> list[ReviewItem]:
            self._incident_row(conn, incident_id)
            now = self._now()
            for review_key, item_key in wanted:
                conn.execute(
                    self._insert(conn, review_items)
                    .values(
                        incident_id=incident_id,
                        review_key=review_key,
                        item_key=item_key,
                        done_at=now,
                        done_by=by,
                    )  # fmt: skip
                    .on_conflict_do_nothing(
                        index_elements=["incident_id", "review_key", "item_key"]
                    )
                )
            return self._done(conn, incident_id)

        return self._write(work)

    def review_items_done(self, incident_id: int) -> list[ReviewItem]:
        """The incident's ticked checklist items, in the order they were ticked."""
        return self._read(lambda conn: self._done(conn, incident_id))

    def _done(self, conn: sa.Connection, incident_id: int) -> list[ReviewItem]:
        query = (
            sa.select(review_items)
            .where(review_items.c.incident_id == incident_id)
            .order_by(review_items.c.done_at, review_items.c.id)
        )
        return [ReviewItem.model_validate(dict(r)) for r in conn.execute(query).mappings()]

    def record_review_run(
        self,
        incident_id: int,
        review_key: str,
        scheduled_for: datetime,
        flow_run_id: str | None,
    ) -> tuple[ReviewRun, bool]:
        """Remember that the incident's ``review_key`` run is scheduled, unless it is already.

        Returns:
            ``(run, created)``: created is False when a run of that review was recorded before (the
            earlier one is returned, unchanged).

        Raises:
            LedgerPermanentError: no such incident.
        """

        def work(conn: sa.Connection) -> tuple[ReviewRun, bool]:
            self._incident_row(conn, incident_id)
            now = self._now()
            row = (
                conn.execute(
                    self._insert(conn, review_runs)
                    .values(
                        incident_id=incident_id,
                        review_key=review_key,
                        scheduled_for=scheduled_for,
                        flow_run_id=flow_run_id,
                        state="scheduled",
                        created_at=now,
                        updated_at=now,
                    )  # fmt: skip
                    .on_conflict_do_nothing(index_elements=["incident_id", "review_key"])
                    .returning(*review_runs.c)
                )
                .mappings()
                .one_or_none()
            )
            if row is not None:
                return ReviewRun.model_validate(dict(row)), True
            return self._run(conn, incident_id, review_key), False

        return self._write(work)

    def set_review_run_state(
        self, incident_id: int, review_key: str, state: ReviewRunState
    ) -> ReviewRun:
        """Record what became of a scheduled review run (reminded, quiet, cancelled).

        Raises:
            LedgerPermanentError: no run of that review was recorded for the incident.
        """
        if state not in REVIEW_RUN_STATES:
            raise LedgerPermanentError(
                f"review run state must be one of {', '.join(REVIEW_RUN_STATES)}, not {state!r}"
            )

        def work(conn: sa.Connection) -> ReviewRun:
            conn.execute(
                sa.update(review_runs)
                .where(
                    review_runs.c.incident_id == incident_id,
                    review_runs.c.review_key == review_key,
                )
                .values(state=state, updated_at=self._now())
            )
            return self._run(conn, incident_id, review_key)

        return self._write(work)

    def review_runs(self, incident_id: int) -> list[ReviewRun]:
        """The incident's scheduled review runs, earliest due first."""
        query = (
            sa.select(review_runs)
            .where(review_runs.c.incident_id == incident_id)
            .order_by(review_runs.c.scheduled_for, review_runs.c.id)
        )
        return self._read(
            lambda conn: [ReviewRun.model_validate(dict(r)) for r in conn.execute(query).mappings()]
        )

    def _run(self, conn: sa.Connection, incident_id: int, review_key: str) -> ReviewRun:
        row = (
            conn.execute(
                sa.select(review_runs).where(
                    review_runs.c.incident_id == incident_id,
                    review_runs.c.review_key == review_key,
                )
            )
            .mappings()
            .one_or_none()
        )
        if row is None:
            raise LedgerPermanentError(
                f"no {review_key} review run recorded for INC-{incident_id}; "
                "schedule the reviews first (flows.reviews.schedule_reviews)"
            )
        return ReviewRun.model_validate(dict(row))


def done_pairs(items: Iterable[ReviewItem]) -> set[tuple[str, str]]:
    """``(review key, item key)`` of ticked items, as runbook.reviews expects them."""
    return {(i.review_key, i.item_key) for i in items}
