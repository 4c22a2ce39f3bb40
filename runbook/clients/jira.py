"""Jira Cloud issues: the incident ticket, its comments and its closing transition.

Speaks REST API v3 (``https://<site>.atlassian.net``, basic auth ``email:api_token``). Descriptions and
comments are Atlassian Document Format (ADF); ``adf_document`` builds one from plain text. Creating an
issue is not idempotent upstream, so ``ensure_issue`` searches the incident's unique label first
(``GET /rest/api/3/search/jql``). Errors come as ``{"errorMessages": [...], "errors": {field: msg}}``.
"""

from __future__ import annotations

import base64
import re
from typing import Any, ClassVar

import httpx

from runbook.clients.base import DEFAULT_TIMEOUT, BaseClient, parse_retry_after, vendor_message
from runbook.clients.github import Comment, Ticket
from runbook.errors import JiraPermanentError, JiraTransientError

PROJECT_KEY_PATTERN = re.compile(r"^[A-Z][A-Z0-9_]{1,9}$")
_SEARCH_FIELDS = "summary,status,labels"

_FIXES = {
    400: "fix the fields Jira named",
    401: "check the account email and API token",
    403: "give the account Browse, Create, Comment and Transition permissions in the project",
    404: "check the project key or issue key, and that the account can see it",
}


def adf_document(text: str) -> dict[str, Any]:
    """An ADF document from plain text: blank lines split paragraphs, newlines become hard breaks.

    Args:
        text: plain text.

    Returns:
        ``{"type": "doc", "version": 1, "content": [paragraphs]}``.
    """
    content = []
    for para in re.split(r"\n\s*\n", text.strip()) if text.strip() else []:
        nodes: list[dict[str, Any]] = []
        for i, line in enumerate(para.split("\n")):
            if i:
                nodes.append({"type": "hardBreak"})
            if line:
                # ADF forbids empty text nodes
                nodes.append({"type": "text", "text": line})
        content.append({"type": "paragraph", "content": nodes})
    if not content:
        content = [{"type": "paragraph", "content": []}]
    return {"type": "doc", "version": 1, "content": content}


def adf_text(doc: Any) -> str:
    """Plain text back from an ADF document (paragraphs joined by blank lines)."""
    if not isinstance(doc, dict):
        return "" if doc is None else str(doc)

    def inline(node: dict[str, Any]) -> str:
        if node.get("type") == "text":
            return str(node.get("text", ""))
        if node.get("type") == "hardBreak":
            return "\n"
        return "".join(inline(child) for child in node.get("content") or [])

    return "\n\n".join(inline(block) for block in doc.get("content") or [])


def jql_string(value: str) -> str:
    """``value`` as a double-quoted JQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _jira_message(response: httpx.Response) -> str:
    """Jira's ``errorMessages`` and per-field ``errors``, joined and short."""
    try:
        data = response.json()
    except ValueError:
        return vendor_message(response)
    if not isinstance(data, dict) or not ({"errorMessages", "errors"} & data.keys()):
        return vendor_message(response)
    parts = [str(m) for m in data.get("errorMessages") or []]
    errors = data.get("errors") or {}
    if isinstance(errors, dict):
        parts += [f"{field}: {msg}" for field, msg in errors.items()]
    return "; ".join(parts)[:300] or f"HTTP {response.status_code}"


