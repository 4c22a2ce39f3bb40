"""The Prefect UI in a real browser: a person declares an incident from the incident deployment's run
form, and approves a paused rollback from the flow run's resume form.

The UI is Prefect's classic (Vue) UI served by `prefect server start`; its schema form's labels are not
tied to their inputs, so a field is found by its visible label text (``field``).
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType

from runbook.ledger import open_ledger
from runbook.sandbox import slack as sb_slack
from runbook.sandbox import vercel as sb_vercel
from runbook.sandbox.scenarios import apply_scenario
from tests.browser.conftest import INCIDENT_DEPLOYMENT, UIWorld

pytestmark = pytest.mark.timeout(300)  # the first test also starts the server (~15-60 s)


def field(page: Any, label: str) -> Any:
    """The input area of the schema-form property whose label reads exactly ``label``."""
    return page.locator(
        "xpath=//div[contains(concat(' ', normalize-space(@class), ' '), ' schema-form-property ')]"
        "[div[contains(@class, 'p-label__header')]//span[contains(@class, "
        f"'schema-form-property__label') and normalize-space()='{label}']]"
        "/div[contains(@class, 'p-label__body')]"
    )


def choose(page: Any, label: str, option: str) -> None:
    """Pick ``option`` in the select of the property ``label`` (the select opens from the keyboard)."""
    field(page, label).get_by_role("button").focus()
    page.keyboard.press("ArrowDown")
    page.get_by_role("option", name=option, exact=True).click()


def runs_declaring(title: str) -> list[Any]:
    """The ids of the incident deployment's runs whose declaration has this title."""
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(INCIDENT_DEPLOYMENT)
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id]))
        )
    return [r.id for r in runs if (r.parameters.get("declaration") or {}).get("title") == title]


def sandbox_requests(ui: UIWorld, vendor: str, path: str) -> list[dict[str, Any]]:
    """The requests the sandbox received for ``vendor`` whose path matches ``path``."""
    params = {"vendor": vendor, "path": path}
    return list(httpx.get(f"{ui.sandbox.url}/_sandbox/requests", params=params, timeout=5).json())


