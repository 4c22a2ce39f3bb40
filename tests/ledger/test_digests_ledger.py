"""Digest sends in the ledger (SQLite and PostgreSQL): a day is claimed by one run only, a sent or
sending day is never claimed again, a failed day is taken over, and bad input changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from runbook.clock import ManualClock
from runbook.errors import LedgerPermanentError
from runbook.ledger import Ledger, open_ledger
from runbook.ledger.digests import digest_day, digest_sends
from tests.ledger.helpers import T0
from tests.ledger.test_concurrency import race

DAY = "2026-05-01"
TEAM = ["team@example.com", "sre@example.com"]


def test_claim_then_finish_sent_records_who_and_when(ledger: Ledger, clock: ManualClock) -> None:
    """The first claim of a day creates it 'sending' (claimed); finishing it 'sent' stores the
    recipients and the time it was sent, and digest_send reads back the same record."""
    assert ledger.digest_send(DAY) is None
    send, claimed = ledger.claim_digest(DAY)
    assert claimed and send.state == "sending" and send.sent_to == [] and send.created_at == T0
    clock.advance(30)
    done = ledger.finish_digest(DAY, "sent", TEAM)
    assert done.state == "sent" and done.sent_to == TEAM and done.error is None
    assert done.created_at == T0 and done.updated_at == T0 + timedelta(seconds=30)
    assert ledger.digest_send(DAY) == done


def test_a_sent_or_sending_day_is_not_claimed_again(ledger: Ledger, clock: ManualClock) -> None:
    """A claim of a day being sent, or sent, returns the row unchanged with claimed False; another
    day is claimed on its own."""
    ledger.claim_digest(DAY)
    clock.advance(5)
    sending, claimed = ledger.claim_digest(DAY)
    assert not claimed and sending.state == "sending" and sending.updated_at == T0
    sent = ledger.finish_digest(DAY, "sent", TEAM)
    clock.advance(5)
    again, claimed_again = ledger.claim_digest(DAY)
    assert not claimed_again and again == sent
    other, claimed_other = ledger.claim_digest("2026-05-02")
    assert claimed_other and other.state == "sending"


def test_a_failed_day_is_taken_over_and_then_sent(ledger: Ledger, clock: ManualClock) -> None:
    """A day finished 'failed' keeps its error; the next claim takes it over ('sending', claimed),
    and finishing it 'sent' clears the error. The day keeps one row throughout."""
    ledger.claim_digest(DAY)
    failed = ledger.finish_digest(DAY, "failed", error="SMTPDataError: (554, b'rejected')")
    assert failed.state == "failed" and failed.error == "SMTPDataError: (554, b'rejected')"
    clock.advance(60)
    retaken, claimed = ledger.claim_digest(DAY)
    assert claimed and retaken.state == "sending" and retaken.created_at == T0
    assert retaken.updated_at == T0 + timedelta(seconds=60)
    sent = ledger.finish_digest(DAY, "sent", TEAM)
    assert sent.state == "sent" and sent.error is None and sent.sent_to == TEAM
    with ledger.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(digest_sends)).scalar_one() == 1


def test_bad_input_is_refused_and_changes_nothing(ledger: Ledger) -> None:
    """A malformed day, a finish state other than sent/failed, or finishing a day never claimed fails
    with a message saying what is wrong, and leaves no row; a long error is cut to 500 characters."""
    for bad in ("2026-5-1", "01/05/2026", "2026-02-30", ""):
        with pytest.raises(LedgerPermanentError, match="YYYY-MM-DD"):
            ledger.claim_digest(bad)
    with pytest.raises(LedgerPermanentError, match="claim the day first"):
        ledger.finish_digest(DAY, "sent", TEAM)
    assert ledger.digest_send(DAY) is None
    ledger.claim_digest(DAY)
    with pytest.raises(LedgerPermanentError, match="one of sent, failed"):
        ledger.finish_digest(DAY, "sending")  # type: ignore[arg-type]
    assert len(ledger.finish_digest(DAY, "failed", error="x" * 2000).error or "") == 500


def test_the_state_check_constraint_holds_in_the_database(ledger: Ledger) -> None:
    """The database itself refuses a state outside sending/sent/failed and a second row per day."""
    now = datetime(2026, 5, 1, tzinfo=UTC)
    row = {"day": DAY, "sent_to": [], "created_at": now, "updated_at": now}
    with pytest.raises(sa.exc.IntegrityError), ledger.engine.begin() as conn:
        conn.execute(sa.insert(digest_sends).values(state="queued", **row))
    with ledger.engine.begin() as conn:
        conn.execute(sa.insert(digest_sends).values(state="sent", **row))
    with pytest.raises(sa.exc.IntegrityError), ledger.engine.begin() as conn:
        conn.execute(sa.insert(digest_sends).values(state="sending", **row))


@pytest.mark.timeout(60)
def test_racing_runs_claim_a_day_exactly_once(ledger: Ledger) -> None:
    """Six ledgers (own engines, as six processes have) claiming one new day at once: exactly one is
    told it claimed it; after it failed, six racing take-overs again give exactly one."""
    url = ledger.url.render_as_string(hide_password=False)
    others = [open_ledger(url) for _ in range(6)]
    try:
        first = race(6, lambda i: others[i].claim_digest(DAY)[1])
        assert sorted(first) == [False] * 5 + [True]
        ledger.finish_digest(DAY, "failed", error="boom")
        second = race(6, lambda i: others[i].claim_digest(DAY)[1])
        assert sorted(second) == [False] * 5 + [True]
        send = ledger.digest_send(DAY)
        assert send is not None and send.state == "sending"
    finally:
        for other in others:
            other.close()


def test_digest_day_is_the_utc_calendar_date() -> None:
    """The day of a time is its UTC date: 01:30 at UTC+2 is the day before; naive times are UTC."""
    assert digest_day(datetime(2026, 5, 2, 1, 30, tzinfo=timezone(timedelta(hours=2)))) == DAY
    assert digest_day(datetime(2026, 5, 1, 23, 59)) == DAY
    assert digest_day(T0) == DAY
