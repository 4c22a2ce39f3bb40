"""GitHub: the client's error mapping on fakes, every operation against the sandbox, the block."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from blocks.tickets import GitHubRepository, ticket_client
from runbook.clients.github import GitHubClient
from runbook.errors import GitHubPermanentError, GitHubTransientError
from runbook.sandbox import github as sandbox_github
from runbook.sandbox.core import DEFAULT_TOKEN, FaultRule, World
from tests.conftest import sandbox_url

TOKEN = "ghp_" + "s3cr3t" * 5
REPO = "acme/web"


# --- the sandbox, in-process ---------------------------------------------------------------------


@pytest.fixture
def transport(sandbox_transport: httpx.ASGITransport) -> httpx.ASGITransport:
    """The shared in-process sandbox (every vendor mounted, faults and request log included)."""
    return sandbox_transport


@pytest.fixture
def client(transport: httpx.ASGITransport) -> GitHubClient:
    return GitHubClient(sandbox_url("github"), DEFAULT_TOKEN, REPO, transport=transport)


def _raw(transport: httpx.AsyncBaseTransport, token: str = DEFAULT_TOKEN) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=sandbox_url("github"),
        transport=transport,
        headers={"Authorization": f"Bearer {token}"},
    )


# --- error mapping on fakes ----------------------------------------------------------------------


def _fake(responses: list[httpx.Response | Exception], calls: list[httpx.Request]) -> GitHubClient:
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        item = responses[min(len(calls), len(responses)) - 1]
        if isinstance(item, Exception):
            raise item
        return item

    return GitHubClient(
        "https://api.github.test", TOKEN, REPO, transport=httpx.MockTransport(handler)
    )


_ISSUE = {
    "id": 1,
    "number": 7,
    "html_url": "https://github.com/acme/web/issues/7",
    "title": "t",
    "state": "open",
    "labels": [{"name": "incident"}],
}


async def test_429_with_retry_after_is_waited_then_retried() -> None:
    """A secondary-limit 429 with retry-after 0.2 is waited out and the create then succeeds."""
    calls: list[httpx.Request] = []
    stamps: list[float] = []
    limited = httpx.Response(
        429,
        json={"message": "You have exceeded a secondary rate limit"},
        headers={"retry-after": "0.2"},
    )
    client = _fake([limited, httpx.Response(201, json=_ISSUE)], calls)
    start = time.monotonic()
    async with client:
        ticket = await client.create_issue("t", "b", ["incident"])
    stamps.append(time.monotonic() - start)
    assert len(calls) == 2 and stamps[0] >= 0.19
    assert ticket.ref == "acme/web#7" and ticket.key == "7" and ticket.labels == ["incident"]


async def test_403_rate_limit_is_transient_with_retry_after_from_reset() -> None:
    """A 403 with x-ratelimit-remaining 0 is transient; retry_after comes from x-ratelimit-reset."""
    calls: list[httpx.Request] = []
    reset = int(time.time()) + 600
    limited = httpx.Response(
        403,
        json={"message": "API rate limit exceeded for user ID 1."},
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
    )
    async with _fake([limited], calls) as client:
        with pytest.raises(GitHubTransientError) as info:
            await client.find_issue("incident:INC-1")
    # 600 s is past the in-client cap: raised at once for Prefect's task retry
    assert len(calls) == 1
    assert info.value.status_code == 403 and 590 <= (info.value.retry_after or 0) <= 601
    assert "API rate limit exceeded" in str(info.value)


async def test_403_rate_limit_with_near_reset_is_retried_in_client() -> None:
    """A 403 rate limit whose reset has already passed is retried and then succeeds."""
    calls: list[httpx.Request] = []
    limited = httpx.Response(
        403,
        json={"message": "API rate limit exceeded"},
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(time.time()) - 1)},
    )
    async with _fake([limited, httpx.Response(200, json=[])], calls) as client:
        assert await client.find_issue("x") is None
    assert len(calls) == 2


async def test_403_forbidden_is_permanent_with_githubs_message() -> None:
    """A 403 that is not a rate limit fails at once with GitHub's message, what to fix, no token."""
    calls: list[httpx.Request] = []
    forbidden = httpx.Response(
        403,
        json={"message": "Resource not accessible by integration"},
        headers={"x-ratelimit-remaining": "4999"},
    )
    async with _fake([forbidden], calls) as client:
        with pytest.raises(GitHubPermanentError) as info:
            await client.create_issue("t", "b", [])
    assert len(calls) == 1
    text = str(info.value)
    assert "Resource not accessible by integration" in text and "permission" in text
    assert TOKEN not in text and info.value.status_code == 403


