"""Jira Cloud: the client's error mapping on fakes, every operation against the sandbox, the block."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from blocks.tickets import GitHubRepository, JiraProject, ticket_client
from runbook.clients.github import GitHubClient
from runbook.clients.jira import JiraClient, adf_document, adf_text, jql_string
from runbook.errors import JiraPermanentError, JiraTransientError
from runbook.sandbox import jira as sandbox_jira
from runbook.sandbox.core import DEFAULT_TOKEN, FaultRule, World
from tests.conftest import sandbox_url

EMAIL = "bot@acme.test"
SECRET = "ATATT" + "s3cr3t" * 5


# --- the sandbox, in-process ---------------------------------------------------------------------


@pytest.fixture
def transport(sandbox_transport: httpx.ASGITransport) -> httpx.ASGITransport:
    """The shared in-process sandbox (every vendor mounted, faults and request log included)."""
    return sandbox_transport


@pytest.fixture
def client(transport: httpx.ASGITransport) -> JiraClient:
    return JiraClient(sandbox_url("jira"), EMAIL, DEFAULT_TOKEN, "OPS", transport=transport)


def _raw(transport: httpx.AsyncBaseTransport, token: str = DEFAULT_TOKEN) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=sandbox_url("jira"), transport=transport, auth=httpx.BasicAuth(EMAIL, token)
    )


def _fields(**over: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "project": {"key": "OPS"},
        "issuetype": {"name": "Incident"},
        "summary": "s",
        "description": adf_document("d"),
        "labels": [],
    }
    fields.update(over)
    return {"fields": fields}


# --- ADF and JQL helpers -------------------------------------------------------------------------


def test_adf_document_splits_paragraphs_and_lines() -> None:
    """Blank lines make paragraphs, single newlines hard breaks, and the text survives a round trip."""
    doc = adf_document("Impact: checkout\nSeverity: P1\n\nNext update in 30 min")
    assert doc["type"] == "doc" and doc["version"] == 1 and len(doc["content"]) == 2
    first = doc["content"][0]["content"]
    assert [n["type"] for n in first] == ["text", "hardBreak", "text"]
    assert adf_text(doc) == "Impact: checkout\nSeverity: P1\n\nNext update in 30 min"
    assert adf_document("") == {
        "type": "doc",
        "version": 1,
        "content": [{"type": "paragraph", "content": []}],
    }


def test_jql_string_escapes_quotes() -> None:
    """A label with a quote or backslash is escaped inside the JQL string literal."""
    assert jql_string('a"b\\c') == '"a\\"b\\\\c"'


def test_sandbox_jql_subset() -> None:
    """The sandbox parses project/labels clauses joined by AND and rejects anything else."""
    assert sandbox_jira.parse_jql(
        'project = OPS AND labels = "incident:INC-1" ORDER BY created'
    ) == {
        "project": ["OPS"],
        "labels": ["incident:INC-1"],
    }
    for bad in ("", "summary ~ db", 'labels = "a" OR labels = "b"', "project = OPS labels = x"):
        with pytest.raises(ValueError):
            sandbox_jira.parse_jql(bad)


# --- error mapping on fakes ----------------------------------------------------------------------


def _fake(responses: list[httpx.Response | Exception], calls: list[httpx.Request]) -> JiraClient:
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        item = responses[min(len(calls), len(responses)) - 1]
        if isinstance(item, Exception):
            raise item
        return item

    return JiraClient(
        "https://acme.atlassian.test", EMAIL, SECRET, "OPS", transport=httpx.MockTransport(handler)
    )


_ISSUE = {
    "id": "10001",
    "key": "OPS-1",
    "fields": {"summary": "s", "status": {"name": "To Do", "statusCategory": {"key": "new"}}},
}


async def test_basic_auth_and_429_retry_after() -> None:
    """Calls carry basic email:token auth; a 429 with Retry-After 0.2 is waited out, then succeeds."""
    calls: list[httpx.Request] = []
    limited = httpx.Response(
        429, json={"errorMessages": ["Rate limit exceeded."]}, headers={"Retry-After": "0.2"}
    )
    start = time.monotonic()
    async with _fake([limited, httpx.Response(200, json=_ISSUE)], calls) as client:
        ticket = await client.get_issue("OPS-1")
    assert time.monotonic() - start >= 0.19 and len(calls) == 2
    expected = "Basic " + base64.b64encode(f"{EMAIL}:{SECRET}".encode()).decode()
    assert calls[0].headers["authorization"] == expected
    assert ticket.ref == "OPS-1" and ticket.url == "https://acme.atlassian.test/browse/OPS-1"


async def test_5xx_is_retried_then_transient() -> None:
    """A persistent 503 is retried and then raised as JiraTransientError with the status."""
    calls: list[httpx.Request] = []
    down = httpx.Response(
        503, json={"errorMessages": ["down"], "errors": {}}, headers={"Retry-After": "0"}
    )
    async with _fake([down], calls) as client:
        client.max_retries = 1
        with pytest.raises(JiraTransientError) as info:
            await client.find_issue("x")
    assert len(calls) == 2 and info.value.status_code == 503


async def test_400_field_errors_are_permanent_with_jiras_messages() -> None:
    """A 400 names Jira's field errors and says what to fix, without retrying."""
    calls: list[httpx.Request] = []
    bad = httpx.Response(
        400,
        json={
            "errorMessages": [],
            "errors": {"summary": "You must specify a summary of the issue."},
        },
    )
    async with _fake([bad], calls) as client:
        with pytest.raises(JiraPermanentError) as info:
            await client.create_issue("", "b")
    assert len(calls) == 1
    assert "summary: You must specify a summary of the issue." in str(info.value)
    assert "fix the fields" in str(info.value)


