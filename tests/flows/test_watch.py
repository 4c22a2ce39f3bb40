"""The watcher escalates an incident whose worker died: deadlines live in the ledger, not the process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.runtime import get_ledger
from flows.watch import watch
from runbook.clock import utcnow
from runbook.models import IncidentStatus, Severity
from runbook.sandbox.core import FaultRule
from runbook.sandbox.scenarios import apply_scenario
from tests.flows.test_incident_flow import open_incident

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(180)
def test_killed_run_is_escalated_by_the_watcher(world, options, flow_env, prefect_api) -> None:
    """A run killed mid-mitigation leaves its mitigate deadline in the ledger; the watcher escalates
    it once the deadline passes, and only once."""
    world.add_fault(FaultRule(vendor="vercel", kind="latency", path=r"/rollback/", latency_s=60))
    apply_scenario(world, "bad-deploy")
    opts = options.model_copy(update={"speed": 200.0})  # P1 mitigate deadline: 60 min / 200 = 18 s
    incident_id = open_incident(opts, severity=Severity.P1)
    script = (
        "import asyncio\n"
        "from flows.incident import incident_response\n"
        "from flows.runtime import Options\n"
        f"opts = Options.model_validate_json({opts.model_dump_json()!r})\n"
        f"asyncio.run(incident_response(incident_id={incident_id}, options=opts))\n"
    )
    env = dict(os.environ, PREFECT_API_URL=prefect_api, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while not world.requests_for("vercel", r"/rollback/"):
            assert proc.poll() is None, "the incident run ended before reaching the rollback"
            assert time.monotonic() < deadline, "the run never reached the rollback"
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait(10)
    ledger = get_ledger(opts.ledger_url)
    assert ledger.get_incident(incident_id).status is IncidentStatus.MITIGATING
    due = next(d for d in ledger.deadlines(incident_id) if d.phase == "mitigate")
    assert due.escalated_at is None, "the dead process had not escalated it"
    time.sleep(max(0.0, (due.due_at - utcnow()).total_seconds() + 0.2))

    first = asyncio.run(watch(opts))
    second = asyncio.run(watch(opts))

    mine = [
        e
        for e in first["escalated"]
        if e["incident_id"] == incident_id and e.get("phase") == "mitigate"
    ]
    assert len(mine) == 1
    assert not [e for e in second["escalated"] if e.get("phase") == "mitigate"]
    events = [
        e for e in ledger.timeline(incident_id) if e.kind == "escalation" and "watcher" in e.message
    ]
    assert events and events[0].phase is not None and events[0].phase.value == "mitigate"
