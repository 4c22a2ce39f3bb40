"""The watcher: escalates an incident whose worker died (deadlines live in the ledger, not the
process), and opens, attaches and resolves incidents from the app's metrics and the policy's thresholds."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from flows.runtime import Options, get_ledger
from flows.watch import watch
from runbook.clock import utcnow
from runbook.metrics import Readings
from runbook.models import AlertStatus, IncidentStatus, Severity
from runbook.policy import load_policy
from runbook.sandbox import product_app
from runbook.sandbox.core import FaultRule
from runbook.sandbox.scenarios import apply_scenario
from runbook.watching import firing_intakes, observe
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


WATCH_POLICY = """
[monitoring]
recurrence_watch = "1m"
auto_resolve_after = "2m"
"""  # at SPEED 100: healthy for 1.2 s resolves


def _watch_options(options: Options, tmp_path: Path) -> Options:
    policy = tmp_path / "watch-policy.toml"
    policy.write_text(WATCH_POLICY)
    return options.model_copy(update={"policy_path": str(policy)})


@pytest.mark.timeout(180)  # the first flow test of a session also starts the Prefect server
def test_watcher_opens_attaches_and_resolves_an_error_rate_incident(
    world, options, tmp_path
) -> None:
    """3 % errors in the sandbox app open exactly one incident (through the ledger's alert path,
    with its launch attempted from the outbox); a second run attaches to it; after the fault is
    cleared the first healthy run starts the streak and a run after the compressed
    auto_resolve_after window resolves it, with resolved alerts and the reason on the timeline."""
    opts = _watch_options(options, tmp_path)
    apply_scenario(
        world, "high-error-rate"
    )  # 3 % errors: past error_rate 1 % and availability 99 %

    first = asyncio.run(watch(opts))["thresholds"]
    assert {"error_rate", "availability"} <= set(first["breached"])
    assert len(first["opened"]) == 1
    incident_id = first["opened"][0]
    ledger = get_ledger(opts.ledger_url)
    incident = ledger.get_incident(incident_id)
    assert incident.dedup_key == "watch:web" and incident.is_open
    assert incident.severity is Severity.P1  # availability's threshold severity, the highest
    # the launch was tried once (no incident-response deployment here, or a created run): either
    # way the watcher carried on
    assert first["launches"]["launched"] + first["launches"]["failed"] == 1

    second = asyncio.run(watch(opts))["thresholds"]
    assert second["opened"] == [] and second["attached"] == [incident_id]
    assert [i.id for i in ledger.list_incidents()] == [incident_id]

    product_app.advance(world)  # count the faulty traffic so far, then clear the fault
    product_app.app_state(world).extra_error_rate = 0.0
    third = asyncio.run(watch(opts))["thresholds"]
    assert third["breached"] == [] and third["resolved"] == []
    assert [d["verdict"] for d in third["decisions"]] == ["healthy"]
    assert ledger.get_incident(incident_id).is_open

    time.sleep(1.3)
    fourth = asyncio.run(watch(opts))["thresholds"]
    assert fourth["resolved"] == [incident_id]
    assert ledger.get_incident(incident_id).status is IncidentStatus.RESOLVED
    events = ledger.timeline(incident_id)
    assert [e.kind for e in events].count("watch_healthy") == 1
    status = [e for e in events if e.kind == "status"][-1]
    assert status.actor == "watch" and "auto-resolved by the watcher" in status.message
    resolved = [a for a in ledger.alerts_for(incident_id) if a.status == AlertStatus.RESOLVED]
    assert {a.labels["metric"] for a in resolved} == {"error_rate", "availability"}


@pytest.mark.timeout(180)  # the first flow test of a session also starts the Prefect server
def test_unreachable_metrics_are_a_p3_incident_never_healthy(world, options, tmp_path) -> None:
    """With the metrics endpoint answering 503 the watcher opens a P3 "monitoring source
    unreachable" incident, and an open threshold incident whose healthy streak is older than the
    window is NOT resolved (not knowing is not healthy): its streak is ended instead."""
    opts = _watch_options(options, tmp_path)
    ledger = get_ledger(opts.ledger_url)
    policy = load_policy(opts.policy_path)
    long_ago = utcnow() - timedelta(minutes=10)
    obs = observe(policy, "web", _breached_readings(long_ago), long_ago)
    [open_id] = {o.incident_id for o in ledger.record_alerts(firing_intakes(policy, obs))}
    assert open_id is not None
    ledger.add_event(open_id, "watch_healthy", "healthy", at=long_ago + timedelta(seconds=1))
    world.add_fault(FaultRule(vendor="app", kind="error", path=r"/metrics"))

    result = asyncio.run(watch(opts))["thresholds"]

    assert result["unreachable"] and "503" in result["unreachable"]
    assert len(result["opened"]) == 1
    p3 = ledger.get_incident(result["opened"][0])
    assert p3.severity is Severity.P3 and p3.title == "Monitoring source unreachable: web metrics"
    assert p3.dedup_key == "watch:web:monitoring-source"
    assert result["resolved"] == []
    assert ledger.get_incident(open_id).is_open
    assert [e.kind for e in ledger.timeline(open_id)][-1] == "watch_blind"


def _breached_readings(at: datetime) -> Readings:
    return Readings(
        window_start=at - timedelta(seconds=30), window_end=at, requests=1000,
        error_rate=0.05, availability=0.95,
    )  # fmt: skip
