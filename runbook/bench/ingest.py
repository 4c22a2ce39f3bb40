"""Benchmark: drive the alert gateway over HTTP and count what the ledger stored.

The gateway runs in its own process(es) (uvicorn, the full path: auth, parse, normalize, dedup,
group commit, no Prefect). The load comes from ``CLIENT_PROCS`` processes of raw keep-alive HTTP/1.1
connections with pre-built requests, so the generator stays light; its CPU share is reported.
Incidents and stored alerts are counted in the ledger, never from our own bookkeeping.

Two figures help read a run on a shared machine, where ``alerts_per_s`` falls with the CPU share
the gateway gets: ``gateway_cpu_us_per_alert`` (the gateway's own CPU time per alert, far less
sensitive to other processes than the rate) and ``load_avg_1m`` once the load phases are over.

A second, paced phase sends ``PACED_RATE`` alerts/s for a few seconds and reports its p99 (the
latency target is stated at that rate). With ``vs_alertmanager`` the same alerts also go to a
local Alertmanager's ``POST /api/v2/alerts`` in the same run, one alert per request as well.

Concurrency (``--connections``, default 128) bounds a closed loop's rate by Little's law: rate =
connections / ack latency. The group commit turns more requests in flight into bigger batches, so a
ledger whose commit is round-trip bound (PostgreSQL) needs more of them to reach its capacity than
one bound by the gateway's CPU (SQLite); the JSON's ``concurrency`` says which was used.

``--workers`` runs the gateway as ``runbook gateway --workers N`` does (default 2 on PostgreSQL,
whose commits are round trips that leave one process's GIL-bound loop idle; 1 on SQLite, which has
one writer anyway); ``gateway_cpu_us_per_alert`` sums the workers.

Usage: ``runbook bench ingest [--alerts 50000] [--groups 500] [--ledger sqlite|postgres] [--json]
[--vs-alertmanager] [--connections 128] [--workers N]``
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import socket
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from runbook.bench.ingest_load import DEFAULT_CONNECTIONS, drive, wait_ready
from runbook.bench.machine import reading as machine_reading
from runbook.ledger import open_ledger
from runbook.ledger.schema import alerts as alerts_table
from runbook.ledger.schema import incidents as incidents_table
from runbook.ports import free_port

TOKEN = "bench-token"  # noqa: S105 - a throwaway token for a loopback-only benchmark
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PACED_RATE = 2000
MAX_WORKERS = 16
MAX_CONNECTIONS = 1000  # the gateway holds one socket per connection: keep it under ulimit -n
PACED_SECONDS = 3
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
AM_CONFIG = "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n"


class _Gateway:
    """The gateway under test: one process, or ``runbook gateway --workers``' pool of them."""

    def __init__(self, url: str, sock: socket.socket, workers: int) -> None:
        from runbook.gateway import GatewayConfig
        from runbook.gateway.workers import WorkerSpec, serve_worker, start_pool

        self.pool: Any = None
        self.server: Any = None
        config = GatewayConfig.from_env({"RUNBOOK_GATEWAY_TOKEN": TOKEN})
        if workers == 1:  # as `runbook gateway` without --workers: one process, its own flap state
            self.server = mp.get_context("spawn").Process(
                target=serve_worker, args=(WorkerSpec(url, config, prefect=False), sock),
                daemon=True,
            )  # fmt: skip
            self.server.start()
            return
        self.pool = start_pool(sock, workers, ledger_url=url, config=config, prefect=False)

    def cpu_s(self) -> float:
        """CPU seconds the gateway's processes used so far."""
        procs = self.pool.procs if self.pool is not None else [self.server]
        return sum(_cpu_s(p.pid or 0) for p in procs)

    def stop(self) -> None:
        """Stop the gateway's processes."""
        if self.pool is not None:
            self.pool.stop()
        else:
            self.server.terminate()
            self.server.join(10)


