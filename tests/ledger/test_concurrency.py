"""Concurrent writers: the database, not read-then-write, keeps one open incident per key."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from runbook.ledger import Ledger, open_ledger
from runbook.ledger.engine import create_ledger_engine
from runbook.ledger.schema import alerts, incidents
from tests.conftest import drop_pg_database, make_pg_database
from tests.ledger.conftest import pg_url
from tests.ledger.helpers import hammer, make_alert

PROCESSES, CALLS, KEYS = 8, 500, 50


def totals(ledger: Ledger) -> tuple[int, int, int]:
    """(open incidents, stored alerts, sum of alert_count)."""
    with ledger.engine.connect() as conn:
        open_count = conn.execute(
            sa.select(sa.func.count()).where(incidents.c.open_key.is_not(None))
        ).scalar_one()
        stored = conn.execute(sa.select(sa.func.count()).select_from(alerts)).scalar_one()
        counted = conn.execute(sa.select(sa.func.sum(incidents.c.alert_count))).scalar_one()
    return int(open_count), int(stored), int(counted or 0)


@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_eight_processes_open_exactly_one_incident_per_key(pg_admin_dsn: str) -> None:
    """8 processes x 500 alerts over 50 keys on one fresh PostgreSQL give 50 incidents, 4,000 alerts."""
    name = make_pg_database("runbook_ledger")
    url = pg_url(name)
    try:
        context = multiprocessing.get_context("spawn")
        with context.Pool(PROCESSES) as pool:
            # the database is empty: the workers also race to migrate it on first use
            opened = pool.starmap(hammer, [(url, w, CALLS, KEYS) for w in range(PROCESSES)])
        assert sum(opened) == KEYS
        with open_ledger(url) as ledger:
            assert totals(ledger) == (KEYS, PROCESSES * CALLS, PROCESSES * CALLS)
            assert len(ledger.outbox_claim(limit=1000)) == KEYS
    finally:
        drop_pg_database(name)


@pytest.mark.timeout(60)
def test_four_threads_on_sqlite_open_exactly_one_incident_per_key(tmp_path: Path) -> None:
    """4 threads x 200 alerts over 20 keys, each with its own Ledger, give 20 incidents, 800 alerts."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with ThreadPoolExecutor(4) as pool:
        opened = list(pool.map(lambda w: hammer(url, w, 200, 20), range(4)))
    assert sum(opened) == 20
    with open_ledger(url) as ledger:
        assert totals(ledger) == (20, 800, 800)


@pytest.mark.timeout(60)
def test_a_connection_opened_while_another_writes_a_fresh_file_waits_then_uses_wal(
    tmp_path: Path,
) -> None:
    """Opening the ledger while another connection writes a not-yet-WAL file waits, then is WAL.

    SQLite refuses the switch to WAL at once ("database is locked", no busy wait) while another
    connection holds the write lock: four threads opening one fresh file failed this way at random.
    """
    path = tmp_path / "ledger.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("CREATE TABLE held (x)")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO held VALUES (1)")
    release = threading.Timer(0.3, lambda: writer.execute("COMMIT"))
    release.start()
    try:
        engine = create_ledger_engine(sa.make_url(f"sqlite:///{path}"))
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
            assert conn.exec_driver_sql("SELECT count(*) FROM held").scalar_one() == 1
        engine.dispose()
    finally:
        release.join()
        writer.close()


def race(threads: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in ``threads`` threads released at the same moment."""
    barrier = threading.Barrier(threads)

    def run(i: int) -> Any:
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(run, range(threads)))


@pytest.mark.timeout(30)
def test_racing_begin_action_creates_exactly_once(ledger: Ledger) -> None:
    """Six threads beginning the same action key: exactly one is told it created it."""
    incident = ledger.declare_incident("x", "P2")
    results = race(6, lambda _: ledger.begin_action(incident.id, "same-key", "page_oncall"))
    assert sum(created for _, created in results) == 1
    assert len({action.id for action, _ in results}) == 1


@pytest.mark.timeout(30)
def test_racing_dispatchers_never_claim_the_same_item(ledger: Ledger) -> None:
    """Four dispatchers claiming at once get disjoint items that together cover the queue."""
    queued = {ledger.outbox_enqueue("notify", {"n": n}).id for n in range(40)}
    claims = race(4, lambda _: [item.id for item in ledger.outbox_claim(limit=10)])
    claimed = [item_id for claim in claims for item_id in claim]
    assert len(claimed) == len(set(claimed)) == 40 and set(claimed) == queued


@pytest.mark.timeout(30)
def test_racing_transitions_apply_once(ledger: Ledger) -> None:
    """Five threads moving one incident detected -> triaging: one succeeds, one status event."""
    incident = ledger.declare_incident("x", "P2")

    def move(_: int) -> str:
        try:
            ledger.transition(incident.id, "triaging")
            return "moved"
        except Exception as error:  # noqa: BLE001 - the losers must fail with InvalidTransition
            return type(error).__name__

    results = race(5, move)
    assert sorted(results) == ["InvalidTransition"] * 4 + ["moved"]
    assert [e.kind for e in ledger.timeline(incident.id)].count("status") == 1


@pytest.mark.timeout(60)
def test_racing_batches_of_the_same_deliveries_store_each_once(ledger: Ledger) -> None:
    """Six writers sending the same 40 deliveries (a sender retrying while its first try commits)
    store each delivery once: one writer is told each one is new, every other that it is a
    duplicate, and the incidents count each alert once."""
    batch = [make_alert(f"d{n}", f"k{n % 5}") for n in range(40)]
    results = race(6, lambda _: ledger.record_alerts([a.model_copy(deep=True) for a in batch]))
    for position in range(40):
        outcomes = [result[position] for result in results]
        assert sum(not o.duplicate for o in outcomes) == 1
        assert len({o.alert_id for o in outcomes}) == 1
        assert len({o.incident_id for o in outcomes}) == 1
    assert totals(ledger) == (5, 40, 40)
    assert len(ledger.outbox_claim(limit=100)) == 5


@pytest.mark.timeout(60)
def test_sqlite_writers_of_one_process_take_turns_instead_of_meeting_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second thread's write waits for the first one's commit and then succeeds, even when
    SQLite's busy handler would give up at once (busy timeout 0): the writers of one process queue
    on the ledger's own turn, never on the database file's lock."""
    import runbook.ledger.engine as engine_module

    monkeypatch.setattr(engine_module, "BUSY_TIMEOUT_S", 0)
    ledger = open_ledger(f"sqlite:///{tmp_path / 'turns.db'}")
    incident = ledger.declare_incident("turns", "P2", service="web")  # type: ignore[arg-type]
    inside, release = threading.Event(), threading.Event()

    def slow_write(conn: sa.Connection) -> None:
        conn.execute(sa.update(incidents).values(title="held").where(incidents.c.id == incident.id))
        inside.set()
        assert release.wait(10), "the test never released the first write"

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(ledger._write, slow_write)
        assert inside.wait(10)
        second = pool.submit(ledger.add_event, incident.id, "note", "second writer")
        assert not second.done()  # queued behind the open write, not failed
        release.set()
        first.result(10)
        second.result(10)
    notes = [e.message for e in ledger.timeline(incident.id) if e.kind == "note"]
    assert notes == ["second writer"]
    assert ledger.get_incident(incident.id).title == "held"
