"""The sandbox's Jira Cloud: one project "OPS" with issues, comments and a To Do/In Progress/Done workflow.

Paths are Jira's own REST v3 (mounted under ``/jira``): ``POST /rest/api/3/issue``,
``GET /rest/api/3/issue/{key}``, ``GET /rest/api/3/search/jql``, ``GET|POST .../issue/{key}/comment``,
``GET|POST .../issue/{key}/transitions``. Auth is basic ``email:api_token`` (the token must be the
world's token; any email) or ``Bearer <token>``. Errors are ``{"errorMessages": [...], "errors": {...}}``.

The search understands only ``project = KEY`` and ``labels = "x"`` clauses joined by AND (plus an
ignored ``ORDER BY``); anything else is a 400, as Jira answers a JQL it cannot parse.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from runbook.sandbox.core import World

NAME = "jira"
SITE = "https://acme.atlassian.net"
PROJECT = "OPS"
ISSUE_TYPES = ("Incident", "Bug", "Task")
# status name -> (status id, category key, category name)
STATUSES = {
    "To Do": ("10000", "new", "To Do"),
    "In Progress": ("3", "indeterminate", "In Progress"),
    "Done": ("10001", "done", "Done"),
}
# transition id -> (name, target status); every status can move to every other one
TRANSITIONS = {
    "11": ("To Do", "To Do"),
    "21": ("In Progress", "In Progress"),
    "31": ("Done", "Done"),
}
_CLAUSE = re.compile(r'\s*(\w+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s"]+)\s*', re.UNICODE)


@dataclass
class JiraIssue:
    id: int
    key: str
    summary: str
    description: dict[str, Any] | None
    labels: list[str]
    issue_type: str
    created: str
    updated: str
    status: str = "To Do"
    resolution: str | None = None
    comments: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class JiraState:
    projects: dict[str, str] = field(default_factory=lambda: {PROJECT: "Operations"})
    issues: dict[str, JiraIssue] = field(default_factory=dict)  # by key
    next_id: int = 10001
    next_number: dict[str, int] = field(default_factory=dict)
    next_comment_id: int = 10100


def _state(world: World) -> JiraState:
    state: JiraState = world.state[NAME]
    return state


def issues(world: World) -> list[JiraIssue]:
    """Every issue, oldest first."""
    return sorted(_state(world).issues.values(), key=lambda i: i.id)


def init_state(world: World) -> None:
    """Project OPS ("Operations"), no issues yet."""
    world.state[NAME] = JiraState()


def _now(world: World) -> str:
    # Jira's timestamp format: 2026-01-05T10:00:00.000+0000
    return world.clock.now().strftime("%Y-%m-%dT%H:%M:%S.000+0000")


# --- the vendor's wire format ---------------------------------------------------------------------


def error_response(status: int, message: str, retry_after: float | None = None) -> Response:
    """Jira's error body ``{"errorMessages": [message], "errors": {}}``; 429 carries Retry-After."""
    headers = {}
    if retry_after is not None:
        headers["retry-after"] = str(
            int(retry_after) if retry_after == int(retry_after) else retry_after
        )
    return JSONResponse(
        {"errorMessages": [message], "errors": {}}, status_code=status, headers=headers
    )


def _field_errors(errors: dict[str, str]) -> Response:
    return JSONResponse({"errorMessages": [], "errors": errors}, status_code=400)


