"""The sandbox's Vercel: one project, its production deployments, instant rollback and promote.

Paths are Vercel's own (mounted under ``/vercel``): ``GET /v6|v7/deployments``,
``GET /v13/deployments/{idOrUrl}``, ``POST /v1/projects/{projectId}/rollback/{deploymentId}``,
``POST /v10/projects/{projectId}/promote/{deploymentId}``, ``GET /v9/projects/{idOrName}``.

Each deployment may carry a hidden quality (``error_rate``, ``p95_ms``) that the product app
(``runbook.sandbox.product_app``) shows in its health and metrics while that deployment serves
production. Scenarios use ``add_deployment`` / ``set_production`` to stage a bad deploy.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from runbook.sandbox.core import World

NAME = "vercel"
PROJECT_ID = "prj_sandbox"
PROJECT_NAME = "web"
STATES = frozenset({"BUILDING", "ERROR", "INITIALIZING", "QUEUED", "READY", "CANCELED"})
TARGETS = frozenset({"production", "preview", "staging"})
_ALNUM = string.ascii_letters + string.digits
_ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    409: "conflict",
    429: "too_many_requests",
    500: "internal_server_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}
_INITIAL_COMMITS = (
    "Add pricing page",
    "Tune image caching headers",
    "Upgrade next to 15.3",
)


@dataclass
class Deployment:
    """One deployment. ``error_rate``/``p95_ms`` are hidden: what it does to the app when live."""

    uid: str
    name: str
    url: str
    created: int  # ms since the epoch, as Vercel reports it
    project_id: str
    target: str | None = "production"
    state: str = "READY"
    meta: dict[str, str] = field(default_factory=dict)
    error_rate: float | None = None
    p95_ms: float | None = None


@dataclass
class Project:
    """One project; ``production_id`` is the deployment its production domains point to."""

    id: str
    name: str
    created: int
    production_id: str | None = None
    last_rollback_target: dict[str, Any] | None = None
    last_alias_request: dict[str, Any] | None = None
    updated: int = 0


@dataclass
class VercelState:
    projects: dict[str, Project] = field(default_factory=dict)
    deployments: dict[str, Deployment] = field(default_factory=dict)


# --- state helpers (used by scenarios and the product app) ---------------------------------------


def _state(world: World) -> VercelState:
    state: VercelState = world.state[NAME]
    return state


def _now_ms(world: World) -> int:
    return int(world.clock.now().timestamp() * 1000)


def _rand(world: World, n: int, alphabet: str = _ALNUM) -> str:
    return "".join(world.rng.choice(alphabet) for _ in range(n))


def add_deployment(
    world: World,
    *,
    project_id: str = PROJECT_ID,
    created_ms: int | None = None,
    uid_prefix: str = "dpl_",
    message: str = "Update",
    target: str | None = "production",
    state: str = "READY",
    error_rate: float | None = None,
    p95_ms: float | None = None,
) -> Deployment:
    """Create a deployment (not yet serving production) and return it.

    Args:
        world: the sandbox world.
        project_id: the project it belongs to.
        created_ms: creation time in ms; the world clock's now by default.
        uid_prefix: "dpl_" normally; scenarios use "dpl_bad" so a drill reader spots it.
        message: the git commit message in its meta.
        target: "production", "preview" or None.
        state: its readyState.
        error_rate: hidden fraction of requests that fail while it serves production.
        p95_ms: hidden p95 latency while it serves production.

    Returns:
        The new Deployment.
    """
    vs = _state(world)
    project = vs.projects[project_id]
    uid = uid_prefix + _rand(world, 28 - len(uid_prefix))
    dep = Deployment(
        uid=uid,
        name=project.name,
        url=f"{project.name}-{_rand(world, 9, string.ascii_lowercase + string.digits)}.vercel.app",
        created=created_ms if created_ms is not None else _now_ms(world),
        project_id=project_id,
        target=target,
        state=state,
        meta={
            "githubCommitSha": _rand(world, 40, "0123456789abcdef"),
            "githubCommitMessage": message,
            "githubCommitRef": "main",
            "githubCommitAuthorLogin": "sandbox-dev",
        },
        error_rate=error_rate,
        p95_ms=p95_ms,
    )
    vs.deployments[uid] = dep
    return dep


def current_production(world: World, project_id: str = PROJECT_ID) -> Deployment | None:
    """The deployment serving the project's production domains, if any."""
    vs = world.state.get(NAME)
    if not isinstance(vs, VercelState) or project_id not in vs.projects:
        return None
    pid = vs.projects[project_id].production_id
    return vs.deployments.get(pid) if pid else None


