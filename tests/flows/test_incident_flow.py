"""The incident flow end to end against the sandbox world, under the Prefect test server."""

from __future__ import annotations

import asyncio
import json

import pytest

from flows.incident import incident_response
from flows.runtime import Options, get_ledger
from runbook.models import ActionStatus, Alert, IncidentStatus, Severity
from runbook.sandbox import pagerduty as sb_pagerduty
from runbook.sandbox import slack as sb_slack
from runbook.sandbox import vercel as sb_vercel
from runbook.sandbox.scenarios import apply_scenario
from tests.flows.conftest import sandbox_requests

pytestmark = pytest.mark.timeout(180)


def open_incident(options: Options, summary: str = "High error rate on web") -> int:
    ledger = get_ledger(options.ledger_url)
    out = ledger.record_alert(
        Alert(source="alertmanager", delivery_id="d-1", dedup_key="HighErrorRate:web", summary=summary,
              labels={"alertname": "HighErrorRate", "service": "web"}, service="web"),
        title=summary, severity=Severity.P2, service="web",
    )
    assert out.opened and out.incident_id is not None
    return out.incident_id


def test_bad_deploy_is_detected_diagnosed_rolled_back_and_resolved(world, options, flow_env) -> None:
    """A bad deploy: ticket, page and message once each, diagnosis names it, one verified rollback,
    status page resolved, incident resolved."""
    good = sb_vercel.current_production(world)
    assert good is not None
    apply_scenario(world, "bad-deploy")
    bad = sb_vercel.current_production(world)
    assert bad is not None and bad.uid != good.uid
    incident_id = open_incident(options)

    summary = asyncio.run(incident_response(incident_id=incident_id, options=options))

    ledger = get_ledger(options.ledger_url)
    inc = ledger.get_incident(incident_id)
    assert summary["resolved"] is True
    assert inc.resolved_at is not None and inc.status is IncidentStatus.CLOSED
    assert inc.scenario == "bad-deploy"
    assert bad.uid in json.dumps(inc.diagnosis)
    # production serves the good deployment again
    assert sb_vercel.current_production(world).uid == good.uid
    rollbacks = sandbox_requests(flow_env, "vercel", r"/rollback/")
    assert len(rollbacks) == 1 and good.uid in rollbacks[0]["path"]
    # one ticket, one page (P1/P0 only: a P2 error-rate incident is not paged), one detection message
    issues = [r for r in sandbox_requests(flow_env, "github", r"/issues$") if r["method"] == "POST"]
    assert len(issues) == 1
    detected = [m for m in sb_slack.messages(world, "#incidents") if "INC-" in m["text"] and ":red_circle:" in m["text"]]
    assert len(detected) == 1
    actions = {a.kind: a for a in ledger.actions_for(incident_id)}
    assert actions["rollback_deployment"].status is ActionStatus.APPLIED
    assert actions["create_ticket"].status is ActionStatus.APPLIED
    kinds = [e.kind for e in ledger.timeline(incident_id)]
    assert "diagnosis" in kinds and "assessment" in kinds
    assert summary["rca_path"] and open(summary["rca_path"]).read().startswith("## Incident:")
    if inc.severity in (Severity.P0, Severity.P1):
        assert len(sb_pagerduty.alerts(world)) == 1
