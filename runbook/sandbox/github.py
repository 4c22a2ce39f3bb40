"""The sandbox's GitHub: one repository "acme/web" with issues, comments and recent commits.

Paths are GitHub's own (mounted under ``/github``): ``POST|GET /repos/{owner}/{repo}/issues``,
``GET|PATCH /repos/{owner}/{repo}/issues/{number}``, ``POST|GET .../issues/{number}/comments`` and
``GET /repos/{owner}/{repo}/commits`` (its own commits merged with those the sandbox's Vercel
deployments were built from, so a staged bad deploy shows in "recent changes"). Auth is ``Authorization: Bearer <token>`` or ``token <token>``.

Rate limits answer in GitHub's two shapes (``error_response``): 429 with retry-after (secondary limit),
or 403 with ``x-ratelimit-remaining: 0`` and ``x-ratelimit-reset`` (primary limit, fault status 403).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from runbook.sandbox.core import World

NAME = "github"
REPO = "acme/web"
DOCS_URL = "https://docs.github.com/rest"
WEB = "https://github.com"
API = "https://api.github.com"
STATES = ("open", "closed")
STATE_REASONS = ("completed", "not_planned", "reopened")
# the Vercel deployments' own commits join these in the log (see ``commit_log``)
_SEED_COMMITS = (
    "Fix checkout button alignment on mobile",
    "Add README section on local setup",
    "Refactor cart totals into a hook",
    "Add index on orders(created_at)",
    "Retry Stripe webhooks on 5xx",
    "Bump supabase-js to 2.45",
    "Move session refresh into middleware",
    "Add feature flag for new search",
    "Cache product list for 60s at the edge",
    "Log slow queries over 500ms",
    "Switch image CDN to AVIF",
)


@dataclass
class Issue:
    id: int
    number: int
    title: str
    body: str | None
    labels: list[str]
    created_at: str
    updated_at: str
    state: str = "open"
    state_reason: str | None = None
    closed_at: str | None = None
    comments: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Commit:
    sha: str
    message: str
    author: str
    date: str


@dataclass
class Repo:
    full_name: str
    issues: dict[int, Issue] = field(default_factory=dict)
    commits: list[Commit] = field(default_factory=list)  # newest first
    next_number: int = 1


@dataclass
class GitHubState:
    repos: dict[str, Repo] = field(default_factory=dict)
    next_id: int = 1_000_001


def _state(world: World) -> GitHubState:
    state: GitHubState = world.state[NAME]
    return state


def _iso(world: World, delta: timedelta = timedelta(0)) -> str:
    return (world.clock.now() + delta).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def add_commit(
    world: World, message: str, *, author: str = "sandbox-dev", ago: timedelta = timedelta(0)
) -> Commit:
    """Push a commit to acme/web's default branch (newest first) and return it."""
    commit = Commit(
        sha="".join(world.rng.choice("0123456789abcdef") for _ in range(40)),
        message=message,
        author=author,
        date=_iso(world, -ago),
    )
    repo = _state(world).repos[REPO]
    repo.commits.insert(0, commit)
    repo.commits.sort(key=lambda c: c.date, reverse=True)
    return commit