def set_production(
    world: World,
    project_id: str,
    deployment_id: str,
    *,
    kind: str = "promote",
    description: str = "",
) -> None:
    """Point production at ``deployment_id``: ``kind`` is "rollback", "promote" or "deploy".

    The product app's traffic is settled first, so the time before the switch is counted at the old
    deployment's quality and the time after at the new one's.
    """
    settle = world.hooks.get("app.settle")
    if settle is not None:
        settle()
    project = _state(world).projects[project_id]
    now = _now_ms(world)
    previous = project.production_id
    project.production_id = deployment_id
    project.updated = now
    if kind not in ("rollback", "promote"):
        return  # a new deploy going live is not an alias request
    request = {
        "fromDeploymentId": previous,
        "toDeploymentId": deployment_id,
        "jobStatus": "succeeded",
        "requestedAt": now,
        "type": kind,
    }
    if kind == "rollback":
        # Vercel keeps the project in a rolled-back state until the next promote
        project.last_rollback_target = {**request, "description": description}
    else:
        project.last_rollback_target = None
    project.last_alias_request = request


def init_state(world: World) -> None:
    """One project "web" with three READY production deployments (3, 2 and 1 days old)."""
    now = world.clock.now()
    world.state[NAME] = vs = VercelState()
    vs.projects[PROJECT_ID] = Project(
        id=PROJECT_ID,
        name=PROJECT_NAME,
        created=int((now - timedelta(days=90)).timestamp() * 1000),
    )
    last = None
    for days, message in zip((3, 2, 1), _INITIAL_COMMITS, strict=True):
        created = int((now - timedelta(days=days)).timestamp() * 1000)
        last = add_deployment(world, created_ms=created, message=message)
    assert last is not None  # noqa: S101 - three deployments were just made
    vs.projects[PROJECT_ID].production_id = last.uid
    vs.projects[PROJECT_ID].updated = last.created


# --- the vendor's wire format ---------------------------------------------------------------------


def error_response(status: int, message: str, retry_after: float | None = None) -> Response:
    """Vercel's error body: ``{"error": {"code", "message"}}`` (429 carries Retry-After)."""
    code = _ERROR_CODES.get(status, "forbidden" if status == 403 else "error")
    headers = {}
    if retry_after is not None:
        headers["retry-after"] = str(
            int(retry_after) if retry_after == int(retry_after) else retry_after
        )
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def _forbidden() -> Response:
    return JSONResponse(
        {"error": {"code": "forbidden", "message": "Not authorized", "invalidToken": True}},
        status_code=403,
    )


def _authorized(world: World, request: Request) -> bool:
    return request.headers.get("authorization", "") == f"Bearer {world.token_for(NAME)}"


def _is_candidate(world: World, dep: Deployment) -> bool:
    current = current_production(world, dep.project_id)
    return (
        dep.state == "READY"
        and dep.target == "production"
        and (current is None or current.uid != dep.uid)
    )


def _list_item(world: World, dep: Deployment) -> dict[str, Any]:
    return {
        "uid": dep.uid,
        "name": dep.name,
        "url": dep.url,
        "created": dep.created,
        "createdAt": dep.created,
        "state": dep.state,
        "readyState": dep.state,
        "type": "LAMBDAS",
        "target": dep.target,
        "projectId": dep.project_id,
        "source": "git",
        "creator": {"uid": "usr_sandbox", "username": "sandbox-dev"},
        "inspectorUrl": f"https://vercel.com/sandbox/{dep.name}/{dep.uid.removeprefix('dpl_')}",
        "meta": dict(dep.meta),
        "isRollbackCandidate": _is_candidate(world, dep),
    }


def _detail(world: World, dep: Deployment) -> dict[str, Any]:
    current = current_production(world, dep.project_id)
    live = current is not None and current.uid == dep.uid
    body = _list_item(world, dep)
    body.pop("uid")
    body.pop("created")
    return {
        "id": dep.uid,
        **body,
        "status": dep.state,
        "alias": [f"{dep.name}.vercel.app"] if live else [],
        "aliasAssigned": live,
        "buildingAt": dep.created + 2_000,
        "ready": dep.created + 45_000,
        "version": 2,
    }


def _find(world: World, id_or_url: str) -> Deployment | None:
    vs = _state(world)
    key = id_or_url.removeprefix("https://").removeprefix("http://").rstrip("/")
    if key in vs.deployments:
        return vs.deployments[key]
    return next((d for d in vs.deployments.values() if d.url == key), None)


def _find_project(world: World, id_or_name: str) -> Project | None:
    vs = _state(world)
    return vs.projects.get(id_or_name) or next(
        (p for p in vs.projects.values() if p.name == id_or_name), None
    )


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"Invalid request: `{name}` should be number.") from None


