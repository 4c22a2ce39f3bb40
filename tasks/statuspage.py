"""Atlassian Statuspage: the customer-facing incident, opened once and resolved at the end."""

from __future__ import annotations

from typing import Any

from prefect import task

from blocks import Statuspage
from tasks._retry import VENDOR_TASK
from tasks.context import ActionContext


def status_name(incident_id: int, title: str) -> str:
    """The status-page title; its ``[INC-42]`` prefix is how a retry finds the incident it opened."""
    return f"[INC-{incident_id}] {title}"


def _components(page: Statuspage, service: str, status: str) -> dict[str, str] | None:
    component = page.component_map.get(service)
    return {component: status} if component else None


@task(name="open-status-incident", **VENDOR_TASK)
async def open_status_incident(
    ctx: ActionContext, page: Statuspage, title: str, service: str, body: str, component_status: str
) -> dict[str, Any]:
    """Open the public incident once: look for ``[INC-n]`` first, since creates are not idempotent."""
    name = status_name(ctx.incident_id, title)

    async def apply() -> dict[str, Any]:
        async with page.get_client() as client:
            existing = await client.find_open_incident(f"[INC-{ctx.incident_id}]")
            inc = existing or await client.create_incident(
                name, "investigating", body, components=_components(page, service, component_status)
            )
        return {"id": inc.id, "shortlink": inc.shortlink, "found_existing": existing is not None}

    outcome = await ctx.act(
        "open_status_incident", f"statuspage:{page.page_id}", {"name": name}, apply
    )
    return {"status": outcome.status.value, "already_done": outcome.already_done, **outcome.result}


@task(name="update-status-incident", **VENDOR_TASK)
async def update_status_incident(
    ctx: ActionContext,
    page: Statuspage,
    status_incident_id: str,
    status: str,
    body: str,
    service: str,
    component_status: str | None = None,
) -> dict[str, Any]:
    """Post one update (investigating/identified/monitoring/resolved), once per status."""

    async def apply() -> dict[str, Any]:
        components = _components(page, service, component_status) if component_status else None
        async with page.get_client() as client:
            inc = await client.update_incident(
                status_incident_id, status=status, body=body, components=components
            )
        return {"id": inc.id, "status": inc.status}

    outcome = await ctx.act(
        "update_status_incident",
        f"statuspage:{status_incident_id}",
        {"status": status, "body": body[:300]},
        apply,
        key=ctx.key("statuspage", status_incident_id, status),
    )
    return {"status": outcome.status.value, "already_done": outcome.already_done}
