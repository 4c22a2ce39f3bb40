"""GitHub issues and commits: the incident ticket and the triage's "what changed recently".

Speaks the REST API (``https://api.github.com``, ``Authorization: Bearer <token>``). Creating an issue
is not idempotent upstream, so ``ensure_issue`` looks for the incident's unique label first.

Also home of the tracker-neutral ``Ticket`` and ``Comment`` models, which the Jira client reuses so a
flow can hold "a ticket" without caring which tracker made it.

GitHub's rate limits come in two shapes: 429 with Retry-After (secondary limits), and 403 with
``x-ratelimit-remaining: 0`` plus ``x-ratelimit-reset`` (the primary limit). Both are transient;
any other 403 is a permission problem and permanent.
"""

from __future__ import annotations

import re
import time
from typing import Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from runbook.clients.base import DEFAULT_TIMEOUT, BaseClient, parse_retry_after, vendor_message
from runbook.errors import GitHubPermanentError, GitHubTransientError

DEFAULT_BASE_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
REPO_PATTERN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")

# What to fix, per status, for the permanent errors (GitHub's own message comes first)
_FIXES = {
    401: "check the GitHub token (revoked, expired or mistyped)",
    403: "give the token the Issues read/write and Contents read permissions on the repository",
    404: "check the repository name and that the token can see it",
    410: "issues are disabled on this repository; enable them or use another tracker",
    422: "fix the request fields GitHub named",
}


class Ticket(BaseModel):
    """A ticket in any tracker (GitHub issue or Jira issue), as the runbook keeps it.

    Attributes:
        system: "github" or "jira".
        ref: the human reference ("acme/web#12", "OPS-7").
        key: what ``comment``/``close_issue`` take (the issue number as text, or the Jira key).
        url: the page a person opens.
        title: the issue title (Jira: summary).
        status: "open"/"closed" on GitHub; the workflow status name on Jira ("To Do", "Done").
        closed: whether the tracker considers it finished.
        labels: its labels.
    """

    model_config = ConfigDict(extra="ignore")

    system: Literal["github", "jira"]
    ref: str
    key: str
    url: str
    title: str
    status: str
    closed: bool = False
    labels: list[str] = Field(default_factory=list)


class Comment(BaseModel):
    """A comment posted on a ticket."""

    model_config = ConfigDict(extra="ignore")

    id: str
    url: str


class Commit(BaseModel):
    """One recent commit, enough for a ``git log --oneline`` view."""

    model_config = ConfigDict(extra="ignore")

    sha: str
    message: str
    author: str
    date: str
    url: str

    @property
    def short_sha(self) -> str:
        return self.sha[:7]

    @property
    def oneline(self) -> str:
        """``<short sha> <first line of the message>``, as ``git log --oneline`` prints it."""
        first = self.message.splitlines()[0] if self.message else ""
        return f"{self.short_sha} {first}"