class JiraClient(BaseClient):
    """Issues of one Jira Cloud project.

    Args:
        base_url: the site, ``https://<site>.atlassian.net`` (or the sandbox's ``.../jira``).
        email: the Atlassian account's email.
        api_token: an API token of that account.
        project_key: the project's key, e.g. "OPS".
        issue_type: the issue type to create ("Incident", "Bug", "Task" ...).
        timeout: seconds for every call.
        transport: an httpx transport for tests.
        max_retries: in-client retries of transient failures.
        max_retry_after: the longest wait honoured in-client before raising.

    Raises:
        JiraPermanentError: when the project key is not an uppercase Jira key or a credential is empty.
    """

    system: ClassVar[str] = "jira"
    transient_error = JiraTransientError
    permanent_error = JiraPermanentError

    def __init__(
        self,
        base_url: str,
        email: str,
        api_token: str,
        project_key: str,
        *,
        issue_type: str = "Incident",
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        max_retries: int = 2,
        max_retry_after: float = 30.0,
    ) -> None:
        if not email or not api_token:
            raise JiraPermanentError("the Jira email or API token is empty; set both")
        if not PROJECT_KEY_PATTERN.match(project_key):
            raise JiraPermanentError(
                f"Jira project key {project_key!r} is not valid; use the project's uppercase key, e.g. OPS"
            )
        self.project_key = project_key
        self.issue_type = issue_type
        basic = base64.b64encode(f"{email}:{api_token}".encode()).decode()
        super().__init__(
            base_url,
            headers={"Authorization": f"Basic {basic}", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
            max_retries=max_retries,
            max_retry_after=max_retry_after,
        )

    def check_response(self, response: httpx.Response) -> None:
        """Type Jira's failures: 429/5xx transient, other 4xx permanent with Jira's messages.

        Raises:
            JiraTransientError: 429 (Retry-After honoured) or 5xx.
            JiraPermanentError: other 4xx, with Jira's messages and what to fix.
        """
        if response.is_success:
            return
        status = response.status_code
        msg = _jira_message(response)
        where = f"{response.request.method} {response.request.url.path}"
        if status == 429 or status >= 500:
            raise self.transient_error(
                f"jira answered {status} to {where}: {msg}",
                status_code=status,
                vendor_message=msg,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        fix = _FIXES.get(status, "check the request")
        raise self.permanent_error(
            f"jira answered {status} to {where}: {msg}; {fix}",
            status_code=status,
            vendor_message=msg,
        )

    def _ticket(self, key: str, fields: dict[str, Any]) -> Ticket:
        status = fields.get("status") or {}
        category = (status.get("statusCategory") or {}).get("key")
        return Ticket(
            system="jira",
            ref=key,
            key=key,
            url=f"{self.base_url}/browse/{key}",
            title=str(fields.get("summary", "")),
            status=str(status.get("name", "")),
            closed=category == "done",
            labels=list(fields.get("labels") or []),
        )

    async def get_issue(self, key: str) -> Ticket:
        """One issue by key.

        Raises:
            JiraPermanentError: 404 when it does not exist or is not visible.
        """
        data = await self._json(
            "GET", f"/rest/api/3/issue/{key}", params={"fields": _SEARCH_FIELDS}
        )
        return self._ticket(data["key"], data.get("fields") or {})

    async def create_issue(self, title: str, body: str, labels: list[str] | None = None) -> Ticket:
        """Create an issue in the project. Not idempotent upstream: prefer ``ensure_issue``.

        Args:
            title: the summary.
            body: plain text description (sent as ADF).
            labels: labels (Jira labels cannot contain spaces).

        Returns:
            The new issue as a Ticket (read back for its workflow status).

        Raises:
            JiraTransientError: rate limited, timed out or Jira failing.
            JiraPermanentError: bad credentials, unknown project or issue type, invalid fields.
        """
        fields = {
            "project": {"key": self.project_key},
            "issuetype": {"name": self.issue_type},
            "summary": title,
            "description": adf_document(body),
            "labels": list(labels or []),
        }
        created = await self._json("POST", "/rest/api/3/issue", json={"fields": fields})
        return await self.get_issue(created["key"])

    async def find_issue(self, label: str) -> Ticket | None:
        """The project's issue (any status) carrying ``label``, the oldest if several; else None.

        Args:
            label: a label unique to one incident, e.g. "incident:INC-42".
        """
        jql = f"project = {jql_string(self.project_key)} AND labels = {jql_string(label)}"
        data = await self._json(
            "GET",
            "/rest/api/3/search/jql",
            params={"jql": jql, "fields": _SEARCH_FIELDS, "maxResults": "50"},
        )
        issues = (data or {}).get("issues") or []
        if not issues:
            return None
        oldest = min(issues, key=lambda i: int(i["id"]))
        return self._ticket(oldest["key"], oldest.get("fields") or {})

    async def ensure_issue(
        self, title: str, body: str, labels: list[str] | None, unique_label: str
    ) -> tuple[Ticket, bool]:
        """The incident's issue: found by ``unique_label``, else created with it.

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

    async def comment(self, key: str, body: str) -> Comment:
        """Add a plain-text comment (sent as ADF) to issue ``key``.

        Returns:
            The new comment's id and URL.
        """
        data = await self._json(
            "POST", f"/rest/api/3/issue/{key}/comment", json={"body": adf_document(body)}
        )
        cid = str(data["id"])
        return Comment(id=cid, url=f"{self.base_url}/browse/{key}?focusedCommentId={cid}")

    async def close_issue(self, key: str, comment: str | None = None) -> Ticket:
        """Move issue ``key`` to Done (its "Done" transition), commenting first.

        An issue already in a done status is left as is, so a retried close comments only once.

        Returns:
            The issue, done.

        Raises:
            JiraPermanentError: no transition to Done is available from the issue's status.
        """
        current = await self.get_issue(key)
        if current.closed:
            return current
        data = await self._json("GET", f"/rest/api/3/issue/{key}/transitions")
        transitions = (data or {}).get("transitions") or []
        done = _done_transition(transitions)
        if done is None:
            names = ", ".join(str(t.get("name")) for t in transitions) or "none"
            raise JiraPermanentError(
                f"jira issue {key} has no transition to Done from {current.status!r} "
                f"(available: {names}); add one to the project's workflow or close it by hand"
            )
        if comment:
            await self.comment(key, comment)
        await self._request(
            "POST",
            f"/rest/api/3/issue/{key}/transitions",
            json={"transition": {"id": str(done["id"])}},
        )
        to = done.get("to") or {}
        return current.model_copy(update={"status": str(to.get("name") or "Done"), "closed": True})


def _done_transition(transitions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The transition named Done (or leading to Done), else any into the "done" category."""
    for t in transitions:
        to = t.get("to") or {}
        if "done" in (str(t.get("name", "")).lower(), str(to.get("name", "")).lower()):
            return t
    for t in transitions:
        category = ((t.get("to") or {}).get("statusCategory") or {}).get("key")
        if category == "done":
            return t
    return None