def wait_final(run_id: Any, timeout_s: float = 150) -> FlowRun:
    """Poll the Prefect API until the flow run is in a final state (or fail after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(run_id)
            if run.state is not None and run.state.is_final():
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"flow run {run_id} still {run.state} after {timeout_s} s")
            time.sleep(0.5)


def test_declare_an_incident_from_the_run_form(ui: UIWorld, page: Any) -> None:
    """A person finds the incident deployment in the UI, fills the declaration (title, service,
    severity) in its custom run form and runs it: the run served by `runbook serve` completes, the
    incident is in the ledger as declared, and the bad deploy behind it is rolled back."""
    from playwright.sync_api import expect

    world = ui.world
    good = sb_vercel.current_production(world)
    apply_scenario(world, "bad-deploy")
    title = f"Checkout errors after deploy {uuid.uuid4().hex[:6]}"

    page.goto(f"{ui.ui_url}/deployments")
    row = page.get_by_role("row").filter(has_text="incident-response")
    row.get_by_role("link", name="runbook", exact=True).click()
    page.wait_for_url("**/deployments/deployment/**")
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run", exact=True).click()
    page.wait_for_url("**/run*")

    page.get_by_role("button", name="Declaration", exact=True).click()
    field(page, "Title").locator("textarea").fill(title)
    field(page, "Service").locator("textarea").fill("web")
    choose(page, "Severity", "P1")
    page.get_by_role("button", name="Options", exact=True).click()
    field(page, "Speed (Optional)").locator("input").fill("100")  # a drill's compressed clock
    page.get_by_role("button", name="Submit", exact=True).click()

    expect(page.get_by_text("scheduled to start").first).to_be_visible()  # the run was created

    (run_id,) = runs_declaring(title)
    page.goto("about:blank")  # an open run page re-renders as the run goes: costly on 2 cores
    run = wait_final(run_id)
    page.goto(f"{ui.ui_url}/runs/flow-run/{run_id}")
    expect(page.locator(".page-heading-flow-run__meta .state-badge")).to_have_text("Completed")
    log = ui.serve_log.read_text(errors="replace")[-3000:]
    assert run.state is not None and run.state.is_completed(), f"{run.state}\n{log}"
    assert run.parameters["declaration"] == {
        "title": title,
        "service": "web",
        "severity": "P1",
        "description": "",
        "suspected_scenario": None,
    }

    with open_ledger(ui.ledger_url) as ledger:
        (incident,) = [i for i in ledger.list_incidents() if i.title == title]
        timeline = "\n".join(f"{e.kind}: {e.message}" for e in ledger.timeline(incident.id))
    assert incident.service == "web" and incident.severity.value == "P1", timeline
    assert incident.resolved_at is not None, timeline
    now_serving = sb_vercel.current_production(world)
    assert good is not None and now_serving is not None and now_serving.uid == good.uid


APPROVE_POLICY = """
[monitoring]
recurrence_watch = "1m"
[actions.rollback_deployment]
P1 = "approve"
P2 = "approve"
[approvals]
timeout = "4h"
"""  # 144 s at speed 100: time for a person (the browser) to answer on a busy machine


def paused_run(timeout_s: float = 120) -> FlowRun:
    """The one paused flow run on the server (the mitigate phase waiting for its approval)."""
    state = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(state=state))
            if runs:
                (run,) = runs
                return run
            time.sleep(0.5)
    raise AssertionError(f"no flow run paused for approval within {timeout_s} s")


def test_approve_a_paused_rollback_from_the_resume_form(ui: UIWorld, page: Any, tmp_path) -> None:
    """A P2 bad deploy whose rollback needs approval pauses its mitigate run; a person follows the
    chat's link to that run in the UI, clicks Resume and approves with a reason: the run resumes, the
    rollback is applied once, and the approver and reason are in the ledger's timeline."""
    from playwright.sync_api import expect

    world = ui.world
    good = sb_vercel.current_production(world)
    apply_scenario(world, "bad-deploy")
    policy = tmp_path / "approve.toml"
    policy.write_text(APPROVE_POLICY)
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    title = f"Errors after deploy {uuid.uuid4().hex[:6]}"
    params = {
        "declaration": {"title": title, "service": "web", "severity": "P2"},
        "options": {"speed": 100, "policy_path": str(policy), "ledger_url": ledger_url},
    }
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(INCIDENT_DEPLOYMENT)
        parent = client.create_flow_run_from_deployment(dep.id, parameters=params)

    mitigate = paused_run()
    assert mitigate.name.endswith(" mitigate"), mitigate.name
    assert sandbox_requests(ui, "vercel", r"/rollback/") == [], "nothing runs before the answer"
    asks = [
        m["text"] for m in sb_slack.messages(world, "#incidents") if "needs approval" in m["text"]
    ]
    links = re.findall(r"https?://[^\s>|]+/runs/flow-run/[0-9a-f-]+", " ".join(asks))
    assert links == [f"{ui.ui_url}/runs/flow-run/{mitigate.id}"], asks

    page.goto(links[0])  # as the person on call follows the chat's link
    badge = page.locator(".page-heading-flow-run__meta .state-badge")
    expect(badge).to_have_text("Paused")
    page.get_by_role("button", name="Resume", exact=True).click()
    form = page.get_by_role("dialog").filter(has_text="Resume Flow Run")
    switch = field(form, "Approve").get_by_role("switch")
    switch.click()
    expect(switch).to_have_attribute("aria-checked", "true")
    field(form, "Approver").locator("textarea").fill("alice")
    field(form, "Reason (Optional)").locator("textarea").fill("bad deploy confirmed in triage")
    form.get_by_role("button", name="Submit", exact=True).click()
    expect(form).to_be_hidden()
    expect(badge).not_to_have_text("Paused")  # resumed
    page.goto("about:blank")

    run = wait_final(parent.id)
    log = ui.serve_log.read_text(errors="replace")[-3000:]
    assert run.state is not None and run.state.is_completed(), f"{run.state}\n{log}"
    assert wait_final(mitigate.id).state.is_completed()  # type: ignore[union-attr]
    with open_ledger(ledger_url) as ledger:
        (incident,) = ledger.list_incidents()
        events = ledger.timeline(incident.id)
    decision = next(e for e in events if e.kind == "approval")
    assert decision.actor == "alice" and decision.data["approve"] is True
    assert decision.data["reason"] == "bad deploy confirmed in triage"
    assert incident.title == title and incident.resolved_at is not None
    assert len(sandbox_requests(ui, "vercel", r"/rollback/")) == 1
    now_serving = sb_vercel.current_production(world)
    assert good is not None and now_serving is not None and now_serving.uid == good.uid
