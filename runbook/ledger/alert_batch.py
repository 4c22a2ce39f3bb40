"""The set-based path of ``Ledger.record_alerts``: a few statements per batch, not per alert.

Inside the caller's one transaction:

1. the batch's alerts are stored, skipping each ``(source, delivery_id)`` already stored: a
   redelivery (or a second copy inside the batch) is a duplicate and changes nothing. SQLite
   inserts them here (``ON CONFLICT DO NOTHING RETURNING``); PostgreSQL only looks the pairs up
   and reserves ids, and inserts the new alerts already linked in step 4;
2. one SELECT of the open incidents of the batch's dedup keys, in key order, ``FOR UPDATE`` on
   PostgreSQL so none of them closes before we commit (SQLite's ``BEGIN IMMEDIATE`` already
   serialises writers); on PostgreSQL 1 and 2 are one statement;
3. one INSERT of the new incidents ``ON CONFLICT (open_key) DO NOTHING RETURNING``; a key that a
   concurrent writer opened in between attaches to the winner's incident through the per-key
   update-or-insert loop, so the UNIQUE ``open_key`` keeps one open incident per key whatever the
   interleaving;
4. the attached incidents' alert counts, the new incidents' ``launch_incident`` outbox rows, the
   alert -> incident links and the timeline (one statement on PostgreSQL, executemany on SQLite).

The statements are each dialect's own SQL on the raw driver (``runbook.ledger.alert_sql``).
Within one key the alerts count in the order given: the first firing alert opens the incident when
none is open and the later ones attach; a resolved alert attaches to an open (or just opened)
incident and never opens one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from runbook.errors import LedgerUnavailableError
from runbook.ledger.alert_sql import INCIDENT_COLUMNS, BatchSQL, Finish, batch_sql
from runbook.ledger.records import AlertIntake, AlertOutcome
from runbook.ledger.schema import UTCDateTime, incidents
from runbook.models import Alert, AlertStatus, IncidentStatus

LAUNCH_INCIDENT = "launch_incident"
# a key's incident can open and close under us between two statements; more than a few rounds of
# that means something is badly wrong
OPEN_OR_ATTACH_ROUNDS = 10


# the per-key update-or-insert of a lost race (rare, so SQLAlchemy Core is fine there)
_ATTACH_BY_KEY = (
    sa.update(incidents)
    .where(incidents.c.open_key == sa.bindparam("b_key"))
    .values(
        alert_count=incidents.c.alert_count + sa.bindparam("b_n"),
        updated_at=sa.bindparam("b_now", type_=UTCDateTime()),
    )
    .returning(incidents.c.id)
)
_INSERT_INCIDENT = {
    name: insert(incidents)
    .on_conflict_do_nothing(index_elements=["open_key"])
    .returning(incidents.c.id)
    for name, insert in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
}


@dataclass
class _Key:
    """What the batch does to one dedup key."""

    incident_id: int | None = None  # the open incident (found, or opened by this batch)
    opener: int | None = None  # index of the alert that opens a new incident
    firing: int = 0  # firing alerts that count on the incident
    members: list[int] = field(default_factory=list)  # indexes of the key's new alerts, in order
    counted: bool = False  # its firing alerts are counted on the incident already


def record_batch(
    conn: sa.Connection,
    intakes: Sequence[AlertIntake],
    now: datetime,
    *,
    scenario: str | None = None,
    actor: str | None = None,
) -> list[AlertOutcome]:
    """Record ``intakes`` inside the transaction of ``conn``; one outcome per intake, in order.

    Args:
        conn: a connection inside a write transaction.
        intakes: the alerts (with what to use if one opens an incident).
        now: the transaction's time (received_at default, incident and timeline stamps).
        scenario: the scenario of any incident this opens (declarations).
        actor: the timeline actor (default: each alert's source).

    Returns:
        One AlertOutcome per intake, in the order given.

    Raises:
        LedgerUnavailableError: a key's incident kept opening and closing under concurrent writers.
    """
    sql = batch_sql(conn)
    first: dict[tuple[str, str], int] = {}  # (source, delivery id) -> first index in the batch
    copies: list[int] = []
    for index, intake in enumerate(intakes):
        alert = intake.alert
        if first.setdefault((alert.source, alert.delivery_id), index) != index:
            copies.append(index)
    rows = [_alert_row(sql, intakes[i].alert, now) for i in first.values()]
    # the open incidents of every key in the batch (a duplicate's key too: harmless)
    inserted, found = sql.store(rows, list({intakes[i].alert.dedup_key for i in first.values()}))
    stored = {(source, delivery): ident for ident, source, delivery in inserted}
    outcomes: dict[int, AlertOutcome] = {}
    if len(stored) < len(first):
        missing = sorted({d for s, d in first if (s, d) not in stored})
        for ident, incident_id, source, delivery in sql.delivered(missing):
            earlier = first.get((source, delivery))
            if earlier is not None and (source, delivery) not in stored:
                outcomes[earlier] = AlertOutcome(
                    alert_id=ident, incident_id=incident_id, duplicate=True
                )
    alert_ids: dict[int, int] = {}
    keys: dict[str, _Key] = {}
    for pair, index in first.items():
        if pair in stored:
            alert_ids[index] = stored[pair]
            keys.setdefault(intakes[index].alert.dedup_key, _Key()).members.append(index)
    if keys:
        for ident, open_key in found:
            if open_key in keys:
                keys[open_key].incident_id = ident
        done = Finish(now)
        _open_or_attach(conn, sql, keys, intakes, scenario, done)
        _link_and_log(sql, keys, intakes, alert_ids, actor, outcomes, done)
        sql.finish(done)
    for index in copies:
        alert = intakes[index].alert
        original = outcomes[first[(alert.source, alert.delivery_id)]]
        outcomes[index] = AlertOutcome(
            alert_id=original.alert_id, incident_id=original.incident_id, duplicate=True
        )
    return [outcomes[i] for i in range(len(intakes))]


def _open_or_attach(
    conn: sa.Connection,
    sql: BatchSQL,
    keys: dict[str, _Key],
    intakes: Sequence[AlertIntake],
    scenario: str | None,
    done: Finish,
) -> None:
    """Open the incidents of keys with none open; count firing alerts on the others."""
    now = done.now
    for state in keys.values():
        for index in state.members:
            if intakes[index].alert.status == AlertStatus.FIRING:
                state.firing += 1
                if state.incident_id is None and state.opener is None:
                    state.opener = index
    new = {key: s for key, s in sorted(keys.items()) if s.opener is not None}
    if new:
        rows = [
            _new_incident(intakes[s.opener], now, scenario, s.firing)
            for s in new.values()
            if s.opener is not None
        ]
        stamp = sql.time(now)
        tuples = [
            tuple(stamp if c in ("detected_at", "updated_at") else r[c] for c in INCIDENT_COLUMNS)
            for r in rows
        ]
        opened: list[_Key] = []
        for ident, open_key in sql.insert_incidents(tuples):
            won = new.pop(open_key)
            won.incident_id, won.counted = ident, True
            opened.append(won)
        for key, lost in new.items():
            # a concurrent writer opened this key between our SELECT and INSERT: join its incident
            lost.incident_id, won_it = _attach_or_open(conn, key, lost, intakes, now, scenario)
            lost.counted = True
            if won_it:
                opened.append(lost)
            else:
                lost.opener = None
        done.launches = [
            (LAUNCH_INCIDENT, s.incident_id, sql.json({"incident_id": s.incident_id}), stamp,
             stamp, 0)
            for s in opened
        ]  # fmt: skip
    done.counts = [
        (s.incident_id, s.firing)
        for s in keys.values()
        if s.incident_id is not None and not s.counted
    ]


def _attach_or_open(
    conn: sa.Connection,
    key: str,
    state: _Key,
    intakes: Sequence[AlertIntake],
    now: datetime,
    scenario: str | None,
) -> tuple[int, bool]:
    """The per-key loop for a lost race: (incident id, True when this batch opened it)."""
    assert state.opener is not None  # noqa: S101 - only keys with an opener get here
    for _ in range(OPEN_OR_ATTACH_ROUNDS):
        attached = conn.execute(
            _ATTACH_BY_KEY, {"b_key": key, "b_n": state.firing, "b_now": now}
        ).scalar_one_or_none()
        if attached is not None:
            return attached, False
        opened = conn.execute(
            _INSERT_INCIDENT[conn.dialect.name],
            _new_incident(intakes[state.opener], now, scenario, state.firing),
        ).scalar_one_or_none()
        if opened is not None:
            return opened, True
    raise LedgerUnavailableError(
        f"could not open or attach an incident for dedup key {key!r}: it kept changing "
        "under concurrent writers; retry the delivery"
    )


def _link_and_log(
    sql: BatchSQL,
    keys: dict[str, _Key],
    intakes: Sequence[AlertIntake],
    alert_ids: dict[int, int],
    actor: str | None,
    outcomes: dict[int, AlertOutcome],
    done: Finish,
) -> None:
    """Link each new alert to its incident, write its timeline event and its outcome."""
    links = done.links
    events = done.events
    stamp = sql.time(done.now)
    for state in keys.values():
        incident_id = state.incident_id
        # alerts before the opener (resolved ones) found no open incident
        open_from = state.members.index(state.opener) if state.opener is not None else 0
        for position, index in enumerate(state.members):
            alert = intakes[index].alert
            alert_id = alert_ids[index]
            if incident_id is None or position < open_from:
                outcomes[index] = AlertOutcome(alert_id=alert_id)
                continue
            links.append((alert_id, incident_id))
            what = alert.summary or alert.dedup_key
            opened = index == state.opener
            if alert.status == AlertStatus.RESOLVED:
                kind, message = "alert_resolved", f"{alert.source} reports resolved: {what}"
            elif opened:
                kind, message = "alert", f"incident opened by {alert.source} alert: {what}"
            else:
                kind, message = "alert", f"{alert.source} alert attached: {what}"
            data = {"alert_id": alert_id, "source": alert.source, "delivery_id": alert.delivery_id}
            events.append(
                (incident_id, stamp, kind, None, message, actor or alert.source, sql.json(data))
            )
            outcomes[index] = AlertOutcome(
                alert_id=alert_id, incident_id=incident_id, opened=opened, attached=not opened
            )


def _alert_row(sql: BatchSQL, alert: Alert, now: datetime) -> tuple[Any, ...]:
    # in ALERT_COLUMNS order; str() of the enums gives their values and passes any odd value on
    # for the database to refuse
    time, json = sql.time, sql.json
    hint = alert.severity_hint
    return (
        alert.source, alert.delivery_id, alert.fingerprint, alert.dedup_key, str(alert.status),
        alert.summary, json(alert.labels), json(alert.annotations), time(alert.started_at),
        time(alert.ended_at), None if hint is None else str(hint), alert.service,
        json(alert.links), time(alert.received_at or now), sql.blob(alert.raw_body),
    )  # fmt: skip


def _new_incident(
    intake: AlertIntake, now: datetime, scenario: str | None, alert_count: int
) -> dict[str, Any]:
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
        "alert_count": alert_count,
        "escalation_level": 0,
    }