async def test_401_is_permanent_without_the_token() -> None:
    """A 401 says to check the email and API token, and never contains the token."""
    calls: list[httpx.Request] = []
    bad = httpx.Response(401, json={"errorMessages": ["You are not authenticated."], "errors": {}})
    async with _fake([bad], calls) as client:
        with pytest.raises(JiraPermanentError) as info:
            await client.comment("OPS-1", "x")
    assert "API token" in str(info.value) and SECRET not in str(info.value)
    assert info.value.vendor_message == "You are not authenticated."


async def test_timeout_is_transient() -> None:
    """A connect timeout is a JiraTransientError."""
    calls: list[httpx.Request] = []
    async with _fake([httpx.ConnectTimeout("no route")], calls) as client:
        client.max_retries = 0
        with pytest.raises(JiraTransientError):
            await client.get_issue("OPS-1")


async def test_close_without_a_done_transition_is_permanent() -> None:
    """An issue whose workflow offers no Done transition fails, naming the transitions available."""
    calls: list[httpx.Request] = []
    transitions = {"transitions": [{"id": "5", "name": "Escalate", "to": {"name": "Escalated"}}]}
    async with _fake(
        [httpx.Response(200, json=_ISSUE), httpx.Response(200, json=transitions)], calls
    ) as client:
        with pytest.raises(JiraPermanentError, match="Escalate"):
            await client.close_issue("OPS-1", comment="done")
    assert [c.method for c in calls] == ["GET", "GET"]  # no comment posted when it cannot close


def test_bad_project_key_is_rejected_at_construction() -> None:
    """A lowercase project key is a permanent error saying to use the uppercase key."""
    with pytest.raises(JiraPermanentError, match="uppercase"):
        JiraClient("https://acme.atlassian.test", EMAIL, SECRET, "ops")


# --- every operation against the sandbox ---------------------------------------------------------


async def test_create_issue_lands_in_the_sandbox(client: JiraClient, world: World) -> None:
    """create_issue makes OPS-1 of type Incident with an ADF description and labels, status To Do."""
    async with client:
        ticket = await client.create_issue("DB down", "Line one\n\nLine two", ["incident", "P1"])
    [issue] = sandbox_jira.issues(world)
    assert (issue.key, issue.summary, issue.issue_type) == ("OPS-1", "DB down", "Incident")
    assert (
        issue.labels == ["incident", "P1"] and adf_text(issue.description) == "Line one\n\nLine two"
    )
    assert ticket.ref == "OPS-1" and ticket.status == "To Do" and not ticket.closed
    assert ticket.url == sandbox_url("jira") + "/browse/OPS-1"
    reqs = world.requests_for("jira")
    assert [(r.method, r.path, r.status) for r in reqs] == [
        ("POST", "/rest/api/3/issue", 201),
        ("GET", "/rest/api/3/issue/OPS-1", 200),
    ]
    assert reqs[0].headers["authorization"] == "***"


