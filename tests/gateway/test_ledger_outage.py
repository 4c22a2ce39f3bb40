"""The ledger's PostgreSQL dies during an alert storm: 503 while it is down, no acknowledged alert lost.

The database is a private throwaway cluster (initdb + pg_ctl on a free port under /tmp, run as the
``postgres`` user when the tests run as root), never the shared server on 5432: the test stops it
with ``pg_ctl stop -m immediate``, which is a crash (no shutdown checkpoint; WAL replay on restart).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from runbook.gateway import GatewayConfig, create_app
from runbook.ledger import open_ledger
from runbook.models import AlertStatus
from tests.conftest import require_service
from tests.gateway import payloads as p
from tests.gateway.conftest import TOKEN

PG_BIN = Path("/usr/lib/postgresql/15/bin")
KEYS = 20


def _as_postgres(*command: str) -> list[str]:
    """The command as the postgres user (initdb refuses root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return list(command)


class Cluster:
    """A private PostgreSQL cluster in ``root`` on ``port``."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.data = root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(  # noqa: S603 - fixed binaries, our own arguments
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", *args),
            check=True, capture_output=True, timeout=90,
        )  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=on"
        self._ctl("-o", options, "-l", str(self.root / "log"), "start")

    def crash(self) -> None:
        self._ctl("-m", "immediate", "stop")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A fresh private cluster, running; stopped and deleted afterwards."""
    if not (PG_BIN / "initdb").exists():
        require_service("PostgreSQL 15 binaries", f"no {PG_BIN / 'initdb'}")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        require_service("runuser", "needed to run initdb as postgres")
    root = Path(tempfile.mkdtemp(prefix="runbook-outage-", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    from runbook.ports import free_port

    node = Cluster(root, free_port())
    subprocess.run(  # noqa: S603
        _as_postgres(str(PG_BIN / "initdb"), "-D", str(node.data), "-A", "trust", "-U", "postgres",
                     "--no-sync"),
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    node.start()
    try:
        yield node
    finally:
        subprocess.run(  # noqa: S603
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(node.data), "-m", "immediate", "stop"),
            capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.timeout(120)
async def test_killing_the_ledger_database_loses_no_acknowledged_alert(cluster: Cluster) -> None:
    """During a storm the database crashes and comes back: while it is down the gateway answers
    503 (never 500), and afterwards every alert that got a 2xx is in the ledger, with one open
    incident per key."""
    run = uuid.uuid4().hex[:6]
    results: list[tuple[str, int]] = []
    stop = asyncio.Event()
    with open_ledger(cluster.url) as ledger:
        app = create_app(ledger, GatewayConfig.from_env({"RUNBOOK_GATEWAY_TOKEN": TOKEN}))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:

            async def storm(worker: int) -> None:
                n = 0
                while not stop.is_set():
                    delivery = f"{run}-{worker}-{n}-k{(worker + n) % KEYS}"
                    body = p.generic(key=delivery.rsplit("-", 1)[1], delivery_id=delivery)
                    response = await client.post("/hooks/generic", content=body,
                                                 headers=p.bearer())  # fmt: skip
                    results.append((delivery, response.status_code))
                    n += 1
                    await asyncio.sleep(0.002)

            async def until(what: str, done: Callable[[], bool], at_least_s: float) -> None:
                # at least ``at_least_s``, and until ``done``: a slow machine answers late
                await asyncio.sleep(at_least_s)
                deadline = time.monotonic() + 60
                while not done():
                    assert time.monotonic() < deadline, f"no {what} in 60 s"
                    await asyncio.sleep(0.05)

            workers = [asyncio.create_task(storm(w)) for w in range(8)]
            await until("answer before the crash", lambda: len(results) >= 20, 0.5)
            before_crash = len(results)
            await asyncio.to_thread(cluster.crash)
            crashed_at = len(results)
            await until(
                "503 while down", lambda: any(c == 503 for _, c in results[crashed_at:]), 0.5
            )
            down = results[crashed_at:]
            await asyncio.to_thread(cluster.start)
            restarted_at = len(results)
            await until(
                "2xx after the restart",
                lambda: any(c == 202 for _, c in results[restarted_at:]),
                1.0,
            )
            stop.set()
            await asyncio.gather(*workers)
            await app.state.gateway.stop()

        statuses = {code for _, code in results}
        assert statuses <= {202, 503}, f"unexpected answers: {statuses}"
        assert before_crash > 0 and {c for _, c in results[:before_crash]} == {202}
        assert down and {c for _, c in down} == {503}
        assert any(c == 202 for _, c in results[restarted_at:]), "no 2xx after the restart"
        acknowledged = {d for d, code in results if code == 202}
        stored = {
            a.delivery_id
            for incident in ledger.list_incidents()
            for a in ledger.alerts_for(incident.id)
            if a.status == AlertStatus.FIRING
        }
        assert acknowledged <= stored, f"{len(acknowledged - stored)} acknowledged alerts lost"
        open_keys = [i.dedup_key for i in ledger.list_incidents() if i.is_open]
        assert len(open_keys) == len(set(open_keys))
        assert set(open_keys) == {f"generic:{d.rsplit('-', 1)[1]}" for d in acknowledged}