def _bodies(run: str, start: int, count: int, groups: int) -> list[bytes]:
    return [
        json.dumps(
            {
                "key": f"bench-{run}-{i % groups}",
                "delivery_id": f"{run}-{i}",
                "severity": "P2",
                "summary": f"bench group {i % groups}",
                "service": "bench",
                "labels": {"alertname": f"Bench{i % groups}", "instance": f"host-{i}"},
            }
        ).encode()  # fmt: skip
        for i in range(start, start + count)
    ]


def _am_bodies(run: str, count: int, groups: int) -> list[bytes]:
    return [
        json.dumps(
            [
                {
                    "labels": {
                        "alertname": f"Bench{i % groups}",
                        "run": run,
                        "instance": f"host-{i}",
                    },
                    "annotations": {"summary": f"bench group {i % groups}"},
                }
            ]
        ).encode()  # fmt: skip
        for i in range(count)
    ]


def _pg_database() -> tuple[str, str | None]:
    """The ledger URL for --ledger postgres, and a throwaway database to drop (None: user's own)."""
    if os.environ.get("RUNBOOK_LEDGER_URL", "").startswith("postgresql"):
        return os.environ["RUNBOOK_LEDGER_URL"], None
    name = f"runbook_bench_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}", name


def _drop_pg(name: str) -> None:
    engine = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def _count(url: str, run: str) -> tuple[int, int]:
    """Incidents and alerts of this run, from the ledger itself."""
    pattern = f"generic:bench-{run}-%"
    with open_ledger(url) as ledger, ledger.engine.connect() as conn:
        n_incidents = conn.execute(
            sa.select(sa.func.count()).where(incidents_table.c.dedup_key.like(pattern))
        ).scalar_one()
        n_alerts = conn.execute(
            sa.select(sa.func.count()).where(alerts_table.c.dedup_key.like(pattern))
        ).scalar_one()
    return int(n_incidents), int(n_alerts)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _alertmanager_rate(
    alerts: int, groups: int, run: str, tmp: Path, connections: int
) -> float | None:
    if shutil.which(ALERTMANAGER) is None:
        return None
    port = free_port()
    (tmp / "am.yml").write_text(AM_CONFIG)
    import subprocess

    proc = subprocess.Popen(  # noqa: S603 - a fixed binary and our own arguments
        [ALERTMANAGER, f"--config.file={tmp / 'am.yml'}", f"--storage.path={tmp / 'am'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_ready("127.0.0.1", port, "/-/ready")
        result = drive(
            "127.0.0.1", port, "/api/v2/alerts", _am_bodies(run, alerts, groups), {},
            connections=connections,
        )  # fmt: skip
        return float(result["ok"]) / result["wall_s"]
    finally:
        proc.terminate()
        proc.wait(10)


def main(
    alerts: int,
    groups: int,
    ledger: str,
    json_out: bool,
    vs_alertmanager: bool,
    connections: int = DEFAULT_CONNECTIONS,
    workers: int | None = None,
) -> int:
    """Run the benchmark and print its figures.

    Args:
        alerts: how many alerts to send in the throughput phase.
        groups: how many distinct problems they belong to (incidents expected).
        ledger: ``sqlite`` (a temporary file) or ``postgres`` (``RUNBOOK_LEDGER_URL`` or a
            throwaway database on the local server).
        json_out: print one JSON object instead of text.
        vs_alertmanager: also send the same load to a local Alertmanager and report the ratio.
        connections: concurrent keep-alive connections, one request in flight each (the same for
            Alertmanager).
        workers: gateway processes (``runbook gateway --workers``); None: 2 on PostgreSQL, 1 on
            SQLite (one writer whatever the processes).

    Returns:
        0 when every alert was acknowledged and the ledger holds exactly one incident per group and
        every alert sent; 1 otherwise.
    """
    if ledger not in ("sqlite", "postgres"):
        print(f"--ledger must be sqlite or postgres, not {ledger!r}", file=sys.stderr)
        return 2
    if groups < 1 or alerts < groups:
        print("--alerts must be at least --groups, and --groups at least 1", file=sys.stderr)
        return 2
    if not 2 <= connections <= MAX_CONNECTIONS:
        print(f"--connections must be within 2-{MAX_CONNECTIONS}", file=sys.stderr)
        return 2
    if workers is None:
        workers = 2 if ledger == "postgres" else 1
    if not 1 <= workers <= MAX_WORKERS:
        print(f"--workers must be within 1-{MAX_WORKERS}", file=sys.stderr)
        return 2
    run = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="runbook-bench-"))
    drop: str | None = None
    if ledger == "sqlite":
        url = f"sqlite:///{tmp / 'ledger.db'}"
    else:
        url, drop = _pg_database()
    open_ledger(url).close()  # migrate before the clock starts
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    gateway = _Gateway(url, sock, workers)
    try:
        wait_ready("127.0.0.1", port, "/healthz")
        headers = {"Authorization": f"Bearer {TOKEN}"}
        cpu0 = gateway.cpu_s()
        result = drive(
            "127.0.0.1", port, "/hooks/generic", _bodies(run, 0, alerts, groups), headers,
            connections=connections,
        )  # fmt: skip
        gateway_cpu = gateway.cpu_s() - cpu0
        paced_run = run + "p"
        paced = drive("127.0.0.1", port, "/hooks/generic",
                      _bodies(paced_run, 0, min(alerts, PACED_RATE * PACED_SECONDS), groups), headers,
                      rate=PACED_RATE, connections=connections)  # fmt: skip
        incidents, stored = _count(url, run)
        figures: dict[str, Any] = {
            "sent": alerts, "groups": groups, "acked": result["ok"], "errors": result["errors"],
            "alerts_per_s": round(result["ok"] / result["wall_s"]),
            "ack_p50_ms": result["p50_ms"], "ack_p95_ms": result["p95_ms"],
            "ack_p99_ms": result["p99_ms"], "incidents": incidents, "stored": stored,
            "ledger": ledger, "concurrency": result["connections"], "workers": workers,
            "client_cpu_share": round(result["client_cpu_s"] / (result["wall_s"] * os.cpu_count()), 3),
            "gateway_cpu_share": round(gateway_cpu / (result["wall_s"] * os.cpu_count()), 3),
            "gateway_cpu_us_per_alert": round(gateway_cpu / max(result["ok"], 1) * 1e6),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "paced_rate": PACED_RATE, "paced_p50_ms": paced["p50_ms"], "paced_p99_ms": paced["p99_ms"],
            "cpus": os.cpu_count(),
        }  # fmt: skip
    finally:
        gateway.stop()
        if drop:
            _drop_pg(drop)
    if vs_alertmanager:
        am_rate = _alertmanager_rate(alerts, groups, run, tmp, connections)
        figures["alertmanager_alerts_per_s"] = round(am_rate) if am_rate else None
        figures["ratio"] = round(figures["alerts_per_s"] / am_rate, 3) if am_rate else None
    shutil.rmtree(tmp, ignore_errors=True)
    ok = result["errors"] == 0 and incidents == groups and stored == alerts
    figures["machine"] = machine_reading()  # to compare figures across machines
    if json_out:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:>26}: {value}")
        print("OK" if ok else "MISMATCH: the ledger does not hold exactly what was sent")
    return 0 if ok else 1


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--alerts", type=int, default=50_000)
    parser.add_argument("--groups", type=int, default=500)
    parser.add_argument("--ledger", default="sqlite")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--vs-alertmanager", action="store_true")
    parser.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS)
    parser.add_argument("--workers", type=int, default=None)
    a = parser.parse_args()
    sys.exit(main(a.alerts, a.groups, a.ledger, a.json, a.vs_alertmanager, a.connections,
                  a.workers))  # fmt: skip