async def test_ensure_issue_twice_makes_one_issue(client: JiraClient, world: World) -> None:
    """ensure_issue searches the label before creating: called twice, one issue exists."""
    async with client:
        first, created1 = await client.ensure_issue("INC-42", "b", ["incident"], "incident:INC-42")
        second, created2 = await client.ensure_issue("INC-42", "b", ["incident"], "incident:INC-42")
    assert (created1, created2) == (True, False) and first.key == second.key == "OPS-1"
    assert len(sandbox_jira.issues(world)) == 1
    searches = world.requests_for("jira", path="/search/jql$")
    assert len(searches) == 2 and "incident%3AINC-42" in searches[0].query


async def test_find_issue_ignores_other_labels(client: JiraClient) -> None:
    """find_issue returns the issue with the label and None for a label nobody has."""
    async with client:
        await client.create_issue("other", "", ["incident:INC-1"])
        mine = await client.create_issue("mine", "", ["incident:INC-2"])
        found = await client.find_issue("incident:INC-2")
        missing = await client.find_issue("incident:INC-3")
    assert found is not None and found.key == mine.key and found.title == "mine"
    assert missing is None


async def test_comment_and_close_through_the_done_transition(
    client: JiraClient, world: World
) -> None:
    """comment adds an ADF comment; close_issue comments and moves to Done once, even if retried."""
    async with client:
        ticket = await client.create_issue("t", "b", [])
        note = await client.comment(ticket.key, "Rolled back")
        closed = await client.close_issue(ticket.key, comment="Resolved")
        again = await client.close_issue(ticket.key, comment="Resolved")
    [issue] = sandbox_jira.issues(world)
    assert [adf_text(c["body"]) for c in issue.comments] == ["Rolled back", "Resolved"]
    assert note.url.endswith(f"focusedCommentId={note.id}")
    assert issue.status == "Done" and issue.resolution == "Done"
    assert closed.closed and closed.status == "Done" and again.closed
    posts = world.requests_for("jira", path="/transitions$")
    assert [r.method for r in posts] == ["GET", "POST"]
    assert json.loads(posts[1].body) == {"transition": {"id": "31"}} and posts[1].status == 204


async def test_sandbox_rate_limit_fault_is_retried(client: JiraClient, world: World) -> None:
    """An injected 429 with Retry-After is waited out and the search then succeeds."""
    world.add_fault(FaultRule(vendor="jira", kind="rate_limit", retry_after=0.05, remaining=1))
    async with client:
        assert await client.find_issue("x") is None
    assert [(r.status, r.fault) for r in world.requests_for("jira")] == [
        (429, "rate_limit"),
        (200, None),
    ]


# --- the sandbox's own answers -------------------------------------------------------------------


async def test_wrong_token_gets_jiras_401_body(transport: httpx.ASGITransport) -> None:
    """A wrong API token gets Jira's errorMessages body; the client raises a permanent error."""
    async with _raw(transport, token="nope") as raw:
        resp = await raw.get("/rest/api/3/issue/OPS-1")
    assert resp.status_code == 401
    assert resp.json()["errors"] == {} and "not authenticated" in resp.json()["errorMessages"][0]
    client = JiraClient(sandbox_url("jira"), EMAIL, "nope", "OPS", transport=transport)
    async with client:
        with pytest.raises(JiraPermanentError, match="not authenticated"):
            await client.find_issue("x")


async def test_bearer_token_is_accepted(transport: httpx.ASGITransport) -> None:
    """A Bearer token equal to the world's token is accepted too."""
    async with httpx.AsyncClient(
        base_url=sandbox_url("jira"),
        transport=transport,
        headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"},
    ) as raw:
        resp = await raw.post("/rest/api/3/issue", json=_fields())
    assert resp.status_code == 201 and resp.json()["key"] == "OPS-1"