def _deployment_commits(world: World) -> list[Commit]:
    """The commits the sandbox's Vercel deployments were built from, if Vercel is in the world.

    Read duck-typed from ``world.state["vercel"]`` so a scenario's bad deploy shows up in the
    "recent changes" log with the same sha and message as on the deployment.
    """
    deployments = getattr(world.state.get("vercel"), "deployments", None) or {}
    commits = []
    for dep in deployments.values():
        meta = getattr(dep, "meta", None) or {}
        sha, created = meta.get("githubCommitSha"), getattr(dep, "created", None)
        if not sha or created is None:
            continue
        when = datetime.fromtimestamp(created / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        commits.append(
            Commit(
                sha=sha,
                message=meta.get("githubCommitMessage", ""),
                author=meta.get("githubCommitAuthorLogin", "sandbox-dev"),
                date=when,
            )
        )
    return commits


def commit_log(world: World, repo: str = REPO) -> list[Commit]:
    """The repository's commits, newest first: its own plus (for acme/web) the deployments'."""
    own = _state(world).repos[repo].commits
    extra = _deployment_commits(world) if repo == REPO else []
    unique = {c.sha: c for c in [*extra, *own]}
    return sorted(unique.values(), key=lambda c: c.date, reverse=True)


def issues(world: World, repo: str = REPO) -> list[Issue]:
    """Every issue of ``repo``, by number."""
    return sorted(_state(world).repos[repo].issues.values(), key=lambda i: i.number)


def init_state(world: World) -> None:
    """Repository acme/web with no issues and 12 commits, one every 3 hours back from now."""
    world.state[NAME] = GitHubState(repos={REPO: Repo(full_name=REPO)})
    count = len(_SEED_COMMITS)
    for i, message in enumerate(_SEED_COMMITS):
        add_commit(world, message, ago=timedelta(hours=3 * (count - i)))


# --- the vendor's wire format ---------------------------------------------------------------------


def error_response(status: int, message: str, retry_after: float | None = None) -> Response:
    """GitHub's error body ``{"message", "documentation_url"}``; 403/429 carry the rate-limit headers."""
    headers: dict[str, str] = {}
    if status in (403, 429):
        wait = 60.0 if retry_after is None else retry_after
        headers["x-ratelimit-limit"] = "5000"
        headers["x-ratelimit-reset"] = str(int(time.time() + wait + 0.999))
        headers["x-ratelimit-resource"] = "core"
        if status == 403:
            headers["x-ratelimit-remaining"] = "0"
            headers["x-ratelimit-used"] = "5000"
        else:
            headers["retry-after"] = str(int(wait) if wait == int(wait) else wait)
    return JSONResponse(
        {"message": message, "documentation_url": DOCS_URL}, status_code=status, headers=headers
    )


def _not_found() -> Response:
    return error_response(404, "Not Found")


def _validation_failed(errors: list[dict[str, Any]]) -> Response:
    return JSONResponse(
        {"message": "Validation Failed", "errors": errors, "documentation_url": DOCS_URL},
        status_code=422,
    )


def _authorized(world: World, request: Request) -> bool:
    auth = request.headers.get("authorization", "")
    return auth in (f"Bearer {world.token_for(NAME)}", f"token {world.token_for(NAME)}")


def _issue_json(repo: Repo, issue: Issue) -> dict[str, Any]:
    return {
        "id": issue.id,
        "node_id": f"I_sandbox{issue.id}",
        "url": f"{API}/repos/{repo.full_name}/issues/{issue.number}",
        "html_url": f"{WEB}/{repo.full_name}/issues/{issue.number}",
        "number": issue.number,
        "title": issue.title,
        "state": issue.state,
        "state_reason": issue.state_reason,
        "labels": [{"name": name, "color": "d73a4a", "default": False} for name in issue.labels],
        "body": issue.body,
        "user": {"login": "runbook-bot", "type": "Bot"},
        "comments": len(issue.comments),
        "created_at": issue.created_at,
        "updated_at": issue.updated_at,
        "closed_at": issue.closed_at,
    }


def _commit_json(repo: Repo, commit: Commit) -> dict[str, Any]:
    who = {"name": commit.author, "email": f"{commit.author}@example.com", "date": commit.date}
    return {
        "sha": commit.sha,
        "commit": {"message": commit.message, "author": who, "committer": who},
        "html_url": f"{WEB}/{repo.full_name}/commit/{commit.sha}",
        "author": {"login": commit.author},
    }


async def _body(request: Request) -> dict[str, Any] | Response:
    """The JSON object body, or GitHub's 400 for anything else."""
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError:
        return error_response(400, "Problems parsing JSON")
    if not isinstance(data, dict):
        return error_response(400, "Problems parsing JSON")
    return data


def _bad_labels(labels: Any) -> bool:
    return not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels)


def _per_page(request: Request, default: int = 30) -> int | Response:
    raw = request.query_params.get("per_page", str(default))
    try:
        return max(1, min(100, int(raw)))
    except ValueError:
        return _validation_failed([{"field": "per_page", "code": "invalid", "value": raw}])


