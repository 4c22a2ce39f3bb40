"""Actions the policy marks "approve" pause the mitigate flow for a person's answer in the Prefect UI."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect.flow_runs import resume_flow_run

from flows.incident import incident_response
from flows.runtime import get_ledger
from runbook.models import Severity
from runbook.sandbox import slack as sb_slack
from runbook.sandbox import vercel as sb_vercel
from runbook.sandbox.scenarios import apply_scenario
from tests.flows.test_incident_flow import open_incident, sandbox_requests

pytestmark = pytest.mark.timeout(180)

APPROVE_POLICY = """
[monitoring]
recurrence_watch = "1m"
[actions.rollback_deployment]
P0 = "approve"
P1 = "approve"
[approvals]
timeout = "20m"
"""


def _run_in_thread(incident_id: int, options: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        out["summary"] = asyncio.run(incident_response(incident_id=incident_id, options=options))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def _paused_mitigate_run(incident_id: int, timeout_s: float = 90) -> Any:
    async def find() -> Any:
        async with get_client() as client:
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    name=FlowRunFilterName(any_=[f"INC-{incident_id} mitigate"])
                )
            )
            return next((r for r in runs if r.state and r.state.is_paused()), None)

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = asyncio.run(find())
        if run is not None:
            return run
        time.sleep(0.3)
    raise AssertionError("the mitigate run never paused for approval")


@pytest.fixture
def approve_options(options, tmp_path):
    policy = tmp_path / "approve.toml"
    policy.write_text(APPROVE_POLICY)
    return options.model_copy(update={"policy_path": str(policy)})


@pytest.mark.parametrize("approve", [True, False])
def test_rollback_waits_for_the_answer(world, approve_options, flow_env, approve) -> None:
    """Approved, the rollback runs and the approver is recorded; rejected, nothing is rolled back."""
    good = sb_vercel.current_production(world)
    apply_scenario(world, "bad-deploy")
    incident_id = open_incident(approve_options, severity=Severity.P1)
    thread, out = _run_in_thread(incident_id, approve_options)
    run = _paused_mitigate_run(incident_id)
    assert not sandbox_requests(flow_env, "vercel", r"/rollback/"), "nothing runs before the answer"
    asks = [
        m["text"] for m in sb_slack.messages(world, "#incidents") if "needs approval" in m["text"]
    ]
    assert len(asks) == 1 and f"/runs/flow-run/{run.id}" in asks[0], "the chat links the form"
    resume_flow_run(
        run.id, run_input={"approve": approve, "approver": "alice", "reason": "looked at it"}
    )
    thread.join(150)
    assert not thread.is_alive()
    events = get_ledger(approve_options.ledger_url).timeline(incident_id)
    decision = next(e for e in events if e.kind == "approval")
    assert decision.actor == "alice" and decision.data["approve"] is approve
    rollbacks = sandbox_requests(flow_env, "vercel", r"/rollback/")
    if approve:
        assert len(rollbacks) == 1 and sb_vercel.current_production(world).uid == good.uid
        assert out["summary"]["resolved"] is True
    else:
        assert rollbacks == [] and out["summary"]["resolved"] is False


def test_no_answer_escalates(world, approve_options, flow_env, tmp_path) -> None:
    """With no answer before the (compressed) approval timeout, the incident escalates, nothing runs."""
    quick = tmp_path / "quick.toml"
    quick.write_text(
        APPROVE_POLICY.replace('timeout = "20m"', 'timeout = "3m"')
    )  # 1.8 s at speed 100
    opts = approve_options.model_copy(update={"policy_path": str(quick)})
    apply_scenario(world, "bad-deploy")
    incident_id = open_incident(opts, severity=Severity.P1)
    summary = asyncio.run(incident_response(incident_id=incident_id, options=opts))
    events = get_ledger(opts.ledger_url).timeline(incident_id)
    assert any(
        e.kind == "escalation" and "no answer to approve rollback_deployment" in e.message
        for e in events
    )
    assert sandbox_requests(flow_env, "vercel", r"/rollback/") == []
    assert summary["resolved"] is False
