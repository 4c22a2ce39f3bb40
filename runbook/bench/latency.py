"""Benchmark: alert POST -> the first task of the ``detect`` subflow running, through `runbook serve`.

The production path, end to end, on one machine:

1. a PRIVATE Prefect server (``prefect server start``'s app in a subprocess, on a fresh SQLite
   database in the run's folder ``$RUNBOOK_HOME/bench/latency-<time>/``; never the server
   PREFECT_API_URL names: incident ids, and so the launches' idempotency keys, restart at 1 with
   each bench's ledger);
2. the sandbox world on a loopback port, with blocks under the default names (``Systems()``:
   ``VercelProject/production`` ...), so the served flows run with their default parameters;
3. ``runbook serve --poll P`` in a subprocess (RUNBOOK_LEDGER_URL and RUNBOOK_HOME point at the
   bench's own SQLite ledger);
4. the alert gateway in this process (uvicorn in a thread) over that ledger, launching runs with
   ``PrefectLauncher`` (a run of the deployment, not waited for), exactly as ``runbook gateway`` does.

Then, one after another, N alerts with distinct keys (so N incidents) are POSTed to
``/hooks/generic``. For each, the time from just before the POST to the ``start_time`` of the first
task run of that incident's ``detect`` subflow (the earliest Running state Prefect recorded) is one
sample; the stages in between (gateway answer, flow run created, parent running, detect running)
are kept too. Once measured, the run is cancelled and the next alert waits until it is final, so runs
never pile up. All timestamps come from one machine's clock.

Usage: ``runbook bench latency [--alerts 50] [--poll 0.2] [--json]``
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from runbook.bench.machine import reading as machine_reading

TARGET_P95_S = 1.5
ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
STARTUP_TIMEOUT_S = 120
# how often the bench looks for the run's progress: the timestamps come from Prefect's records, so a
# slower look costs no precision, and every look is API work the measured runs would otherwise share
# the server (and the 2 cores) with
OBSERVE_EVERY_S = 0.5
STAGES = ("ack_s", "created_s", "parent_running_s", "detect_running_s", "first_task_s")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between closest ranks (numpy's default).

    Raises:
        ValueError: no values, or q outside 0-100.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0-100, got {q}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(samples: Sequence[dict[str, float]]) -> dict[str, Any]:
    """The JSON figures of a run: p50/p95/max of the total, and p50/p95 of every stage.

    Args:
        samples: one mapping per alert holding every name in STAGES (seconds since the POST).
    """
    totals = [s["first_task_s"] for s in samples]
    stages = {
        name: {
            "p50_s": round(percentile([s[name] for s in samples], 50), 3),
            "p95_s": round(percentile([s[name] for s in samples], 95), 3),
        }
        for name in STAGES
    }
    return {
        "alerts": len(samples),
        "p50_s": round(percentile(totals, 50), 3),
        "p95_s": round(percentile(totals, 95), 3),
        "max_s": round(max(totals), 3),
        "min_s": round(min(totals), 3),
        "stages": stages,
        "target_p95_s": TARGET_P95_S,
        "samples": [{k: round(v, 3) for k, v in s.items()} for s in samples],
    }


def bench_home() -> Path:
    """``$RUNBOOK_HOME/bench`` (default ``~/.runbook/bench``), created."""
    home = Path(os.environ.get("RUNBOOK_HOME") or Path.home() / ".runbook") / "bench"
    home.mkdir(parents=True, exist_ok=True)
    return home


@contextlib.contextmanager
def private_prefect_api(folder: Path, admin_dsn: str | None = ADMIN_DSN) -> Iterator[str]:
    """A Prefect server of the bench's own, whatever PREFECT_API_URL says; its API URL.

    Its database is a fresh PostgreSQL database on ``admin_dsn``'s server (created here, dropped
    afterwards) when that server answers, else SQLite in ``folder``: on SQLite, the flow engine's
    concurrent state and event writes queue behind one write lock, and under load a single API
    call was seen to wait 20 s.
    """
    import prefect.settings as ps

    from runbook.drill.prefect_api import _drain_to_api
    from runbook.prefect_server import private_server, server_settings

    pg_db = _create_pg_database(admin_dsn) if admin_dsn else None
    db_url = (
        _asyncpg_url(admin_dsn, pg_db)
        if admin_dsn and pg_db
        else f"sqlite+aiosqlite:///{folder / 'prefect.db'}"
    )
    try:
        with ps.temporary_settings(
            updates={
                ps.PREFECT_SERVER_DATABASE_CONNECTION_URL: db_url,
                ps.PREFECT_SERVER_LOGGING_LEVEL: "CRITICAL",
                ps.PREFECT_SERVER_ANALYTICS_ENABLED: False,
                **server_settings(),  # task runs recorded in batches (runbook.prefect_server)
            },
            restore_defaults={ps.PREFECT_API_URL},
        ):
            server = private_server()
            server.start(timeout=STARTUP_TIMEOUT_S)
            try:
                with ps.temporary_settings(updates={ps.PREFECT_API_URL: server.api_url}):
                    yield server.api_url
                    _drain_to_api()
            finally:
                server.stop()
    finally:
        if admin_dsn and pg_db:
            _drop_pg_database(admin_dsn, pg_db)


def _create_pg_database(
    admin_dsn: str, prefix: str = "runbook_bench_prefect", errors: list[str] | None = None
) -> str | None:
    """A fresh database named ``<prefix>_<random>``, or None when PostgreSQL does not answer (or
    refuses: no free connection slot ...); PostgreSQL's reason is appended to ``errors``."""
    import psycopg
    from psycopg import sql

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=3) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        if errors is not None:
            errors.append(
                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            )
        return None
    return name


