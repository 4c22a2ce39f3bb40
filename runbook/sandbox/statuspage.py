"""The sandbox's Atlassian Statuspage: one page, its components and incidents.

Paths are Statuspage's own (mounted under ``/statuspage``): ``POST /v1/pages/{page}/incidents``,
``PATCH|PUT|GET /v1/pages/{page}/incidents/{id}``, ``GET /v1/pages/{page}/incidents/unresolved``,
``GET /v1/pages/{page}/components``, ``PATCH|PUT /v1/pages/{page}/components/{id}``.

Credential: ``Authorization: OAuth <world.token_for(NAME)>`` (or ``?api_key=``), else 401
``{"error": "Could not authenticate"}``. About one request a second per key after a burst of 10
(a status update is a handful of calls at once), then ``StatuspageState.limit_status`` (420,
Statuspage's own, or 429) with a Retry-After saying when the next call may pass.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from runbook.sandbox.core import World
from runbook.sandbox.slack import RateLimit

NAME = "statuspage"
PAGE_ID = "sbxpage"
COMPONENTS = {
    "Web app": "sbxcmpweb001",
    "API": "sbxcmpapi002",
    "Authentication": "sbxcmpauth03",
    "Edge functions": "sbxcmpedge04",
}
INCIDENT_STATUSES = ("investigating", "identified", "monitoring", "resolved")
COMPONENT_STATUSES = (
    "operational",
    "degraded_performance",
    "partial_outage",
    "major_outage",
    "under_maintenance",
)
_IMPACT = {"major_outage": "critical", "partial_outage": "major", "degraded_performance": "minor"}
_ID = "abcdefghijklmnopqrstuvwxyz0123456789"

Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class Component:
    id: str
    name: str
    status: str = "operational"
    page_id: str = PAGE_ID
    description: str | None = None
    position: int = 0
    created_at: str = ""
    updated_at: str = ""


@dataclass
class Incident:
    id: str
    name: str
    status: str
    impact: str
    shortlink: str
    created_at: str
    updated_at: str
    page_id: str = PAGE_ID
    resolved_at: str | None = None
    monitoring_at: str | None = None
    component_ids: list[str] = field(default_factory=list)
    incident_updates: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Page:
    id: str
    components: dict[str, Component] = field(default_factory=dict)
    incidents: dict[str, Incident] = field(default_factory=dict)


@dataclass
class StatuspageState:
    pages: dict[str, Page] = field(default_factory=dict)
    rate: RateLimit = field(default_factory=lambda: RateLimit(per_second=1.0, burst=10))
    limit_status: int = 420


def init_state(world: World) -> None:
    """Page ``sbxpage`` with Web app, API, Authentication and Edge functions, all operational."""
    now = world.clock.now().isoformat()
    page = Page(id=PAGE_ID)
    for i, (name, cid) in enumerate(COMPONENTS.items(), start=1):
        page.components[cid] = Component(cid, name, position=i, created_at=now, updated_at=now)
    world.state[NAME] = StatuspageState(pages={PAGE_ID: page})


def _state(world: World) -> StatuspageState:
    st: StatuspageState = world.state[NAME]
    return st


def page(world: World, page_id: str = PAGE_ID) -> Page:
    """A page's state (components and incidents)."""
    return _state(world).pages[page_id]


def _error(status: int, message: str | list[str]) -> JSONResponse:
    return JSONResponse({"error": message}, status)


def error_response(status: int, message: str, retry_after: float | None = None) -> Response:
    """Statuspage's ``{"error": ...}`` body; rate limits (420/429) carry Retry-After when given."""
    headers = None
    if status in (420, 429) and retry_after:
        headers = {"Retry-After": str(max(1, math.ceil(retry_after)))}
    return JSONResponse({"error": message}, status, headers=headers)


def _incident_json(page: Page, incident: Incident) -> dict[str, Any]:
    data = asdict(incident)
    data.pop("component_ids")
    data["components"] = [asdict(page.components[c]) for c in incident.component_ids]
    return data


def _new_id(world: World, n: int = 12) -> str:
    return "".join(world.rng.choice(_ID) for _ in range(n))


def _component_changes(page: Page, body: dict[str, Any]) -> dict[str, str] | JSONResponse:
    """The ``components`` {id: status} map of an incident body, checked against the page."""
    changes = body.get("components") or {}
    if not isinstance(changes, dict):
        return _error(422, "components must be a map of component id to status")
    ids = body.get("component_ids") or []
    if not isinstance(ids, list):
        return _error(422, "component_ids must be a list")
    for cid in [*changes, *ids]:
        if cid not in page.components:
            return _error(422, f"Component {cid} does not exist on this page")
    for status in changes.values():
        if status not in COMPONENT_STATUSES:
            return _error(422, f"Component status {status!r} is not included in the list")
    return {**{c: page.components[c].status for c in ids}, **changes}


def _apply_update(
    world: World, page: Page, incident: Incident, body: dict[str, Any], changes: dict[str, str]
) -> None:
    now = world.clock.now().isoformat()
    affected = []
    for cid, status in changes.items():
        comp = page.components[cid]
        affected.append(
            {"code": cid, "name": comp.name, "old_status": comp.status, "new_status": status}
        )
        comp.status, comp.updated_at = status, now
        if cid not in incident.component_ids:
            incident.component_ids.append(cid)
    if "name" in body and body["name"]:
        incident.name = str(body["name"])
    status = body.get("status") or incident.status
    if status != incident.status or body.get("body") or affected or not incident.incident_updates:
        incident.incident_updates.insert(
            0,
            {
                "id": _new_id(world),
                "incident_id": incident.id,
                "status": status,
                "body": str(body.get("body") or ""),
                "created_at": now,
                "display_at": now,
                "affected_components": affected,
                "deliver_notifications": bool(body.get("deliver_notifications", True)),
            },
        )
    incident.status, incident.updated_at = status, now
    if status == "resolved" and incident.resolved_at is None:
        incident.resolved_at = now
    if status == "monitoring" and incident.monitoring_at is None:
        incident.monitoring_at = now
    worst = [page.components[c].status for c in incident.component_ids]
    impact = body.get("impact_override") or next(
        (
            _IMPACT[s]
            for s in ("major_outage", "partial_outage", "degraded_performance")
            if s in worst
        ),
        incident.impact,
    )
    incident.impact = str(impact)


