"""`runbook gateway --workers 2` on a PostgreSQL ledger: two processes on one port store every alert
once, open one incident per key, see a key flapping across workers, sum their metrics whichever
answers, and stop cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from runbook.bench.ingest_load import wait_ready
from runbook.errors import ConfigError
from runbook.gateway import GatewayConfig
from runbook.gateway.workers import start_pool
from runbook.ledger import open_ledger
from runbook.ports import free_port
from tests.conftest import drop_pg_database, make_pg_database
from tests.gateway import payloads as p
from tests.gateway.conftest import TOKEN
from tests.ledger.conftest import pg_url

KEYS, PER_KEY = 20, 15


@pytest.fixture
def workers_gateway(
    pg_admin_dsn: str, tmp_path: Path
) -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    """(base URL, ledger URL, the supervisor process) of `runbook gateway --workers 2 --no-prefect`."""
    name = make_pg_database("runbook_gw_workers")
    url = pg_url(name)
    port = free_port()
    env = {**os.environ, "RUNBOOK_LEDGER_URL": url, "RUNBOOK_GATEWAY_TOKEN": TOKEN,
           "RUNBOOK_HOME": str(tmp_path)}  # fmt: skip
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runbook.cli", "gateway", "--workers", "2", "--no-prefect",
             "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_ready("127.0.0.1", port, "/healthz", timeout=60)
        except RuntimeError:
            pytest.fail(f"the gateway did not come up:\n{log.read_text()[-3000:]}")
        yield base, url, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the supervisor and its workers
            proc.wait(10)
        drop_pg_database(name)


async def _post_all(base: str, bodies: list[bytes]) -> list[int]:
    """POST every body to /hooks/generic, 16 at a time, each on a fresh connection."""
    gate = asyncio.Semaphore(16)

    async def one(body: bytes) -> int:
        async with gate, httpx.AsyncClient(base_url=base, timeout=30) as client:
            return (
                await client.post("/hooks/generic", content=body, headers=p.bearer())
            ).status_code

    return await asyncio.gather(*(one(b) for b in bodies))


def _stored_counter(text: str) -> float:
    match = re.search(
        r'^runbook_gateway_alerts_received_total\{outcome="stored",source="generic"\} (\S+)$',
        text, re.M,
    )  # fmt: skip
    assert match, text
    return float(match.group(1))


@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_two_workers_store_each_alert_once_share_flaps_and_metrics(
    workers_gateway: tuple[str, str, subprocess.Popen[bytes]],
) -> None:
    """300 alerts over 20 keys from fresh connections: both workers answer, the ledger holds 300
    alerts and 20 incidents; firing, resolved, firing again on one key (each on a new connection,
    so on either worker) marks the last alert flapping; every /metrics answer, whichever worker
    gives it, counts all stored alerts; SIGTERM stops the supervisor and its workers (exit 0)."""
    base, url, proc = workers_gateway
    pids = {httpx.get(f"{base}/healthz", timeout=5).json()["pid"] for _ in range(60)}
    bodies = [
        p.generic(key=f"k{n % KEYS}", delivery_id=f"d{n}", labels={"n": str(n)})
        for n in range(KEYS * PER_KEY)
    ]
    statuses = asyncio.run(_post_all(base, bodies))
    pids |= {httpx.get(f"{base}/healthz", timeout=5).json()["pid"] for _ in range(60)}
    assert statuses == [202] * len(bodies)
    flaps = [p.generic(key="flappy", status=s, delivery_id=f"f{i}", labels={"i": str(i)})
             for i, s in enumerate(["firing", "resolved", "firing"])]  # fmt: skip
    for body in flaps:  # in order, each on its own connection
        assert asyncio.run(_post_all(base, [body])) == [202]
    with open_ledger(url) as ledger:
        incidents = ledger.list_incidents()
        by_key = {i.dedup_key: i for i in incidents}
        assert len(incidents) == KEYS + 1
        assert sum(len(ledger.alerts_for(i.id)) for i in incidents) == KEYS * PER_KEY + 3
        assert all(by_key[f"generic:k{k}"].alert_count == PER_KEY for k in range(KEYS))
        flappy = ledger.alerts_for(by_key["generic:flappy"].id)
        assert [a.labels.get("flapping") for a in flappy] == [None, None, "true"]
    assert len(pids) == 2, f"one worker answered every connection: {pids}"
    for _ in range(6):
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
        assert _stored_counter(metrics) == KEYS * PER_KEY + 3
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists()
            or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )


def test_workers_below_one_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """--workers 0 exits 2 with one sentence naming the option, before any ledger is opened."""
    out = subprocess.run(
        [sys.executable, "-m", "runbook.cli", "gateway", "--workers", "0", "--no-prefect"],
        env={**os.environ, "RUNBOOK_HOME": str(tmp_path)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert "--workers" in out.stderr and "greater than or equal to 1" in out.stderr
    assert not (tmp_path / "ledger.db").exists()


@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_workers_stop_when_their_supervisor_is_killed(
    workers_gateway: tuple[str, str, subprocess.Popen[bytes]],
) -> None:
    """SIGKILL of the supervisor (no chance to stop its workers) still leaves no worker serving:
    each notices it is orphaned and stops within a few seconds, freeing the port."""
    base, _, proc = workers_gateway
    pids = {httpx.get(f"{base}/healthz", timeout=5).json()["pid"] for _ in range(20)}
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in pids)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{base}/healthz", timeout=2)


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting for its parent."""
    status = Path(f"/proc/{pid}/status")
    try:
        return "zombie" not in status.read_text().lower()
    except FileNotFoundError:
        return False


@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_a_killed_worker_is_replaced_and_alerts_keep_being_stored(
    workers_gateway: tuple[str, str, subprocess.Popen[bytes]],
) -> None:
    """SIGKILL of one worker: the supervisor starts another (a new pid answers /healthz), the
    survivors and the newcomer store alerts, and flap tracking still works (the shared table's
    lock is not left held)."""
    base, url, proc = workers_gateway
    victim = httpx.get(f"{base}/healthz", timeout=5).json()["pid"]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    pids: set[int] = set()
    while time.monotonic() < deadline:
        try:
            pids |= {httpx.get(f"{base}/healthz", timeout=2).json()["pid"] for _ in range(10)}
        except httpx.HTTPError:
            pass  # the killed worker's connections
        if len(pids - {victim}) == 2:
            break
        time.sleep(0.3)
    assert len(pids - {victim}) == 2 and proc.poll() is None
    bodies = [p.generic(key="after", status=s, delivery_id=f"a{i}")
              for i, s in enumerate(["firing", "resolved", "firing"])]  # fmt: skip
    for body in bodies:
        assert asyncio.run(_post_all(base, [body])) == [202]
    with open_ledger(url) as ledger:
        (incident,) = ledger.list_incidents()
        assert [a.labels.get("flapping") for a in ledger.alerts_for(incident.id)] == [
            None, None, "true",
        ]  # fmt: skip


def test_a_flap_setting_the_shared_table_cannot_hold_is_refused_before_any_worker_starts() -> None:
    """flap_changes above the 8 change times a shared slot keeps: ConfigError naming --workers and
    the limit; no worker process is started (the socket is never listened on)."""
    config = GatewayConfig(token=SecretStr(TOKEN), flap_changes=9)
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 0))
        with pytest.raises(ConfigError, match=r"--workers: .*changes must be 1\.\.8"):
            start_pool(sock, 2, ledger_url=None, config=config, prefect=False)
        assert not multiprocessing.active_children()
    finally:
        sock.close()
