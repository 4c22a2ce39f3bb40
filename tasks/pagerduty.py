"""PagerDuty Events v2: page on-call for P0/P1 and resolve the page. The incident id is the dedup key."""

from __future__ import annotations

from typing import Any

from prefect import task

from blocks import PagerDuty
from runbook.models import Severity
from tasks._retry import VENDOR_TASK
from tasks.context import ActionContext

PD_SEVERITY = {
    Severity.P0: "critical",
    Severity.P1: "error",
    Severity.P2: "warning",
    Severity.P3: "info",
}


def dedup_key(incident_id: int) -> str:
    return f"INC-{incident_id}"


@task(name="page-oncall", **VENDOR_TASK)
async def page_oncall(
    ctx: ActionContext,
    pagerduty: PagerDuty,
    summary: str,
    severity: Severity,
    service: str,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Trigger a PagerDuty alert for the incident, at most once (and PagerDuty dedups by key too)."""
    key = dedup_key(ctx.incident_id)

    async def apply() -> dict[str, Any]:
        async with pagerduty.get_client() as client:
            event = await client.trigger(
                summary,
                service or pagerduty.default_source,
                PD_SEVERITY[severity],
                key,
                component=service or None,
                custom_details=details,
            )
        return {"dedup_key": event.dedup_key, "status": event.status}

    outcome = await ctx.act(
        "page_oncall",
        f"pagerduty:{key}",
        {"summary": summary, "severity": PD_SEVERITY[severity]},
        apply,
    )
    return {"status": outcome.status.value, "already_done": outcome.already_done, "dedup_key": key}


@task(name="resolve-page", **VENDOR_TASK)
async def resolve_page(ctx: ActionContext, pagerduty: PagerDuty) -> dict[str, Any]:
    """Resolve the incident's PagerDuty alert, once."""
    key = dedup_key(ctx.incident_id)

    async def apply() -> dict[str, Any]:
        async with pagerduty.get_client() as client:
            event = await client.resolve(key)
        return {"dedup_key": event.dedup_key, "status": event.status}

    outcome = await ctx.act("resolve_page", f"pagerduty:{key}", {"dedup_key": key}, apply)
    return {"status": outcome.status.value, "already_done": outcome.already_done}