async def test_malformed_requests_get_jiras_400_shape(transport: httpx.ASGITransport) -> None:
    """Missing summary, unknown project or type, non-ADF description and bad JQL get Jira's 400s."""
    async with _raw(transport) as raw:
        no_summary = await raw.post("/rest/api/3/issue", json=_fields(summary=""))
        bad_project = await raw.post("/rest/api/3/issue", json=_fields(project={"key": "NOPE"}))
        bad_type = await raw.post("/rest/api/3/issue", json=_fields(issuetype={"name": "Epic"}))
        not_adf = await raw.post("/rest/api/3/issue", json=_fields(description="plain"))
        spaced = await raw.post("/rest/api/3/issue", json=_fields(labels=["two words"]))
        bad_jql = await raw.get("/rest/api/3/search/jql", params={"jql": "summary ~ db"})
        unbounded = await raw.get("/rest/api/3/search/jql")
        bad_json = await raw.post("/rest/api/3/issue", content=b"{")
    assert no_summary.status_code == 400
    assert no_summary.json() == {
        "errorMessages": [],
        "errors": {"summary": "You must specify a summary of the issue."},
    }
    assert "project" in bad_project.json()["errors"] and "issuetype" in bad_type.json()["errors"]
    assert "description" in not_adf.json()["errors"] and "labels" in spaced.json()["errors"]
    for resp in (bad_jql, unbounded, bad_json):
        assert resp.status_code == 400 and resp.json()["errorMessages"]


async def test_transitions_and_an_invalid_transition(transport: httpx.ASGITransport) -> None:
    """Transitions list the other statuses; an unknown transition id is a 400 errorMessages."""
    async with _raw(transport) as raw:
        await raw.post("/rest/api/3/issue", json=_fields())
        listed = await raw.get("/rest/api/3/issue/OPS-1/transitions")
        bad = await raw.post(
            "/rest/api/3/issue/OPS-1/transitions", json={"transition": {"id": "99"}}
        )
        missing = await raw.get("/rest/api/3/issue/OPS-9")
    names = {t["name"]: t["to"]["name"] for t in listed.json()["transitions"]}
    assert names == {"In Progress": "In Progress", "Done": "Done"}
    assert bad.status_code == 400 and "not valid" in bad.json()["errorMessages"][0]
    assert missing.status_code == 404 and missing.json()["errorMessages"]


async def test_unknown_issue_type_is_a_permanent_error(transport: httpx.ASGITransport) -> None:
    """A client configured with an issue type the project lacks fails naming the issuetype field."""
    client = JiraClient(
        sandbox_url("jira"), EMAIL, DEFAULT_TOKEN, "OPS", issue_type="Epic", transport=transport
    )
    async with client:
        with pytest.raises(JiraPermanentError, match="issuetype"):
            await client.create_issue("t", "b")


# --- the block and ticket_client -----------------------------------------------------------------


def test_block_validates_key_site_and_email() -> None:
    """Lowercase keys, non-URL sites and non-emails are rejected; the token stays out of the repr."""
    good = dict(
        site_url="https://acme.atlassian.net", email=EMAIL, api_token=SECRET, project_key="OPS"
    )
    block = JiraProject.model_validate(good)
    assert SECRET not in repr(block) and block.issue_type == "Incident"
    for field, value in (
        ("project_key", "ops"),
        ("site_url", "acme.atlassian.net"),
        ("email", "bot"),
    ):
        with pytest.raises(ValidationError, match=field):
            JiraProject.model_validate({**good, field: value})


async def test_ticket_client_takes_either_block(
    transport: httpx.ASGITransport, world: World
) -> None:
    """ticket_client gives a JiraClient for a JiraProject, a GitHubClient for a GitHubRepository."""
    jira = JiraProject(
        site_url=sandbox_url("jira"),
        email=EMAIL,
        api_token=SecretStr(DEFAULT_TOKEN),
        project_key="OPS",
    )
    client = ticket_client(jira, transport=transport)
    assert isinstance(client, JiraClient)
    async with client:
        ticket, created = await client.ensure_issue("t", "b", [], "incident:INC-5")
    assert created and ticket.key == "OPS-1" and world.requests_for("jira")
    github = GitHubRepository(token=SecretStr("t"), repo="acme/web")
    github_client = ticket_client(github)
    assert isinstance(github_client, GitHubClient)
    await github_client.aclose()
    with pytest.raises(TypeError, match="GitHubRepository or JiraProject"):
        ticket_client("jira")  # type: ignore[arg-type]
