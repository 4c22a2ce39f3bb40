"""Ticket trackers: a GitHub repository or a Jira Cloud project holds the incident's ticket.

Flows take "a ticket tracker" as either block and call ``ticket_client(block)``; both clients offer
the same surface (create_issue, find_issue, ensure_issue, comment, close_issue).
"""

from __future__ import annotations

import re

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from runbook.clients.github import DEFAULT_BASE_URL as GITHUB_API
from runbook.clients.github import REPO_PATTERN, GitHubClient
from runbook.clients.jira import PROJECT_KEY_PATTERN, JiraClient


def _http_url(value: str, what: str) -> str:
    value = value.strip().rstrip("/")
    if not re.match(r"^https?://[^\s/]+", value):
        raise ValueError(
            f"{what} must be an http(s) URL such as https://example.com, not {value!r}"
        )
    return value


class GitHubRepository(Block):
    """A GitHub repository whose issues track incidents, and whose commits triage reads.

    Example:
        ```python
        from blocks.tickets import GitHubRepository

        github_repository = GitHubRepository.load("BLOCK_NAME")
        client = github_repository.get_client()
        ```
    """

    _block_type_name = "GitHub Incident Repository"
    # not "github-repository": prefect-github registers that slug for its own block
    _block_type_slug = "runbook-github-repository"
    _logo_url = "https://raw.githubusercontent.com/PrefectHQ/prefect/9727c2cad9d1c2008579c1290c063d1e2712fde0/assets/block-logos/github.png"  # type: ignore[assignment]
    _description = "A GitHub repository for incident issues and the recent-commits view."
    _documentation_url = "https://docs.github.com/en/rest/issues/issues"  # type: ignore[assignment]

    token: SecretStr = Field(
        description="A GitHub token with Issues read/write and Contents read on the repository."
    )
    repo: str = Field(description='The repository as "owner/name", e.g. "acme/web".')
    base_url: str = Field(
        default=GITHUB_API,
        description="The GitHub REST API root (the sandbox's http://127.0.0.1:8900/github in drills).",
    )
    timeout: float = Field(default=10.0, gt=0, description="Seconds allowed for each API call.")

    @field_validator("repo")
    @classmethod
    def _check_repo(cls, value: str) -> str:
        value = value.strip()
        if not REPO_PATTERN.match(value):
            raise ValueError(f'repo must be "owner/name" (e.g. "acme/web"), not {value!r}')
        return value

    @field_validator("token")
    @classmethod
    def _check_token(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("token must not be empty")
        return value

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        return _http_url(value, "base_url")

    def get_client(self, *, transport: httpx.AsyncBaseTransport | None = None) -> GitHubClient:
        """A GitHubClient for this repository.

        Args:
            transport: an httpx transport for tests.

        Returns:
            A new client (close it with ``aclose`` or ``async with``).
        """
        return GitHubClient(
            self.base_url,
            self.token.get_secret_value(),
            self.repo,
            timeout=self.timeout,
            transport=transport,
        )


class JiraProject(Block):
    """A Jira Cloud project whose issues track incidents.

    Example:
        ```python
        from blocks.tickets import JiraProject

        jira_project = JiraProject.load("BLOCK_NAME")
        client = jira_project.get_client()
        ```
    """

    _block_type_name = "Jira Project"
    _block_type_slug = "jira-project"
    _logo_url = "https://cdn.simpleicons.org/jira/0052CC"  # type: ignore[assignment]
    _description = "A Jira Cloud project for incident tickets."
    _documentation_url = "https://developer.atlassian.com/cloud/jira/platform/rest/v3/intro/"  # type: ignore[assignment]

    site_url: str = Field(
        description=(
            "The Jira site, e.g. https://acme.atlassian.net (the sandbox's "
            "http://127.0.0.1:8900/jira in drills)."
        )
    )
    email: str = Field(description="The email of the Atlassian account the API token belongs to.")
    api_token: SecretStr = Field(description="An Atlassian API token of that account.")
    project_key: str = Field(description='The project key in uppercase, e.g. "OPS".')
    issue_type: str = Field(
        default="Incident",
        description='The issue type to create, e.g. "Incident", "Bug" or "Task".',
    )
    timeout: float = Field(default=10.0, gt=0, description="Seconds allowed for each API call.")

    @field_validator("site_url")
    @classmethod
    def _check_site_url(cls, value: str) -> str:
        return _http_url(value, "site_url")

    @field_validator("email")
    @classmethod
    def _check_email(cls, value: str) -> str:
        value = value.strip()
        if not re.fullmatch(r"[^@\s]+@[^@\s]+", value):
            raise ValueError(f"email must be the Atlassian account's email address, not {value!r}")
        return value

    @field_validator("api_token")
    @classmethod
    def _check_token(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("api_token must not be empty")
        return value

    @field_validator("project_key")
    @classmethod
    def _check_project_key(cls, value: str) -> str:
        value = value.strip()
        if not PROJECT_KEY_PATTERN.match(value):
            raise ValueError(
                f"project_key must be the project's uppercase key (letters, digits, _; "
                f"2-10 characters, starting with a letter), e.g. OPS, not {value!r}"
            )
        return value

    @field_validator("issue_type")
    @classmethod
    def _check_issue_type(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("issue_type must not be empty")
        return value.strip()

    def get_client(self, *, transport: httpx.AsyncBaseTransport | None = None) -> JiraClient:
        """A JiraClient for this project.

        Args:
            transport: an httpx transport for tests.

        Returns:
            A new client (close it with ``aclose`` or ``async with``).
        """
        return JiraClient(
            self.site_url,
            self.email,
            self.api_token.get_secret_value(),
            self.project_key,
            issue_type=self.issue_type,
            timeout=self.timeout,
            transport=transport,
        )


def ticket_client(
    block: GitHubRepository | JiraProject, *, transport: httpx.AsyncBaseTransport | None = None
) -> GitHubClient | JiraClient:
    """The client of whichever ticket tracker ``block`` configures.

    Args:
        block: a GitHubRepository or a JiraProject.
        transport: an httpx transport for tests.

    Returns:
        A GitHubClient or JiraClient; both offer create_issue, find_issue, ensure_issue,
        comment(ticket.key, ...) and close_issue(ticket.key, ...).

    Raises:
        TypeError: when ``block`` is neither.
    """
    if isinstance(block, GitHubRepository | JiraProject):
        return block.get_client(transport=transport)
    raise TypeError(
        f"a ticket tracker must be a GitHubRepository or JiraProject block, not {type(block).__name__}"
    )