def _drop_pg_database(admin_dsn: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _asyncpg_url(admin_dsn: str, dbname: str) -> str:
    """The SQLAlchemy asyncpg URL of ``dbname`` on ``admin_dsn``'s server (same user and host)."""
    from psycopg.conninfo import conninfo_to_dict
    from sqlalchemy.engine import URL

    p = conninfo_to_dict(admin_dsn)
    return URL.create(
        "postgresql+asyncpg",
        username=str(p.get("user") or "postgres"),
        password=str(p["password"]) if p.get("password") else None,
        host=str(p.get("host") or "127.0.0.1"),
        port=int(p.get("port") or 5432),
        database=dbname,
    ).render_as_string(hide_password=False)


def _ts(at: datetime | None) -> float | None:
    return None if at is None else at.timestamp()


async def _first_task(client: Any, incident_id: int, deadline: float) -> dict[str, Any]:
    """Wait for the incident's detect subflow to have a running task; its runs and timestamps."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterIdempotencyKey,
        FlowRunFilterParentFlowRunId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )

    parent = detect = None
    while time.time() < deadline:
        if parent is None:
            found = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    idempotency_key=FlowRunFilterIdempotencyKey(any_=[f"incident-{incident_id}"])
                )
            )
            parent = found[0] if found else None
        if parent is not None and detect is None:
            children = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent.id])
                )
            )
            detect = next((r for r in children if r.name.endswith(" detect")), None)
        if parent is not None and detect is not None:
            tasks = await client.read_task_runs(
                task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[detect.id]))
            )
            starts = [t.start_time for t in tasks if t.start_time is not None]
            if starts:
                parent = await client.read_flow_run(parent.id)
                detect = await client.read_flow_run(detect.id)
                return {
                    "parent": parent,
                    "created": _ts(parent.created),
                    "parent_running": _ts(parent.start_time),
                    "detect_running": _ts(detect.start_time),
                    "first_task": min(s.timestamp() for s in starts),
                }
        await asyncio.sleep(OBSERVE_EVERY_S)
    raise TimeoutError(f"INC-{incident_id}: no task of detect ran within the timeout")


async def _cancel(client: Any, run_id: Any, timeout_s: float = 60) -> str:
    """Cancel a flow run and wait until it is final; its final state's name."""
    from prefect.states import Cancelling

    run = await client.read_flow_run(run_id)
    if run.state is None or not run.state.is_final():
        await client.set_flow_run_state(run_id, Cancelling(), force=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = await client.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            return str(run.state.name)
        await asyncio.sleep(0.2)
    return "not final"


async def _wait_served(client: Any, since: datetime, proc: subprocess.Popen[bytes]) -> None:
    from flows.serve import INCIDENT_DEPLOYMENT

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"runbook serve exited with {proc.returncode}")
        with contextlib.suppress(Exception):
            dep = await client.read_deployment_by_name(INCIDENT_DEPLOYMENT)
            if dep.last_polled is not None and dep.last_polled >= since and not dep.paused:
                return
        await asyncio.sleep(0.2)
    raise RuntimeError("runbook serve did not poll its deployments within 120 s")


async def _measure(
    alerts: int, gateway_url: str, token: str, proc: subprocess.Popen[bytes], since: datetime
) -> list[dict[str, float]]:
    import httpx
    from prefect.client.orchestration import get_client

    samples: list[dict[str, float]] = []
    run_tag = uuid.uuid4().hex[:6]
    async with get_client() as client, httpx.AsyncClient(timeout=10) as http:
        await _wait_served(client, since, proc)
        for i in range(alerts):
            body = {
                "key": f"bench-latency-{run_tag}-{i}",
                "status": "firing",
                "summary": f"bench latency alert {i}",
                "severity": "P2",
                "service": f"bench-{run_tag}-{i}",
            }
            t0 = time.time()
            resp = await http.post(
                f"{gateway_url}/hooks/generic",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )
            acked = time.time()
            if resp.status_code != 202:
                raise RuntimeError(f"the gateway answered {resp.status_code}: {resp.text[:200]}")
            (incident_id,) = resp.json()["opened"]
            seen = await _first_task(client, incident_id, t0 + 120)
            samples.append(
                {
                    "ack_s": acked - t0,
                    "created_s": seen["created"] - t0,
                    "parent_running_s": seen["parent_running"] - t0,
                    "detect_running_s": seen["detect_running"] - t0,
                    "first_task_s": seen["first_task"] - t0,
                }
            )
            await _cancel(client, seen["parent"].id)
    return samples


def run(alerts: int = 50, poll_s: float = 0.2) -> dict[str, Any]:
    """Set everything up, measure ``alerts`` alerts one after another, tear everything down.

    Returns:
        ``summarize``'s figures plus ``poll_s``.
    """
    import secrets

    from pydantic import SecretStr

    from flows.runtime import Systems
    from runbook.drill.world import SimulatedProduction, save_sandbox_blocks
    from runbook.gateway.app import create_app
    from runbook.gateway.config import GatewayConfig
    from runbook.gateway.dispatcher import PrefectLauncher
    from runbook.ledger import open_ledger
    from runbook.sandbox.server import serve_in_thread

    home = bench_home()
    folder = home / f"latency-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:4]}"
    folder.mkdir()
    ledger_url = f"sqlite:///{folder / 'ledger.db'}"
    token = secrets.token_urlsafe(24)
    prod = SimulatedProduction.start()
    try:
        with private_prefect_api(folder) as api_url:
            asyncio.run(save_sandbox_blocks(prod.url, prod.credentials, None, Systems()))
            with open_ledger(ledger_url) as ledger:
                gateway = serve_in_thread(
                    create_app(
                        ledger,
                        GatewayConfig(token=SecretStr(token)),
                        launcher=PrefectLauncher(api_url),
                    )
                )
                env = dict(
                    os.environ,
                    PREFECT_API_URL=api_url,
                    RUNBOOK_LEDGER_URL=ledger_url,
                    RUNBOOK_HOME=str(folder),
                    PREFECT_SERVER_ANALYTICS_ENABLED="false",
                )
                log = (folder / "serve.log").open("wb")
                since = datetime.now().astimezone()
                proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                    [sys.executable, "-m", "runbook.cli", "serve", "--poll", str(poll_s)],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
                try:
                    samples = asyncio.run(_measure(alerts, gateway.url, token, proc, since))
                finally:
                    proc.terminate()
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(10)
                    log.close()
                    gateway.stop()
    finally:
        prod.stop()
    out = summarize(samples)
    out["poll_s"] = poll_s
    out["folder"] = str(folder)
    return out


def main(alerts: int = 50, poll_s: float = 0.2, json_out: bool = False) -> int:
    """Run the benchmark once and print its figures.

    Args:
        alerts: how many alerts to send, one after another.
        poll_s: the served runner's poll interval (``runbook serve --poll``).
        json_out: print one JSON object (``alerts``, ``p50_s``, ``p95_s``, ``max_s``, ``stages`` ...).

    Returns:
        0 when p95 is within the target (1.5 s), 1 otherwise; 143 when SIGTERM stopped it
        (everything it started stopped first).
    """
    import json

    from runbook.bench.terminate import run_terminable

    out = run_terminable("latency", lambda: run(alerts, poll_s))
    if isinstance(out, int):
        return out  # SIGTERM stopped it (run_terminable said so)
    out["ok"] = out["p95_s"] <= TARGET_P95_S
    out["machine"] = machine_reading()  # to compare figures across machines
    if json_out:
        print(json.dumps(out))
    else:
        stages = ", ".join(f"{k} {v['p50_s']}" for k, v in out["stages"].items())
        print(
            f"{out['alerts']} alerts: alert POST -> detect's first task p50 {out['p50_s']} s, "
            f"p95 {out['p95_s']} s, max {out['max_s']} s (target p95 <= {TARGET_P95_S} s)\n"
            f"stages (p50, s since the POST): {stages}"
        )
    return 0 if out["ok"] else 1