class _Label(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str


class _Issue(BaseModel):
    model_config = ConfigDict(extra="ignore")

    number: int
    html_url: str
    title: str
    state: str
    labels: list[_Label | str] = Field(default_factory=list)
    pull_request: dict[str, Any] | None = None


def _github_message(response: httpx.Response) -> str:
    """GitHub's ``message`` plus the field errors of a 422, short."""
    try:
        data = response.json()
    except ValueError:
        return vendor_message(response)
    if not isinstance(data, dict):
        return vendor_message(response)
    message = str(data.get("message") or vendor_message(response))
    details = []
    for err in data.get("errors") or []:
        if isinstance(err, dict):
            details.append(
                str(err.get("message") or f"{err.get('field', '?')} {err.get('code', 'invalid')}")
            )
        else:
            details.append(str(err))
    if details:
        message += " (" + "; ".join(details) + ")"
    return message[:300]


class GitHubClient(BaseClient):
    """Issues and commits of one GitHub repository.

    Args:
        base_url: the API root, ``https://api.github.com`` (or the sandbox's ``.../github``).
        token: a personal access or installation token with Issues read/write on ``repo``.
        repo: ``"owner/name"``.
        timeout: seconds for every call.
        transport: an httpx transport for tests.
        max_retries: in-client retries of transient failures.
        max_retry_after: the longest wait honoured in-client before raising.

    Raises:
        GitHubPermanentError: when ``token`` is empty or ``repo`` is not ``owner/name``.
    """

    system: ClassVar[str] = "github"
    transient_error = GitHubTransientError
    permanent_error = GitHubPermanentError

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        token: str = "",
        repo: str = "",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        max_retries: int = 2,
        max_retry_after: float = 30.0,
    ) -> None:
        if not token:
            raise GitHubPermanentError("the GitHub token is empty; set the token")
        if not REPO_PATTERN.match(repo):
            raise GitHubPermanentError(
                f"GitHub repository {repo!r} is not of the form 'owner/name'; fix the repo setting"
            )
        self.repo = repo
        super().__init__(
            base_url,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": "runbook-incident-bot",
            },
            timeout=timeout,
            transport=transport,
            max_retries=max_retries,
            max_retry_after=max_retry_after,
        )

    # --- errors ---------------------------------------------------------------------------------
    def check_response(self, response: httpx.Response) -> None:
        """Type GitHub's failures: both rate-limit shapes are transient, other 4xx permanent.

        Raises:
            GitHubTransientError: 5xx, 429, or 403 from a rate limit (retry_after from the headers).
            GitHubPermanentError: any other 4xx, with GitHub's message and what to fix.
        """
        if response.is_success:
            return
        status = response.status_code
        msg = _github_message(response)
        where = f"{response.request.method} {response.request.url.path}"
        headers = response.headers
        retry_after = parse_retry_after(headers.get("retry-after"))
        limited = status == 429 or (
            status == 403
            and (
                headers.get("x-ratelimit-remaining") == "0"
                or "retry-after" in headers
                or "rate limit" in msg.lower()
            )
        )
        if limited and retry_after is None:
            retry_after = _reset_delay(headers.get("x-ratelimit-reset"))
        if limited and retry_after is None:
            # GitHub's advice for a secondary limit without headers: wait at least a minute
            retry_after = 60.0
        if limited or status >= 500:
            raise self.transient_error(
                f"github answered {status} to {where}: {msg}",
                status_code=status,
                vendor_message=msg,
                retry_after=retry_after,
            )
        fix = _FIXES.get(status, "check the request")
        raise self.permanent_error(
            f"github answered {status} to {where}: {msg}; {fix}",
            status_code=status,
            vendor_message=msg,
        )

    # --- helpers --------------------------------------------------------------------------------
    @property
    def _repo_path(self) -> str:
        return f"/repos/{self.repo}"

    def _ticket(self, data: Any) -> Ticket:
        issue = _Issue.model_validate(data)
        labels = [lbl if isinstance(lbl, str) else lbl.name for lbl in issue.labels]
        return Ticket(
            system="github",
            ref=f"{self.repo}#{issue.number}",
            key=str(issue.number),
            url=issue.html_url,
            title=issue.title,
            status=issue.state,
            closed=issue.state == "closed",
            labels=labels,
        )

    # --- operations -----------------------------------------------------------------------------
    async def create_issue(self, title: str, body: str, labels: list[str] | None = None) -> Ticket:
        """Open a new issue. Not idempotent upstream: prefer ``ensure_issue``.

        Args:
            title: the issue title.
            body: Markdown body.
            labels: labels to set (created on the fly by GitHub if missing).

        Returns:
            The new issue as a Ticket.

        Raises:
            GitHubTransientError: rate limited, timed out or GitHub failing.
            GitHubPermanentError: bad token, no access, validation failed.
        """
        payload = {"title": title, "body": body, "labels": list(labels or [])}
        data = await self._json("POST", f"{self._repo_path}/issues", json=payload)
        return self._ticket(data)

    async def get_issue(self, number: int | str) -> Ticket:
        """One issue by number.

        Raises:
            GitHubPermanentError: 404 when it does not exist.
        """
        data = await self._json("GET", f"{self._repo_path}/issues/{int(number)}")
        return self._ticket(data)

    async def find_issue(self, label: str) -> Ticket | None:
        """The issue (open or closed) carrying ``label``, the oldest if several; None if none.

        Args:
            label: a label unique to one incident, e.g. "incident:INC-42".
        """
        params = {"labels": label, "state": "all", "per_page": "100"}
        data = await self._json("GET", f"{self._repo_path}/issues", params=params)
        # the issues list also returns pull requests; a PR is never our ticket
        issues = [d for d in data or [] if not d.get("pull_request")]
        if not issues:
            return None
        return self._ticket(min(issues, key=lambda d: int(d["number"])))

    async def ensure_issue(
        self, title: str, body: str, labels: list[str] | None, unique_label: str
    ) -> tuple[Ticket, bool]:
        """The incident's issue: found by ``unique_label``, else created with it.

        Args:
            title: title for a new issue.
            body: body for a new issue.
            labels: extra labels for a new issue.
            unique_label: the label that identifies this incident's issue.

        Returns:
            (the ticket, True when it was created now).
        """
        found = await self.find_issue(unique_label)
        if found is not None:
            return found, False
        all_labels = list(labels or [])
        if unique_label not in all_labels:
            all_labels.append(unique_label)
        return await self.create_issue(title, body, all_labels), True

    async def comment(self, number: int | str, body: str) -> Comment:
        """Add a comment to issue ``number``.

        Returns:
            The new comment's id and URL.
        """
        data = await self._json(
            "POST", f"{self._repo_path}/issues/{int(number)}/comments", json={"body": body}
        )
        return Comment(id=str(data["id"]), url=str(data.get("html_url", "")))

    async def close_issue(self, number: int | str, comment: str | None = None) -> Ticket:
        """Close issue ``number`` as completed, commenting first. A closed issue is left as is.

        Looking first keeps a retried close from posting the closing comment twice.

        Returns:
            The issue, closed.
        """
        current = await self.get_issue(number)
        if current.closed:
            return current
        if comment:
            await self.comment(number, comment)
        data = await self._json(
            "PATCH",
            f"{self._repo_path}/issues/{int(number)}",
            json={"state": "closed", "state_reason": "completed"},
        )
        return self._ticket(data)

    async def recent_commits(self, limit: int = 10) -> list[Commit]:
        """The newest ``limit`` commits of the default branch (``git log --oneline -10``).

        Args:
            limit: 1 to 100.
        """
        if not 1 <= limit <= 100:
            raise GitHubPermanentError(f"limit must be between 1 and 100, not {limit}")
        data = await self._json(
            "GET", f"{self._repo_path}/commits", params={"per_page": str(limit)}
        )
        commits = []
        for row in data or []:
            inner = row.get("commit") or {}
            author = inner.get("author") or {}
            commits.append(
                Commit(
                    sha=row["sha"],
                    message=inner.get("message", ""),
                    author=author.get("name", ""),
                    date=author.get("date", ""),
                    url=row.get("html_url", ""),
                )
            )
        return commits[:limit]


def _reset_delay(reset: str | None) -> float | None:
    """Seconds until ``x-ratelimit-reset`` (Unix seconds); None when absent or bad."""
    if not reset:
        return None
    try:
        return max(0.0, float(reset) - time.time())
    except ValueError:
        return None