async def _body(request: Request, key: str) -> dict[str, Any] | JSONResponse:
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError:
        return _error(400, "The request body is not valid JSON")
    inner = data.get(key) if isinstance(data, dict) else None
    if not isinstance(inner, dict):
        return _error(400, f"param is missing or the value is empty: {key}")
    return inner


def routes(world: World) -> list[BaseRoute]:
    """The page, incident and component endpoints."""

    def guarded(handler: Callable[[Request, Page], Awaitable[Response]]) -> Handler:
        # auth, then the per-key rate limit, then the page: the order Statuspage checks them in
        async def wrapped(request: Request) -> Response:
            header = request.headers.get("authorization", "")
            key = header[6:].strip() if header.lower().startswith("oauth ") else None
            key = key or request.query_params.get("api_key")
            if key != world.token_for(NAME):
                return _error(401, "Could not authenticate")
            st = _state(world)
            wait = st.rate.take(key, world.clock.now())
            if wait is not None:
                return error_response(
                    st.limit_status, "Rate limit exceeded. Please slow down.", wait
                )
            found = st.pages.get(request.path_params["page_id"])
            if found is None:
                return _error(404, "The page could not be found")
            return await handler(request, found)

        return wrapped

    def incident_of(request: Request, pg: Page) -> Incident | None:
        return pg.incidents.get(request.path_params["incident_id"])

    async def create_incident(request: Request, pg: Page) -> Response:
        body = await _body(request, "incident")
        if isinstance(body, JSONResponse):
            return body
        if not str(body.get("name") or "").strip():
            return _error(422, "Name can't be blank")
        status = body.get("status") or "investigating"
        if status not in INCIDENT_STATUSES:
            return _error(422, f"Status {status!r} is not included in the list")
        changes = _component_changes(pg, body)
        if isinstance(changes, JSONResponse):
            return changes
        now = world.clock.now().isoformat()
        incident = Incident(
            id=_new_id(world),
            name=str(body["name"]),
            status=status,
            impact="none",
            shortlink=f"https://stspg.io/{_new_id(world, 5)}",
            created_at=now,
            updated_at=now,
        )
        _apply_update(world, pg, incident, {**body, "status": status}, changes)
        pg.incidents[incident.id] = incident
        return JSONResponse(_incident_json(pg, incident), 201)

    async def update_incident(request: Request, pg: Page) -> Response:
        incident = incident_of(request, pg)
        if incident is None:
            return _error(404, "The incident could not be found")
        body = await _body(request, "incident")
        if isinstance(body, JSONResponse):
            return body
        if body.get("status") and body["status"] not in INCIDENT_STATUSES:
            return _error(422, f"Status {body['status']!r} is not included in the list")
        changes = _component_changes(pg, body)
        if isinstance(changes, JSONResponse):
            return changes
        _apply_update(world, pg, incident, body, changes)
        return JSONResponse(_incident_json(pg, incident))

    async def get_incident(request: Request, pg: Page) -> Response:
        incident = incident_of(request, pg)
        if incident is None:
            return _error(404, "The incident could not be found")
        return JSONResponse(_incident_json(pg, incident))

    async def unresolved(request: Request, pg: Page) -> Response:
        rows = [i for i in pg.incidents.values() if i.status != "resolved"]
        rows.sort(key=lambda i: i.created_at, reverse=True)
        return JSONResponse([_incident_json(pg, i) for i in rows])

    async def list_components(request: Request, pg: Page) -> Response:
        comps = sorted(pg.components.values(), key=lambda c: c.position)
        return JSONResponse([asdict(c) for c in comps])

    async def update_component(request: Request, pg: Page) -> Response:
        comp = pg.components.get(request.path_params["component_id"])
        if comp is None:
            return _error(404, "The component could not be found")
        body = await _body(request, "component")
        if isinstance(body, JSONResponse):
            return body
        status = body.get("status", comp.status)
        if status not in COMPONENT_STATUSES:
            return _error(422, f"Status {status!r} is not included in the list")
        comp.status, comp.updated_at = status, world.clock.now().isoformat()
        if body.get("description") is not None:
            comp.description = str(body["description"])
        return JSONResponse(asdict(comp))

    base = "/v1/pages/{page_id}"
    return [
        Route(f"{base}/incidents", guarded(create_incident), methods=["POST"]),
        Route(f"{base}/incidents/unresolved", guarded(unresolved), methods=["GET"]),
        Route(f"{base}/incidents/{{incident_id}}", guarded(get_incident), methods=["GET"]),
        Route(
            f"{base}/incidents/{{incident_id}}", guarded(update_incident), methods=["PATCH", "PUT"]
        ),
        Route(f"{base}/components", guarded(list_components), methods=["GET"]),
        Route(
            f"{base}/components/{{component_id}}",
            guarded(update_component),
            methods=["PATCH", "PUT"],
        ),
    ]