def _authorized(world: World, request: Request) -> bool:
    auth = request.headers.get("authorization", "")
    if auth == f"Bearer {world.token_for(NAME)}":
        return True
    if not auth.startswith("Basic "):
        return False
    try:
        decoded = base64.b64decode(auth[6:], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    email, sep, token = decoded.partition(":")
    return bool(sep and email) and token == world.token_for(NAME)


def _unauthorized() -> Response:
    return JSONResponse(
        {
            "errorMessages": [
                "You are not authenticated. Authentication required to perform this operation."
            ],
            "errors": {},
        },
        status_code=401,
        headers={"www-authenticate": 'Basic realm="protected-area"'},
    )


def _not_found() -> Response:
    return error_response(404, "Issue does not exist or you do not have permission to see it.")


def _is_adf(doc: Any) -> bool:
    return (
        isinstance(doc, dict)
        and doc.get("type") == "doc"
        and doc.get("version") == 1
        and isinstance(doc.get("content"), list)
    )


def _status_json(name: str) -> dict[str, Any]:
    sid, cat_key, cat_name = STATUSES[name]
    return {"id": sid, "name": name, "statusCategory": {"key": cat_key, "name": cat_name}}


def _issue_json(world: World, issue: JiraIssue, fields: set[str] | None = None) -> dict[str, Any]:
    all_fields = {
        "summary": issue.summary,
        "description": issue.description,
        "labels": list(issue.labels),
        "issuetype": {"name": issue.issue_type},
        "project": {"key": issue.key.split("-")[0], "name": _state(world).projects[PROJECT]},
        "status": _status_json(issue.status),
        "resolution": {"name": issue.resolution} if issue.resolution else None,
        "created": issue.created,
        "updated": issue.updated,
        "comment": {"total": len(issue.comments)},
    }
    if fields is not None and not fields & {"*all", "*navigable"}:
        all_fields = {k: v for k, v in all_fields.items() if k in fields}
    return {
        "id": str(issue.id),
        "key": issue.key,
        "self": f"{SITE}/rest/api/3/issue/{issue.id}",
        "fields": all_fields,
    }


def _fields_param(request: Request) -> set[str] | None:
    raw = request.query_params.get("fields")
    return {f.strip() for f in raw.split(",") if f.strip()} if raw else None


def parse_jql(jql: str) -> dict[str, list[str]]:
    """The tiny JQL subset: ``project = X`` and ``labels = "y"`` clauses joined by AND.

    Returns:
        {"project": [...], "labels": [...]} (every clause must hold).

    Raises:
        ValueError: with Jira's kind of message, for anything outside the subset.
    """
    text = re.split(r"\s+order\s+by\s+", jql, maxsplit=1, flags=re.IGNORECASE)[0].strip()
    if not text:
        raise ValueError(
            "Unbounded JQL queries are not allowed here. Please add a search restriction to your query."
        )
    clauses: dict[str, list[str]] = {"project": [], "labels": []}
    pos = 0
    while True:
        m = _CLAUSE.match(text, pos)
        if m is None or m.group(1).lower() not in clauses:
            raise ValueError(
                f"Error in the JQL Query: the sandbox understands only 'project = KEY' and "
                f"'labels = \"x\"' joined by AND (at character {pos})."
            )
        value = m.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        clauses[m.group(1).lower()].append(value)
        pos = m.end()
        if pos >= len(text):
            return clauses
        joiner = re.compile(r"AND\s+", re.IGNORECASE).match(text, pos)
        if joiner is None:
            raise ValueError(
                f"Error in the JQL Query: expecting 'AND' at character {pos} of the query."
            )
        pos = joiner.end()


async def _json_body(request: Request) -> dict[str, Any] | Response:
    try:
        data = json.loads(await request.body() or b"null")
    except ValueError:
        return error_response(400, "Unexpected character: the request body is not valid JSON.")
    if not isinstance(data, dict):
        return error_response(400, "Can not deserialize the request body: expected a JSON object.")
    return data


def _validate_create(world: World, fields: dict[str, Any]) -> dict[str, str]:
    errors: dict[str, str] = {}
    project = fields.get("project")
    key = project.get("key") if isinstance(project, dict) else None
    if key not in _state(world).projects:
        errors["project"] = "Specify a valid project ID or key"
    issuetype = fields.get("issuetype")
    if not isinstance(issuetype, dict) or issuetype.get("name") not in ISSUE_TYPES:
        errors["issuetype"] = "Specify an issue type"
    summary = fields.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        errors["summary"] = "You must specify a summary of the issue."
    elif len(summary) > 255:
        errors["summary"] = "Summary must be less than 255 characters."
    if "description" in fields and fields["description"] is not None:
        if not _is_adf(fields["description"]):
            errors["description"] = "Operation value must be an Atlassian Document (see ADF)."
    labels = fields.get("labels", [])
    if not isinstance(labels, list) or not all(
        isinstance(x, str) and x and not re.search(r"\s", x) for x in labels
    ):
        errors["labels"] = "Labels must be a list of strings without spaces."
    return errors


def routes(world: World) -> list[BaseRoute]:
    """Jira's issue, search, comment and transition endpoints over ``world.state["jira"]``."""

    def _find(request: Request) -> JiraIssue | Response:
        if not _authorized(world, request):
            return _unauthorized()
        ref = request.path_params["key"]
        state = _state(world)
        issue = state.issues.get(ref.upper()) or next(
            (i for i in state.issues.values() if str(i.id) == ref), None
        )
        return issue if issue is not None else _not_found()

    async def create_issue(request: Request) -> Response:
        if not _authorized(world, request):
            return _unauthorized()
        data = await _json_body(request)
        if isinstance(data, Response):
            return data
        fields = data.get("fields")
        if not isinstance(fields, dict):
            return error_response(400, "Field 'fields' is required to create an issue.")
        errors = _validate_create(world, fields)
        if errors:
            return _field_errors(errors)
        state = _state(world)
        project = fields["project"]["key"]
        number = state.next_number.get(project, 1)
        state.next_number[project] = number + 1
        now = _now(world)
        issue = JiraIssue(
            id=state.next_id,
            key=f"{project}-{number}",
            summary=fields["summary"],
            description=fields.get("description"),
            labels=list(dict.fromkeys(fields.get("labels", []))),
            issue_type=fields["issuetype"]["name"],
            created=now,
            updated=now,
        )
        state.next_id += 1
        state.issues[issue.key] = issue
        return JSONResponse(
            {"id": str(issue.id), "key": issue.key, "self": f"{SITE}/rest/api/3/issue/{issue.id}"},
            status_code=201,
        )

    async def get_issue(request: Request) -> Response:
        issue = _find(request)
        if isinstance(issue, Response):
            return issue
        return JSONResponse(_issue_json(world, issue, _fields_param(request)))

    async def search(request: Request) -> Response:
        if not _authorized(world, request):
            return _unauthorized()
        try:
            clauses = parse_jql(request.query_params.get("jql", ""))
            limit = int(request.query_params.get("maxResults", "50"))
        except ValueError as exc:
            return error_response(400, str(exc))
        for key in clauses["project"]:
            if key not in _state(world).projects:
                return error_response(
                    400,
                    f"The value '{key}' does not exist for the field 'project'.",
                )
        wanted = set(clauses["labels"])
        rows = [
            i
            for i in issues(world)
            if all(i.key.split("-")[0] == p for p in clauses["project"]) and wanted <= set(i.labels)
        ]
        rows.reverse()  # Jira's default order: newest first
        fields = _fields_param(request)
        page = rows[: max(1, min(limit, 5000))]
        return JSONResponse(
            {
                "issues": [_issue_json(world, i, fields) for i in page],
                "isLast": len(page) == len(rows),
            }
        )

    async def comments(request: Request) -> Response:
        issue = _find(request)
        if isinstance(issue, Response):
            return issue
        if request.method == "GET":
            return JSONResponse(
                {
                    "comments": issue.comments,
                    "startAt": 0,
                    "maxResults": len(issue.comments),
                    "total": len(issue.comments),
                }
            )
        data = await _json_body(request)
        if isinstance(data, Response):
            return data
        body = data.get("body")
        if body is None:
            return _field_errors({"comment": "Comment body can not be empty!"})
        if not _is_adf(body):
            return _field_errors(
                {"comment": "Operation value must be an Atlassian Document (see ADF)."}
            )
        state = _state(world)
        cid = state.next_comment_id
        state.next_comment_id += 1
        now = _now(world)
        comment = {
            "id": str(cid),
            "self": f"{SITE}/rest/api/3/issue/{issue.id}/comment/{cid}",
            "author": {"displayName": "Runbook Bot", "accountType": "atlassian"},
            "body": body,
            "created": now,
            "updated": now,
        }
        issue.comments.append(comment)
        issue.updated = now
        return JSONResponse(comment, status_code=201)

    async def transitions(request: Request) -> Response:
        issue = _find(request)
        if isinstance(issue, Response):
            return issue
        if request.method == "GET":
            rows = [
                {
                    "id": tid,
                    "name": name,
                    "to": _status_json(target),
                    "hasScreen": False,
                    "isGlobal": True,
                    "isInitial": False,
                    "isAvailable": True,
                }
                for tid, (name, target) in TRANSITIONS.items()
                if target != issue.status
            ]
            return JSONResponse({"expand": "transitions", "transitions": rows})
        data = await _json_body(request)
        if isinstance(data, Response):
            return data
        transition = data.get("transition")
        tid = str(transition.get("id")) if isinstance(transition, dict) else None
        if tid not in TRANSITIONS or TRANSITIONS[tid][1] == issue.status:
            return error_response(400, f"Transition id '{tid}' is not valid for this issue.")
        target = TRANSITIONS[tid][1]
        issue.status = target
        issue.resolution = "Done" if STATUSES[target][1] == "done" else None
        issue.updated = _now(world)
        return Response(status_code=204)

    base = "/rest/api/3"
    return [
        Route(f"{base}/issue", create_issue, methods=["POST"]),
        Route(f"{base}/search/jql", search, methods=["GET"]),
        Route(f"{base}/issue/{{key}}", get_issue, methods=["GET"]),
        Route(f"{base}/issue/{{key}}/comment", comments, methods=["GET", "POST"]),
        Route(f"{base}/issue/{{key}}/transitions", transitions, methods=["GET", "POST"]),
    ]