async def test_403_secondary_limit_without_headers_waits_a_minute() -> None:
    """A 403 secondary rate limit with no headers is transient with GitHub's advised 60 s wait."""
    calls: list[httpx.Request] = []
    limited = httpx.Response(
        403, json={"message": "You have exceeded a secondary rate limit. Please wait."}
    )
    async with _fake([limited], calls) as client:
        with pytest.raises(GitHubTransientError) as info:
            await client.create_issue("t", "b", [])
    assert len(calls) == 1 and info.value.retry_after == 60.0


async def test_5xx_is_retried_then_raised_as_transient() -> None:
    """A persistent 502 is retried (max_retries) and then raised as GitHubTransientError."""
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(502, json={"message": "Server Error"}, headers={"retry-after": "0"})

    client = GitHubClient(
        "https://api.github.test",
        TOKEN,
        REPO,
        transport=httpx.MockTransport(handler),
        max_retries=2,
    )
    async with client:
        with pytest.raises(GitHubTransientError) as info:
            await client.recent_commits()
    assert len(calls) == 3 and info.value.status_code == 502


async def test_422_is_permanent_with_the_field_errors() -> None:
    """A 422 names GitHub's message and the failing field, and is not retried."""
    calls: list[httpx.Request] = []
    invalid = httpx.Response(
        422,
        json={
            "message": "Validation Failed",
            "errors": [{"resource": "Issue", "field": "title", "code": "missing_field"}],
        },
    )
    async with _fake([invalid], calls) as client:
        with pytest.raises(GitHubPermanentError) as info:
            await client.create_issue("", "b", [])
    assert len(calls) == 1
    assert "Validation Failed" in str(info.value) and "title missing_field" in str(info.value)


async def test_timeout_is_transient() -> None:
    """A read timeout on every try ends as GitHubTransientError."""
    calls: list[httpx.Request] = []
    async with _fake([httpx.ReadTimeout("slow")], calls) as client:
        client.max_retries = 0
        with pytest.raises(GitHubTransientError):
            await client.get_issue(1)
    assert len(calls) == 1


async def test_401_is_permanent_and_says_to_check_the_token() -> None:
    """Bad credentials fail at once, say to check the token, and never include it."""
    calls: list[httpx.Request] = []
    bad = httpx.Response(401, json={"message": "Bad credentials"})
    async with _fake([bad], calls) as client:
        with pytest.raises(GitHubPermanentError) as info:
            await client.comment(3, "hi")
    assert "Bad credentials" in str(info.value) and "token" in str(info.value)
    assert TOKEN not in str(info.value)


def test_bad_repo_is_rejected_at_construction() -> None:
    """A repo that is not owner/name is a permanent error naming the setting to fix."""
    with pytest.raises(GitHubPermanentError, match="owner/name"):
        GitHubClient("https://api.github.test", TOKEN, "just-a-name")


async def test_find_issue_skips_pull_requests_and_takes_the_oldest() -> None:
    """Pull requests in the issues list are ignored and the lowest-numbered issue wins."""
    rows = [
        {**_ISSUE, "number": 9, "pull_request": {"url": "x"}},
        {**_ISSUE, "number": 8},
        {**_ISSUE, "number": 5},
    ]
    calls: list[httpx.Request] = []
    async with _fake([httpx.Response(200, json=rows)], calls) as client:
        found = await client.find_issue("incident:INC-1")
    assert found is not None and found.key == "5"
    assert (
        calls[0].url.params["state"] == "all" and calls[0].url.params["labels"] == "incident:INC-1"
    )


# --- every operation against the sandbox ---------------------------------------------------------


async def test_create_issue_lands_in_the_sandbox(client: GitHubClient, world: World) -> None:
    """create_issue makes one issue with the title, body and labels, via one POST."""
    async with client:
        ticket = await client.create_issue(
            "DB down", "Postgres refuses connections", ["incident", "P1"]
        )
    [issue] = sandbox_github.issues(world)
    assert (issue.title, issue.body, issue.labels) == (
        "DB down",
        "Postgres refuses connections",
        ["incident", "P1"],
    )
    assert ticket.ref == f"{REPO}#{issue.number}" and ticket.status == "open" and not ticket.closed
    assert ticket.url == f"https://github.com/{REPO}/issues/{issue.number}"
    [req] = world.requests_for("github")
    assert (req.method, req.path, req.status) == ("POST", "/repos/acme/web/issues", 201)
    assert req.headers["authorization"] == "***"