def routes(world: World) -> list[BaseRoute]:
    """GitHub's issue and commit endpoints over ``world.state["github"]``."""

    def _repo(request: Request) -> Repo | Response:
        if not _authorized(world, request):
            return JSONResponse(
                {"message": "Bad credentials", "documentation_url": DOCS_URL}, status_code=401
            )
        full = f"{request.path_params['owner']}/{request.path_params['repo']}"
        repo = _state(world).repos.get(full)
        return repo if repo is not None else _not_found()

    def _issue(request: Request) -> tuple[Repo, Issue] | Response:
        repo = _repo(request)
        if isinstance(repo, Response):
            return repo
        try:
            issue = repo.issues.get(int(request.path_params["number"]))
        except ValueError:
            issue = None
        return (repo, issue) if issue is not None else _not_found()

    async def create_issue(request: Request) -> Response:
        repo = _repo(request)
        if isinstance(repo, Response):
            return repo
        data = await _body(request)
        if isinstance(data, Response):
            return data
        title = data.get("title")
        if not isinstance(title, str | int) or str(title).strip() == "":
            return _validation_failed(
                [{"resource": "Issue", "field": "title", "code": "missing_field"}]
            )
        labels = data.get("labels", [])
        if _bad_labels(labels):
            return _validation_failed([{"resource": "Issue", "field": "labels", "code": "invalid"}])
        state = _state(world)
        now = _iso(world)
        issue = Issue(
            id=state.next_id,
            number=repo.next_number,
            title=str(title),
            body=data.get("body"),
            labels=list(dict.fromkeys(labels)),
            created_at=now,
            updated_at=now,
        )
        state.next_id += 1
        repo.next_number += 1
        repo.issues[issue.number] = issue
        body = _issue_json(repo, issue)
        return JSONResponse(body, status_code=201, headers={"location": body["url"]})

    async def list_issues(request: Request) -> Response:
        repo = _repo(request)
        if isinstance(repo, Response):
            return repo
        q = request.query_params
        state = q.get("state", "open")
        if state not in (*STATES, "all"):
            return _validation_failed(
                [{"resource": "Issue", "field": "state", "code": "invalid", "value": state}]
            )
        wanted = {x.strip() for x in q.get("labels", "").split(",") if x.strip()}
        per_page = _per_page(request)
        if isinstance(per_page, Response):
            return per_page
        raw_page = q.get("page", "1")
        page = max(1, int(raw_page)) if raw_page.isdigit() else 1
        rows = [
            i
            for i in repo.issues.values()
            if (state == "all" or i.state == state) and wanted <= set(i.labels)
        ]
        rows.sort(key=lambda i: i.number, reverse=q.get("direction", "desc") != "asc")
        chunk = rows[(page - 1) * per_page : page * per_page]
        return JSONResponse([_issue_json(repo, i) for i in chunk])

    async def get_issue(request: Request) -> Response:
        found = _issue(request)
        if isinstance(found, Response):
            return found
        return JSONResponse(_issue_json(*found))

    async def update_issue(request: Request) -> Response:
        found = _issue(request)
        if isinstance(found, Response):
            return found
        repo, issue = found
        data = await _body(request)
        if isinstance(data, Response):
            return data
        state = data.get("state", issue.state)
        reason = data.get("state_reason")
        if state not in STATES:
            return _validation_failed(
                [{"resource": "Issue", "field": "state", "code": "invalid", "value": state}]
            )
        if reason is not None and reason not in STATE_REASONS:
            return _validation_failed(
                [{"resource": "Issue", "field": "state_reason", "code": "invalid"}]
            )
        if "labels" in data and _bad_labels(data["labels"]):
            return _validation_failed([{"resource": "Issue", "field": "labels", "code": "invalid"}])
        if "title" in data and not str(data["title"] or "").strip():
            return _validation_failed(
                [{"resource": "Issue", "field": "title", "code": "missing_field"}]
            )
        now = _iso(world)
        if state == "closed" and issue.state != "closed":
            issue.closed_at = now
            issue.state_reason = reason or "completed"
        elif state == "open" and issue.state == "closed":
            issue.closed_at = None
            issue.state_reason = "reopened"
        elif reason is not None:
            issue.state_reason = reason
        issue.state = state
        if "title" in data:
            issue.title = str(data["title"])
        if "body" in data:
            issue.body = data["body"]
        if "labels" in data:
            issue.labels = list(dict.fromkeys(data["labels"]))
        issue.updated_at = now
        return JSONResponse(_issue_json(repo, issue))

    async def comments(request: Request) -> Response:
        found = _issue(request)
        if isinstance(found, Response):
            return found
        repo, issue = found
        if request.method == "GET":
            return JSONResponse(issue.comments)
        data = await _body(request)
        if isinstance(data, Response):
            return data
        text = data.get("body")
        if not isinstance(text, str) or not text.strip():
            return _validation_failed(
                [{"resource": "IssueComment", "field": "body", "code": "missing_field"}]
            )
        state = _state(world)
        cid = state.next_id
        state.next_id += 1
        now = _iso(world)
        comment = {
            "id": cid,
            "html_url": f"{WEB}/{repo.full_name}/issues/{issue.number}#issuecomment-{cid}",
            "body": text,
            "user": {"login": "runbook-bot", "type": "Bot"},
            "created_at": now,
            "updated_at": now,
        }
        issue.comments.append(comment)
        issue.updated_at = now
        return JSONResponse(comment, status_code=201)

    async def list_commits(request: Request) -> Response:
        repo = _repo(request)
        if isinstance(repo, Response):
            return repo
        per_page = _per_page(request)
        if isinstance(per_page, Response):
            return per_page
        log = commit_log(world, repo.full_name)
        return JSONResponse([_commit_json(repo, c) for c in log[:per_page]])

    base = "/repos/{owner}/{repo}"
    return [
        Route(f"{base}/issues", create_issue, methods=["POST"]),
        Route(f"{base}/issues", list_issues, methods=["GET"]),
        Route(f"{base}/issues/{{number}}", get_issue, methods=["GET"]),
        Route(f"{base}/issues/{{number}}", update_issue, methods=["PATCH"]),
        Route(f"{base}/issues/{{number}}/comments", comments, methods=["GET", "POST"]),
        Route(f"{base}/commits", list_commits, methods=["GET"]),
    ]
