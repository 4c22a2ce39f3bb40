"""Post-incident reviews against the Prefect test server: scheduling on resolution (checked through the
API), reminders only about open items, nothing sent when all is done, cancellation, overdue escalation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowFilter,
    FlowFilterName,
)

import flows.reviews as reviews_flow
from flows.digest import digest
from flows.reviews import REVIEW_DEPLOYMENT, review, schedule_reviews
from flows.runtime import Options, build_runtime, get_ledger
from flows.serve import build_deployments
from runbook.clock import utcnow
from runbook.models import IncidentStatus, Severity
from runbook.sandbox import slack as sb_slack
from tests.flows.conftest import TEST_POLICY

pytestmark = pytest.mark.timeout(90)
TEAM = "team@example.com"


async def _delete_review_runs() -> None:
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["review"]))
        )
        for run in runs:
            await client.delete_flow_run(run.id)


@pytest.fixture
async def review_deployment(flow_env: Any) -> AsyncIterator[Any]:
    """The review/runbook deployment as `runbook serve` applies it, with no review runs yet (incident
    ids restart at 1 in each test's ledger, and Prefect keys runs by INC-<id>-review-<key>)."""
    (dep,) = [d for d in build_deployments() if d.flow_name == "review"]
    await dep.aapply()
    await _delete_review_runs()
    async with get_client() as client:
        yield await client.read_deployment_by_name(REVIEW_DEPLOYMENT)
    await _delete_review_runs()


@pytest.fixture
def review_options(options: Options, tmp_path: Path) -> Options:
    """The flow tests' options, with a policy that emails the team the reminders."""
    policy = tmp_path / "review-policy.toml"
    policy.write_text(TEST_POLICY + f'\n[routing]\nteam_email_to = ["{TEAM}"]\n')
    return options.model_copy(update={"policy_path": str(policy)})


def _resolved_incident(options: Options, title: str = "Checkout errors") -> int:
    ledger = get_ledger(options.ledger_url)
    inc = ledger.declare_incident(title, Severity.P2, service="web")
    ledger.transition(inc.id, IncidentStatus.RESOLVED, reason="fixed")
    return inc.id


def _review_posts(world: Any) -> list[str]:
    return [m["text"] for m in sb_slack.messages(world, "#incidents") if "review" in m["text"]]


async def test_resolution_schedules_three_review_runs_and_re_resolution_none(
    world, review_options, review_deployment
) -> None:
    """Scheduling on resolution creates exactly three Scheduled runs of review/runbook (24h, 48h, 1w
    after resolution, compressed by speed), and a second call after reopening and resolving again
    adds none."""
    incident_id = _resolved_incident(review_options)
    ledger = get_ledger(review_options.ledger_url)
    resolved_at = ledger.get_incident(incident_id).resolved_at
    assert resolved_at is not None
    rt = await build_runtime(review_options)
    first = await schedule_reviews(rt, incident_id)
    ledger.transition(incident_id, IncidentStatus.TRIAGING, reason="it came back")
    ledger.transition(incident_id, IncidentStatus.RESOLVED, reason="fixed again")
    again = await schedule_reviews(rt, incident_id)

    async with get_client() as client:
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[review_deployment.id]))
        )
    scheduled = [r for r in runs if r.state is not None and r.state.is_scheduled()]
    assert len(scheduled) == 3, [(r.name, r.state) for r in runs]
    by_key = {r.parameters["review"]: r for r in scheduled}
    speed = review_options.speed
    for key, after in (("24h", 24), ("48h", 48), ("1w", 168)):
        run = by_key[key]
        assert run.idempotency_key == f"INC-{incident_id}-review-{key}"
        assert run.parameters["incident_id"] == incident_id
        want = resolved_at + timedelta(hours=after) / speed
        assert run.expected_start_time is not None
        assert abs((run.expected_start_time - want).total_seconds()) < 1, key
    assert [s.created for s in first] == [True, True, True]
    assert [s.created for s in again] == [False, False, False]
    assert {s.flow_run_id for s in again} == {str(r.id) for r in scheduled}