async def test_ensure_issue_twice_makes_one_issue(client: GitHubClient, world: World) -> None:
    """ensure_issue looks before it creates: called twice, it leaves exactly one issue."""
    async with client:
        first, created1 = await client.ensure_issue(
            "INC-42", "body", ["incident"], "incident:INC-42"
        )
        second, created2 = await client.ensure_issue(
            "INC-42", "body", ["incident"], "incident:INC-42"
        )
    assert created1 is True and created2 is False and first.ref == second.ref
    assert len(sandbox_github.issues(world)) == 1
    assert sandbox_github.issues(world)[0].labels == ["incident", "incident:INC-42"]
    methods = [r.method for r in world.requests_for("github")]
    assert methods == ["GET", "POST", "GET"]


async def test_find_issue_filters_by_every_label_and_sees_closed(
    client: GitHubClient, world: World
) -> None:
    """find_issue finds a closed issue by its label and ignores issues without it."""
    async with client:
        await client.create_issue("other", "", ["incident"])
        ticket = await client.create_issue("mine", "", ["incident", "incident:INC-7"])
        await client.close_issue(ticket.key)
        found = await client.find_issue("incident:INC-7")
        missing = await client.find_issue("incident:INC-8")
    assert found is not None and found.title == "mine" and found.closed
    assert missing is None
    query = world.requests_for("github", path=r"/issues$")[-1].query
    assert "state=all" in query


async def test_comment_and_close(client: GitHubClient, world: World) -> None:
    """comment adds a comment; close_issue comments, closes as completed, and is idempotent."""
    async with client:
        ticket = await client.create_issue("t", "b", [])
        note = await client.comment(ticket.key, "Rolled back to dpl_abc")
        closed = await client.close_issue(ticket.key, comment="Resolved")
        again = await client.close_issue(ticket.key, comment="Resolved")
    [issue] = sandbox_github.issues(world)
    assert [c["body"] for c in issue.comments] == ["Rolled back to dpl_abc", "Resolved"]
    assert note.url.endswith(f"#issuecomment-{note.id}")
    assert issue.state == "closed" and issue.state_reason == "completed" and issue.closed_at
    assert closed.closed and again.closed and closed.status == "closed"
    patches = [r for r in world.requests_for("github") if r.method == "PATCH"]
    assert len(patches) == 1 and json.loads(patches[0].body)["state"] == "closed"


async def test_recent_commits_is_the_oneline_log(client: GitHubClient, world: World) -> None:
    """recent_commits(10) returns the 10 newest commits, newest first, with one-line summaries."""
    newest = sandbox_github.add_commit(world, "Hotfix: revert pricing query\n\nDetails")
    async with client:
        commits = await client.recent_commits(10)
    assert len(commits) == 10 and commits[0].sha == newest.sha
    assert commits[0].oneline == f"{newest.sha[:7]} Hotfix: revert pricing query"
    assert [c.date for c in commits] == sorted((c.date for c in commits), reverse=True)
    assert world.requests_for("github", path="/commits$")[-1].query == "per_page=10"


async def test_recent_commits_include_the_vercel_deploys_commit(
    client: GitHubClient, world: World
) -> None:
    """A deployment staged in the sandbox's Vercel shows in the commit log with its sha and message."""
    from runbook.sandbox import vercel as sandbox_vercel

    if sandbox_vercel.NAME not in world.state:
        sandbox_vercel.init_state(world)
    dep = sandbox_vercel.add_deployment(
        world, message="Rewrite pricing query", uid_prefix="dpl_bad"
    )
    async with client:
        commits = await client.recent_commits(5)
    assert commits[0].sha == dep.meta["githubCommitSha"]
    assert commits[0].message == "Rewrite pricing query"


async def test_sandbox_rate_limit_fault_is_retried(client: GitHubClient, world: World) -> None:
    """An injected 429 with a short retry-after is waited out and the call succeeds."""
    world.add_fault(FaultRule(vendor="github", kind="rate_limit", retry_after=0.05, remaining=1))
    async with client:
        commits = await client.recent_commits(3)
    assert len(commits) == 3
    assert [(r.status, r.fault) for r in world.requests_for("github")] == [
        (429, "rate_limit"),
        (200, None),
    ]


async def test_sandbox_primary_rate_limit_shape(
    transport: httpx.ASGITransport, world: World
) -> None:
    """An injected 403 rate limit carries x-ratelimit-remaining 0 and reset; the client types it transient."""
    world.add_fault(FaultRule(vendor="github", kind="rate_limit", status=403, retry_after=120))
    async with _raw(transport) as raw:
        resp = await raw.get("/repos/acme/web/commits")
    assert resp.status_code == 403 and resp.headers["x-ratelimit-remaining"] == "0"
    assert int(resp.headers["x-ratelimit-reset"]) >= time.time() + 119
    assert resp.json()["documentation_url"] == "https://docs.github.com/rest"
    client = GitHubClient(sandbox_url("github"), DEFAULT_TOKEN, REPO, transport=transport)
    async with client:
        with pytest.raises(GitHubTransientError) as info:
            await client.recent_commits()
    assert info.value.retry_after is not None and info.value.retry_after > 100


