"""The RCA document and its prevention items, from ledger records (pure: no ledger, no Prefect)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from runbook.ledger.records import Deadline
from runbook.models import (
    Action,
    ActionItem,
    ActionStatus,
    Incident,
    IncidentStatus,
    Phase,
    Severity,
    TimelineEvent,
)
from runbook.policy import build_policy, load_policy
from runbook.rca import (
    PERSON,
    new_items,
    prevention_items,
    render_rca,
    response_rows,
    timeline_lines,
)
from runbook.timings import incident_timings

T0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
SECTIONS = (
    "## Incident: ",
    "**Date:** ",
    "**Severity:** ",
    "**Duration:** ",
    "**Affected Users:** ",
    "### Timeline",
    "### Response Times",
    "### Root Cause",
    "### Impact",
    "- User impact: ",
    "- Business impact: ",
    "- Technical impact: ",
    "### Resolution",
    "### Action Items",
)


def _at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _incident(**kw: object) -> Incident:
    base: dict[str, object] = {
        "id": 7,
        "dedup_key": "HighErrorRate:web",
        "title": "High error rate on web",
        "service": "web",
        "severity": Severity.P1,
        "status": IncidentStatus.CLOSED,
        "detected_at": T0,
    }
    return Incident.model_validate(base | kw)


def _event(
    kind: str, minutes: float, message: str, phase: Phase | None = None, **kw: object
) -> TimelineEvent:
    return TimelineEvent.model_validate(
        {"id": None, "incident_id": 7, "at": _at(minutes), "kind": kind, "phase": phase}
        | {"message": message}
        | kw
    )


def _bad_deploy() -> tuple[Incident, list[TimelineEvent], list[Action], list[Deadline]]:
    inc = _incident(
        scenario="bad-deploy",
        acknowledged_at=_at(2),
        mitigated_at=_at(25),
        resolved_at=_at(40),
        diagnosis={
            "hypotheses": [
                {
                    "scenario": "bad-deploy",
                    "score": 0.9,
                    "evidence": [{"signal": "recent_deploy", "note": "dpl_bad went live"}],
                }
            ],
            "blast_radius": {"estimate": 120, "basis": "3 % of 10 req/s"},
            "findings": {"error_rate_pct": 3.0, "p95_ms": 420, "last_deploy_id": "dpl_bad"},
        },
    )
    timeline = [
        _event("alert", 0, "incident opened by alertmanager alert: errors", actor="alertmanager"),
        _event("phase_started", 0.1, "detect started", Phase.DETECT),
        _event("phase_ended", 3, "detect ended", Phase.DETECT),
        _event("phase_started", 3, "triage started", Phase.TRIAGE),
        _event("diagnosis", 10, "hypothesis: bad-deploy", Phase.TRIAGE),
        _event("phase_ended", 20, "triage ended", Phase.TRIAGE),
        _event("escalation", 16, "triage past its deadline", Phase.TRIAGE),
        _event(
            "approval",
            21,
            "rollback_deployment approved by alice: error spike after deploy",
            Phase.MITIGATE,
            actor="alice",
            data={"approve": True, "reason": "error spike after deploy"},
        ),
        _event("phase_started", 20, "mitigate started", Phase.MITIGATE),
        _event("phase_ended", 30, "mitigate ended", Phase.MITIGATE),
    ]
    timeline = [e.model_copy(update={"id": i + 1}) for i, e in enumerate(timeline)]
    actions = [
        Action(
            id=1,
            incident_id=7,
            idempotency_key="k1",
            kind="create_ticket",
            target="incident-INC-7",
            status=ActionStatus.APPLIED,
            created_at=_at(1),
        ),
        Action(
            id=2,
            incident_id=7,
            idempotency_key="k2",
            kind="rollback_deployment",
            target="prj_web",
            status=ActionStatus.APPLIED,
            actor="runbook",
            created_at=_at(22),
        ),
    ]
    deadlines = [
        Deadline(id=1, incident_id=7, phase="detect", due_at=_at(5)),
        Deadline(id=2, incident_id=7, phase="triage", due_at=_at(15)),
        Deadline(id=3, incident_id=7, phase="mitigate", due_at=_at(60)),
    ]
    return inc, timeline, actions, deadlines


def _section(text: str, header: str) -> list[str]:
    body = text.split(header + "\n", 1)[1].split("\n### ", 1)[0]
    return [line for line in body.splitlines() if line.strip()]


def test_every_template_section_is_present_and_the_timeline_is_every_record_in_order() -> None:
    """A resolved incident's RCA has every section of the runbook's template plus response times;
    its timeline is each event and each action once, in time order, with who did it."""
    inc, timeline, actions, deadlines = _bad_deploy()
    items = [
        ActionItem(incident_id=7, title="Add a canary", owner="Engineering Lead", due_at=_at(99))
    ]
    text = render_rca(
        inc,
        timeline,
        actions,
        items,
        _at(60),
        timings=incident_timings(inc, timeline, deadlines),
        policy=load_policy(),
    )
    positions = [text.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    lines = _section(text, "### Timeline")
    assert len(lines) == len(timeline) + len(actions)
    expected_order = sorted(
        [(e.at, 0, e.message) for e in timeline] + [(a.created_at, 1, a.kind) for a in actions],
        key=lambda t: (t[0], t[1]),
    )
    for line, (at, _, what) in zip(lines, expected_order, strict=True):
        assert line.startswith(f"- {at:%H:%M:%S} - ") and what in line
    assert "[by alice]" in next(line for line in lines if "approved by alice" in line)
    assert "error spike after deploy" in text
    assert "action rollback_deployment on prj_web: applied [by runbook]" in text
    assert "**Duration:** 40m" in text and "~120 users" in text
    assert "bad-deploy" in _section(text, "### Root Cause")[0]
    # what fixed it: the rollback, not the ticket
    assert (
        _section(text, "### Resolution")[0]
        == "- rollback_deployment on prj_web: applied (by runbook)"
    )
    assert "create_ticket" not in "".join(_section(text, "### Resolution"))
    assert "- [ ] Add a canary (owner: Engineering Lead" in text
    assert "_missing:" not in text


def test_response_times_table_compares_with_policy_and_deadlines() -> None:
    """TTA/TTM/TTR against the P1 response time, mitigate deadline and estimate; a phase ending past
    its deadline is missed, one before is met."""
    inc, timeline, actions, deadlines = _bad_deploy()
    rows = {
        r.measure.split(" (")[0]: r
        for r in response_rows(
            incident_timings(inc, timeline, deadlines), load_policy(), inc.severity
        )
    }
    assert rows["Time to acknowledge"].took == "2m" and rows["Time to acknowledge"].verdict == "met"
    assert rows["Time to mitigate"].took == "25m" and "1h" in rows["Time to mitigate"].target
    assert rows["Time to resolve"].verdict == "met"
    assert rows["Phase detect"].verdict == "met"
    assert rows["Phase triage"].verdict == "**missed**"  # ended at +20m, due at +15m
    fast = response_rows(
        incident_timings(inc, timeline, deadlines), load_policy(), inc.severity, speed=100
    )
    assert fast[0].verdict == "**missed**"  # 2 min against 15 min / 100


def test_incident_with_no_records_renders_every_section_marked_missing() -> None:
    """An open incident with no timeline, no diagnosis and no deadlines renders, never crashes:
    every section is present, gaps are "_missing: ..._", and the human parts are marked."""
    inc = _incident(status=IncidentStatus.DETECTED, title="Nothing known")
    text = render_rca(
        inc, [], [], [], _at(5), timings=incident_timings(inc, [], []), policy=load_policy()
    )
    for s in SECTIONS:
        assert s in text
    assert _section(text, "### Timeline") == [
        "- _missing: timeline events (none recorded in the ledger)_"
    ]
    assert "**Duration:** _missing: resolution time" in text
    assert "_missing: diagnosis" in text and "_missing: phase deadlines" in text
    assert text.count(PERSON) >= 3  # root cause, business impact, resolution, action items
    # and without timings or policy at all
    assert "_missing: response times" in render_rca(inc, [], [], [], _at(5))


def test_prevention_items_per_scenario_with_policy_owner_and_due() -> None:
    """Each scenario's diagnosis gives its prevention items; owner and due come from the policy."""
    now = _at(60)
    policy = build_policy({"rca": {"owners": {"db-degradation": "DBA"}, "action_item_due": "2d"}})
    inc, timeline, actions, _ = _bad_deploy()
    (deploy, *_) = prevention_items(inc, timeline, actions, policy, now)
    assert "pre-deploy check" in deploy.title and "prj_web" in deploy.title
    assert deploy.owner == "Engineering Lead" and deploy.due == now + timedelta(days=2)

    db = _incident(scenario="db-degradation", diagnosis={"findings": {"long_running_queries": 2}})
    hint = _event(
        "recommendation",
        30,
        "CREATE INDEX ...",
        Phase.MITIGATE,
        data={"table": "public.orders", "column": "customer_id"},
    )
    titles = [i.title for i in prevention_items(db, [hint], [], policy, now)]
    assert titles[0] == "Add index on public.orders (customer_id) in a schema migration"
    assert any("statement_timeout" in t for t in titles)
    assert {i.owner for i in prevention_items(db, [hint], [], policy, now)} == {"DBA"}

    edge = _incident(
        scenario="edge-timeouts", diagnosis={"findings": {"function_timeouts": {"checkout": 9}}}
    )
    assert [i.title for i in prevention_items(edge, [], [], policy, now)] == [
        "Add a timeout and a circuit breaker to function checkout"
    ]
    auth = _incident(scenario="auth-failure", diagnosis={"findings": {}})
    assert "key expiry" in prevention_items(auth, [], [], policy, now)[0].title
    assert prevention_items(_incident(), [], [], policy, now) == []  # no hypothesis: nothing


def test_a_rerun_adds_no_item_twice() -> None:
    """Items whose title is already an action item (any case, spacing) are not proposed again."""
    inc, timeline, actions, _ = _bad_deploy()
    proposed = prevention_items(inc, timeline, actions, load_policy(), _at(60))
    stored = [ActionItem(incident_id=7, title=re.sub(" ", "  ", proposed[0].title.upper()))]
    assert new_items(proposed, stored) == proposed[1:]
    assert new_items(proposed, [ActionItem(incident_id=7, title=p.title) for p in proposed]) == []


def test_timeline_lines_order_events_and_actions_and_keep_one_line_each() -> None:
    """Events and actions merge by time (an event first on a tie); a multi-line message stays one
    line."""
    e = _event("note", 5, "two\nlines")
    a = Action(
        id=3, incident_id=7, idempotency_key="k", kind="page_oncall", created_at=_at(5), actor="pd"
    )
    early = Action(
        id=4, incident_id=7, idempotency_key="k2", kind="post_message", created_at=_at(1)
    )
    lines = timeline_lines([e], [a, early])
    assert [x.source for x in lines] == ["action", "event", "action"]
    assert lines[1].text == "note: two lines [by runbook]" and lines[2].text.endswith("[by pd]")