def routes(world: World) -> list[BaseRoute]:
    """Vercel's endpoints over ``world.state["vercel"]``."""

    async def list_deployments(request: Request) -> Response:
        if not _authorized(world, request):
            return _forbidden()
        q = request.query_params
        try:
            limit = _int_param(request, "limit")
            since, until = _int_param(request, "since"), _int_param(request, "until")
        except ValueError as exc:
            return error_response(400, str(exc))
        limit = 20 if limit is None else limit
        if not 1 <= limit <= 100:
            return error_response(400, "Invalid request: `limit` should be <= 100 and >= 1.")
        states = {s.strip().upper() for s in q.get("state", "").split(",") if s.strip()}
        if states - STATES:
            bad = ", ".join(sorted(states - STATES))
            return error_response(400, f"Invalid request: `state` has unknown value(s) {bad}.")
        target = q.get("target")
        if target is not None and target not in TARGETS:
            return error_response(
                400, "Invalid request: `target` should be one of production, preview."
            )
        project_id = q.get("projectId")
        if project_id is not None and _find_project(world, project_id) is None:
            return error_response(404, f"Project not found: {project_id}")
        project = _find_project(world, project_id) if project_id else None
        rows = [
            d
            for d in _state(world).deployments.values()
            if (project is None or d.project_id == project.id)
            and (target is None or d.target == target)
            and (not states or d.state in states)
            and (since is None or d.created > since)
            and (until is None or d.created < until)
        ]
        rows.sort(key=lambda d: d.created, reverse=True)
        page = rows[:limit]
        pagination = {
            "count": len(page),
            "next": page[-1].created if len(rows) > limit else None,
            "prev": page[0].created if page else None,
        }
        return JSONResponse(
            {"pagination": pagination, "deployments": [_list_item(world, d) for d in page]}
        )

    async def get_deployment(request: Request) -> Response:
        if not _authorized(world, request):
            return _forbidden()
        dep = _find(world, request.path_params["id_or_url"])
        if dep is None:
            return error_response(404, "The deployment could not be found.")
        return JSONResponse(_detail(world, dep))

    async def get_project(request: Request) -> Response:
        if not _authorized(world, request):
            return _forbidden()
        project = _find_project(world, request.path_params["id_or_name"])
        if project is None:
            return error_response(404, "Project not found")
        current = current_production(world, project.id)
        mine = sorted(
            (d for d in _state(world).deployments.values() if d.project_id == project.id),
            key=lambda d: d.created,
            reverse=True,
        )
        return JSONResponse(
            {
                "id": project.id,
                "name": project.name,
                "accountId": "team_sandbox",
                "framework": "nextjs",
                "createdAt": project.created,
                "updatedAt": project.updated,
                "targets": {"production": _detail(world, current)} if current else {},
                "latestDeployments": [_list_item(world, d) for d in mine[:5]],
                "lastRollbackTarget": project.last_rollback_target,
                "lastAliasRequest": project.last_alias_request,
                "live": False,
            }
        )

    def _switch_target(request: Request) -> tuple[Project, Deployment] | Response:
        project = _find_project(world, request.path_params["project_id"])
        if project is None:
            return error_response(404, "Project not found")
        dep = _find(world, request.path_params["deployment_id"])
        if dep is None or dep.project_id != project.id:
            return error_response(404, "The deployment could not be found.")
        if dep.state != "READY":
            return error_response(
                400,
                f"Deployment {dep.uid} is {dep.state}; only READY deployments can serve production.",
            )
        return project, dep

    async def rollback(request: Request) -> Response:
        if not _authorized(world, request):
            return _forbidden()
        description = request.query_params.get("description", "")
        if len(description) > 256:
            return error_response(
                400, "Invalid request: `description` should be <= 256 characters."
            )
        found = _switch_target(request)
        if isinstance(found, Response):
            return found
        project, dep = found
        if dep.target != "production":
            return error_response(
                400,
                f"Deployment {dep.uid} was never in production; it cannot be a rollback target.",
            )
        if project.production_id != dep.uid:
            set_production(world, project.id, dep.uid, kind="rollback", description=description)
        return Response(status_code=201)

    async def promote(request: Request) -> Response:
        if not _authorized(world, request):
            return _forbidden()
        found = _switch_target(request)
        if isinstance(found, Response):
            return found
        project, dep = found
        set_production(world, project.id, dep.uid, kind="promote")
        return Response(status_code=201)

    return [
        Route("/v6/deployments", list_deployments, methods=["GET"]),
        Route("/v7/deployments", list_deployments, methods=["GET"]),
        Route("/v13/deployments/{id_or_url:path}", get_deployment, methods=["GET"]),
        Route("/v9/projects/{id_or_name}", get_project, methods=["GET"]),
        Route("/v1/projects/{project_id}/rollback/{deployment_id}", rollback, methods=["POST"]),
        Route("/v10/projects/{project_id}/promote/{deployment_id}", promote, methods=["POST"]),
    ]