# --- the sandbox's own answers: auth and malformed requests --------------------------------------


async def test_wrong_token_gets_githubs_401_body(transport: httpx.ASGITransport) -> None:
    """A wrong token gets GitHub's own 401 body, and the client raises a permanent error."""
    async with _raw(transport, token="nope") as raw:
        resp = await raw.get("/repos/acme/web/issues")
    assert resp.status_code == 401
    assert resp.json() == {
        "message": "Bad credentials",
        "documentation_url": "https://docs.github.com/rest",
    }
    client = GitHubClient(sandbox_url("github"), "nope", REPO, transport=transport)
    async with client:
        with pytest.raises(GitHubPermanentError, match="Bad credentials"):
            await client.find_issue("x")


async def test_token_scheme_is_accepted_and_unknown_repo_is_404(
    transport: httpx.ASGITransport,
) -> None:
    """The legacy 'token <t>' scheme works; a repository other than acme/web is GitHub's 404."""
    async with httpx.AsyncClient(
        base_url=sandbox_url("github"),
        transport=transport,
        headers={"Authorization": f"token {DEFAULT_TOKEN}"},
    ) as raw:
        ok = await raw.get("/repos/acme/web/issues")
        missing = await raw.get("/repos/acme/api/issues")
    assert ok.status_code == 200 and ok.json() == []
    assert missing.status_code == 404 and missing.json()["message"] == "Not Found"


async def test_malformed_requests_get_githubs_errors(transport: httpx.ASGITransport) -> None:
    """No title is a 422 Validation Failed naming the field; bad JSON a 400; a bad state a 422."""
    async with _raw(transport) as raw:
        no_title = await raw.post("/repos/acme/web/issues", json={"body": "x"})
        bad_json = await raw.post("/repos/acme/web/issues", content=b"{not json")
        bad_state = await raw.get("/repos/acme/web/issues", params={"state": "gone"})
        bad_labels = await raw.post("/repos/acme/web/issues", json={"title": "t", "labels": "a"})
    assert no_title.status_code == 422
    assert no_title.json()["message"] == "Validation Failed"
    assert no_title.json()["errors"][0]["field"] == "title"
    assert bad_json.status_code == 400 and bad_json.json()["message"] == "Problems parsing JSON"
    assert bad_state.status_code == 422 and bad_labels.status_code == 422


async def test_list_filters_by_all_labels_and_state(transport: httpx.ASGITransport) -> None:
    """labels=a,b returns only issues with both labels; state=closed only closed ones."""
    async with _raw(transport) as raw:
        await raw.post("/repos/acme/web/issues", json={"title": "ab", "labels": ["a", "b"]})
        await raw.post("/repos/acme/web/issues", json={"title": "a", "labels": ["a"]})
        await raw.patch("/repos/acme/web/issues/2", json={"state": "closed"})
        both = await raw.get("/repos/acme/web/issues", params={"labels": "a,b"})
        closed = await raw.get("/repos/acme/web/issues", params={"state": "closed"})
        reopened = await raw.patch("/repos/acme/web/issues/2", json={"state": "open"})
    assert [i["title"] for i in both.json()] == ["ab"]
    assert [i["title"] for i in closed.json()] == ["a"]
    assert reopened.json()["state_reason"] == "reopened" and reopened.json()["closed_at"] is None


# --- the block -------------------------------------------------------------------------------------


def test_block_validates_repo_and_hides_the_token() -> None:
    """A repo that is not owner/name is rejected clearly; the token never shows in the block's repr."""
    with pytest.raises(ValidationError, match="owner/name"):
        GitHubRepository(token=SecretStr(TOKEN), repo="web")
    block = GitHubRepository(token=SecretStr(TOKEN), repo=REPO)
    assert TOKEN not in repr(block) and block.base_url == "https://api.github.com"


async def test_block_client_works_against_the_sandbox(
    transport: httpx.ASGITransport, world: World
) -> None:
    """The block's client (and ticket_client of the block) reaches the sandbox with its token."""
    block = GitHubRepository(
        token=SecretStr(DEFAULT_TOKEN), repo=REPO, base_url=sandbox_url("github") + "/"
    )
    client = ticket_client(block, transport=transport)
    assert isinstance(client, GitHubClient)
    async with client:
        ticket, created = await client.ensure_issue("t", "b", [], "incident:INC-1")
    assert created and ticket.ref == "acme/web#1"
    assert world.requests_for("github")[-1].status == 201
