"""Actions recorded under idempotency keys, and follow-up action items."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from runbook.errors import LedgerPermanentError
from runbook.ledger.base import LedgerBase
from runbook.ledger.records import to_action, to_action_item
from runbook.ledger.schema import action_items, actions
from runbook.models import Action, ActionItem, ActionItemStatus, ActionStatus

FINAL_STATUSES = (ActionStatus.APPLIED, ActionStatus.FAILED, ActionStatus.SKIPPED)


class ActionsMixin(LedgerBase):
    """Actions (side effects, exactly once) and action items (follow-ups)."""

    def begin_action(
        self,
        incident_id: int,
        idempotency_key: str,
        kind: str,
        target: str = "",
        plan: dict[str, Any] | None = None,
        actor: str = "runbook",
    ) -> tuple[Action, bool]:
        """Record an action as planned, or get the one already recorded under this key.

        Call it before doing the side effect: when it returns ``created=False`` a previous try got
        here first; look at the returned action's status before doing anything again.

        Args:
            incident_id: the incident the action serves.
            idempotency_key: unique per side effect (e.g. ``"INC-7:rollback:dpl_123"``).
            kind: rollback_deployment, page_oncall, create_ticket, post_message, ...
            target: what it acts on.
            plan: exactly what would change (the dry run).
            actor: who or what runs it.

        Returns:
            ``(action, created)``: created is True only for the call that inserted it.

        Raises:
            LedgerPermanentError: no such incident.
        """

        def work(conn: sa.Connection) -> tuple[Action, bool]:
            self._incident_row(conn, incident_id)
            now = self._now()
            row = (
                conn.execute(
                    self._insert(conn, actions)
                    .values(
                        incident_id=incident_id,
                        idempotency_key=idempotency_key,
                        kind=kind,
                        target=target,
                        status=ActionStatus.PLANNED.value,
                        plan=plan or {},
                        result={},
                        actor=actor,
                        created_at=now,
                        updated_at=now,
                    )  # fmt: skip
                    .on_conflict_do_nothing(index_elements=["idempotency_key"])
                    .returning(*actions.c)
                )
                .mappings()
                .one_or_none()
            )
            if row is not None:
                return to_action(row), True
            return to_action(self._action_row(conn, idempotency_key)), False

        return self._write(work)

    def finish_action(
        self,
        idempotency_key: str,
        status: ActionStatus | str,
        result: dict[str, Any] | None = None,
    ) -> Action:
        """Record how an action ended.

        Args:
            idempotency_key: the key given to ``begin_action``.
            status: applied, failed or skipped.
            result: what happened (ids, URLs, the error); kept as is when None.

        Returns:
            The action after the update.

        Raises:
            LedgerPermanentError: no action with that key, or status is not a final one.
        """
        final = ActionStatus(status)
        if final not in FINAL_STATUSES:
            raise LedgerPermanentError(
                f"finish_action needs applied, failed or skipped, not {final.value!r}"
            )
        values: dict[str, Any] = {"status": final.value}
        if result is not None:
            values["result"] = result

        def work(conn: sa.Connection) -> Action:
            row = (
                conn.execute(
                    sa.update(actions)
                    .where(actions.c.idempotency_key == idempotency_key)
                    .values(**values, updated_at=self._now())
                    .returning(*actions.c)
                )
                .mappings()
                .one_or_none()
            )
            if row is None:
                raise self._no_action(idempotency_key)
            return to_action(row)

        return self._write(work)

    def get_action(self, idempotency_key: str) -> Action | None:
        """The action recorded under this key, or None."""

        def work(conn: sa.Connection) -> Action | None:
            row = (
                conn.execute(sa.select(actions).where(actions.c.idempotency_key == idempotency_key))
                .mappings()
                .one_or_none()
            )
            return to_action(row) if row is not None else None

        return self._read(work)

    def actions_for(self, incident_id: int) -> list[Action]:
        """The incident's actions, oldest first."""
        query = (
            sa.select(actions)
            .where(actions.c.incident_id == incident_id)
            .order_by(actions.c.created_at, actions.c.id)
        )
        return self._read(lambda conn: [to_action(r) for r in conn.execute(query).mappings()])

    def recent_actions(
        self, kind: str, target: str, since: datetime, *, statuses: Sequence[ActionStatus] = ()
    ) -> list[Action]:
        """Actions of ``kind`` on ``target`` updated since ``since``, across every incident, newest
        first (rate limits per action and target read this). ``statuses`` narrows them."""
        query = sa.select(actions).where(
            actions.c.kind == kind, actions.c.target == target, actions.c.updated_at >= since
        )
        if statuses:
            query = query.where(actions.c.status.in_([s.value for s in statuses]))
        query = query.order_by(actions.c.updated_at.desc(), actions.c.id.desc())
        return self._read(lambda conn: [to_action(r) for r in conn.execute(query).mappings()])

    def _action_row(self, conn: sa.Connection, idempotency_key: str) -> sa.RowMapping:
        row = (
            conn.execute(sa.select(actions).where(actions.c.idempotency_key == idempotency_key))
            .mappings()
            .one_or_none()
        )
        if row is None:
            raise self._no_action(idempotency_key)
        return row

    @staticmethod
    def _no_action(idempotency_key: str) -> LedgerPermanentError:
        return LedgerPermanentError(
            f"no action with idempotency key {idempotency_key!r} in the ledger; "
            "record it with begin_action before finishing it"
        )

    # --- action items -------------------------------------------------------------------------

    def add_action_item(
        self,
        incident_id: int,
        title: str,
        owner: str = "",
        due_at: datetime | None = None,
        source: str = "rca",
    ) -> ActionItem:
        """Add a follow-up task to an incident.

        Args:
            incident_id: the incident it came from.
            title: what to do.
            owner: who does it.
            due_at: by when.
            source: rca, review, ...

        Returns:
            The stored item, status open.

        Raises:
            LedgerPermanentError: no such incident.
        """

        def work(conn: sa.Connection) -> ActionItem:
            self._incident_row(conn, incident_id)
            now = self._now()
            row = (
                conn.execute(
                    sa.insert(action_items)
                    .values(
                        incident_id=incident_id,
                        title=title,
                        owner=owner,
                        due_at=due_at,
                        status=ActionItemStatus.OPEN.value,
                        source=source,
                        created_at=now,
                        updated_at=now,
                    )  # fmt: skip
                    .returning(*action_items.c)
                )
                .mappings()
                .one()
            )
            return to_action_item(row)

        return self._write(work)

    def update_action_item(
        self,
        item_id: int,
        *,
        status: ActionItemStatus | str | None = None,
        owner: str | None = None,
        due_at: datetime | None = None,
    ) -> ActionItem:
        """Change an action item's status, owner or due time (None leaves a field as is).

        Raises:
            LedgerPermanentError: no such item.
        """
        values: dict[str, Any] = {}
        if status is not None:
            values["status"] = ActionItemStatus(status).value
        if owner is not None:
            values["owner"] = owner
        if due_at is not None:
            values["due_at"] = due_at

        def work(conn: sa.Connection) -> ActionItem:
            row = (
                conn.execute(
                    sa.update(action_items)
                    .where(action_items.c.id == item_id)
                    .values(**values, updated_at=self._now())
                    .returning(*action_items.c)
                )
                .mappings()
                .one_or_none()
            )
            if row is None:
                raise LedgerPermanentError(
                    f"no action item {item_id} in the ledger; list them with action_items()"
                )
            return to_action_item(row)

        return self._write(work)

    def action_items(
        self, incident_id: int | None = None, *, open_only: bool = False
    ) -> list[ActionItem]:
        """Action items, of one incident or all, ordered by due time (undated last), then id.

        Args:
            incident_id: only this incident's items.
            open_only: only items not done.

        Returns:
            The items.
        """
        query = sa.select(action_items).order_by(
            action_items.c.due_at.is_(None), action_items.c.due_at, action_items.c.id
        )
        if incident_id is not None:
            query = query.where(action_items.c.incident_id == incident_id)
        if open_only:
            query = query.where(action_items.c.status != ActionItemStatus.DONE.value)
        return self._read(lambda conn: [to_action_item(r) for r in conn.execute(query).mappings()])