async def test_reminders_cover_open_items_only_and_stop_when_all_is_done(
    world, review_options, review_deployment, mail_sink
) -> None:
    """The 24h review reminds (Slack and email) about its open items only; ticking every item from the
    UI path (done=[...]) cancels the scheduled runs through the Prefect API, and a review run after
    that sends nothing at all."""
    sink, _ = mail_sink
    incident_id = _resolved_incident(review_options)
    rt = await build_runtime(review_options)
    scheduled = {s.review_key: s for s in await schedule_reviews(rt, incident_id)}
    ledger = get_ledger(review_options.ledger_url)
    ledger.tick_review_items(incident_id, [("24h", "rca_drafted")], by="ann")
    mails_before = len(sink.messages)

    first = await review(incident_id=incident_id, review="24h", options=review_options)
    assert first["open"] == ["postmortem_scheduled", "responders_invited", "timeline_ready"]
    assert first["sent"] == ["slack", "email"]
    (post,) = _review_posts(world)
    assert "Invite all responders" in post and "Draft initial RCA" not in post
    assert "Complete postmortem document" not in post  # a 48h item: not this review's
    assert len(sink.messages) == mails_before + 1 and sink.messages[-1]["to"] == [TEAM]

    every = [i.key for r in rt.policy.reviews for i in r.checklist]
    ticked = await review(incident_id=incident_id, done=every, by="ann", options=review_options)
    assert ticked["everything_done"] and sorted(ticked["cancelled"]) == ["1w", "48h"]
    async with get_client() as client:
        for key in ("48h", "1w"):
            run_id = scheduled[key].flow_run_id
            assert run_id is not None
            state = (await client.read_flow_run(run_id)).state
            assert state is not None and state.is_cancelled(), key

    quiet = await review(incident_id=incident_id, review="1w", options=review_options)
    assert quiet["sent"] == [] and quiet["open"] == [] and quiet["overdue"] == []
    assert len(_review_posts(world)) == 1 and len(sink.messages) == mails_before + 1
    kinds = [e.kind for e in ledger.timeline(incident_id)]
    assert "reviews_cancelled" in kinds and "review_items_done" in kinds


async def test_overdue_action_item_escalates_to_the_owners_next_level(
    world, review_options, flow_env
) -> None:
    """An action item past its due time and not done is escalated from its owner (Engineering Lead)
    to the next level of the chain (DevOps/SRE), on Slack and in the timeline, even when the review's
    own checklist is done; an item not yet due is not."""
    incident_id = _resolved_incident(review_options)
    ledger = get_ledger(review_options.ledger_url)
    late = ledger.add_action_item(
        incident_id, "Add index on orders.customer_id", owner="Engineering Lead",
        due_at=utcnow() - timedelta(hours=2),
    )  # fmt: skip
    ledger.add_action_item(
        incident_id, "Add a circuit breaker", owner="Engineering Lead",
        due_at=utcnow() + timedelta(days=3),
    )  # fmt: skip
    pairs = [("1w", k) for k in ("action_items_started", "monitoring_updated")]
    pairs += [("1w", k) for k in ("learnings_shared", "runbook_updated")]
    ledger.tick_review_items(incident_id, pairs, by="ann")

    result = await review(incident_id=incident_id, review="1w", options=review_options)
    assert result["open"] == [] and result["overdue"] == [late.id]
    posts = [m["text"] for m in sb_slack.messages(world, "#incidents")]
    alerts = [m for m in posts if ":rotating_light:" in m]
    assert len(alerts) == 1 and "escalated to DevOps/SRE" in alerts[0]
    assert "orders.customer_id" in alerts[0] and "circuit breaker" not in alerts[0]
    (esc,) = [e for e in ledger.timeline(incident_id) if e.kind == "escalation"]
    assert esc.data["role"] == "DevOps/SRE" and esc.data["action_item_id"] == late.id
    assert result["cancelled"] == []  # action items are open: the reviews go on


async def test_missing_deployment_is_a_note_not_a_crash(
    world, review_options, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the review deployment (an in-process drill), scheduling returns nothing and leaves a
    timeline note saying how to deploy it."""
    monkeypatch.setattr(reviews_flow, "REVIEW_DEPLOYMENT", "review/not-deployed")
    incident_id = _resolved_incident(review_options)
    rt = await build_runtime(review_options)
    assert await schedule_reviews(rt, incident_id) == []
    notes = [e.message for e in get_ledger(review_options.ledger_url).timeline(incident_id)]
    assert any("no review/not-deployed deployment" in n for n in notes), notes
    assert get_ledger(review_options.ledger_url).review_runs(incident_id) == []


async def test_digest_emails_and_returns_the_daily_summary(
    world, review_options, mail_sink, flow_env
) -> None:
    """The digest flow emails the team the last day's incidents by severity with the open action
    items (overdue marked), and returns the same text and numbers."""
    sink, _ = mail_sink
    incident_id = _resolved_incident(review_options, title="Slow checkout")
    ledger = get_ledger(review_options.ledger_url)
    ledger.add_action_item(
        incident_id, "Add index on orders.customer_id", owner="Engineering Lead",
        due_at=utcnow() - timedelta(hours=1),
    )  # fmt: skip
    before = len(sink.messages)
    out = await digest(options=review_options)
    assert out["sent_to"] == [TEAM] and out["summary"]["by_severity"] == {"P2": 1}
    assert f"INC-{incident_id} #1 Add index on orders.customer_id" in out["markdown"]
    assert "(overdue)" in out["markdown"]
    assert len(sink.messages) == before + 1
    mail = sink.messages[-1]
    assert mail["to"] == [TEAM] and "Subject: Incidents" in mail["data"]
    assert "orders.customer_id" in mail["data"]
