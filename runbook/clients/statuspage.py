"""Atlassian Statuspage client: incidents and component statuses of one page.

Statuspage answers errors as ``{"error": "..."}`` (or a list of messages). Its rate limit answers
420 (sometimes 429): both are transient, like 5xx. 401 means the API key is wrong; 404 an unknown
page, incident or component; 422 a value Statuspage does not accept. Incident creation is not
idempotent upstream, so ``find_open_incident`` lets a caller look before it creates.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from runbook.clients.base import BaseClient
from runbook.errors import StatuspagePermanentError, StatuspageTransientError

DEFAULT_BASE_URL = "https://api.statuspage.io"
INCIDENT_STATUSES = ("investigating", "identified", "monitoring", "resolved")
COMPONENT_STATUSES = (
    "operational",
    "degraded_performance",
    "partial_outage",
    "major_outage",
    "under_maintenance",
)
_HINTS = {
    401: "check Statuspage.api_key (an API key from the Statuspage user's API info page)",
    403: "check that Statuspage.api_key belongs to a user with access to the page",
    404: "check Statuspage.page_id and the incident or component id (Statuspage.component_map)",
}


class StatusComponent(BaseModel):
    """A component of the page and its current status."""

    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    status: str
    description: str | None = None


class StatusIncidentUpdate(BaseModel):
    """One update posted on an incident (newest first in ``StatusIncident.incident_updates``)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    status: str
    body: str = ""
    created_at: str | None = None


class StatusIncident(BaseModel):
    """An incident on the page."""

    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    status: str
    impact: str | None = None
    shortlink: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    resolved_at: str | None = None
    incident_updates: list[StatusIncidentUpdate] = Field(default_factory=list)
    components: list[StatusComponent] = Field(default_factory=list)

    @property
    def resolved(self) -> bool:
        """True once the incident is resolved."""
        return self.status == "resolved"


def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise StatuspagePermanentError(
            f"Statuspage {what} must be one of {', '.join(allowed)}, not {value!r}"
        )


class StatuspageClient(BaseClient):
    """Async client of the Statuspage REST API for one page.

    Args:
        base_url: the API root without ``/v1`` (``https://api.statuspage.io``; the sandbox's
            ``.../statuspage``).
        api_key: a Statuspage API key, sent as ``Authorization: OAuth``; never logged.
        page_id: the page's id.
        timeout: seconds for every call.
        transport: an httpx transport for tests.
        max_retries: in-client retries of transient failures.

    Raises:
        StatuspageTransientError: 420, 429, 5xx, timeouts, after the retries.
        StatuspagePermanentError: other 4xx, with Statuspage's message and what to fix.
    """

    system = "statuspage"
    transient_error = StatuspageTransientError
    permanent_error = StatuspagePermanentError

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str = "",
        page_id: str = "",
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_retries: int = 2,
    ) -> None:
        if not api_key:
            raise StatuspagePermanentError("a Statuspage API key is required (Statuspage.api_key)")
        if not page_id:
            raise StatuspagePermanentError("a Statuspage page id is required (Statuspage.page_id)")
        super().__init__(
            base_url,
            headers={"Authorization": f"OAuth {api_key}", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
            max_retries=max_retries,
        )
        self.page_id = page_id

    def check_response(self, response: httpx.Response) -> None:
        """Statuspage's errors, with a hint on what to fix for the common permanent ones."""
        try:
            super().check_response(response)
        except StatuspagePermanentError as exc:
            hint = _HINTS.get(response.status_code)
            if not hint:
                raise
            raise StatuspagePermanentError(
                f"{exc.message} ({hint})",
                status_code=exc.status_code,
                vendor_message=exc.vendor_message,
            ) from exc

    @property
    def _page(self) -> str:
        return f"/v1/pages/{self.page_id}"

    async def create_incident(
        self,
        name: str,
        status: str,
        body: str,
        *,
        components: dict[str, str] | None = None,
        deliver_notifications: bool = True,
    ) -> StatusIncident:
        """Open an incident. Not idempotent upstream: call ``find_open_incident`` first.

        Args:
            name: the incident's title.
            status: investigating, identified, monitoring or resolved.
            body: the first update's text.
            components: component id -> component status to set with it.
            deliver_notifications: notify the page's subscribers.

        Returns:
            The created incident.
        """
        _check(status, INCIDENT_STATUSES, "incident status")
        for value in (components or {}).values():
            _check(value, COMPONENT_STATUSES, "component status")
        incident: dict[str, Any] = {
            "name": name,
            "status": status,
            "body": body,
            "deliver_notifications": deliver_notifications,
        }
        if components:
            incident["component_ids"] = list(components)
            incident["components"] = dict(components)
        data = await self._json("POST", f"{self._page}/incidents", json={"incident": incident})
        return StatusIncident.model_validate(data)

    async def update_incident(
        self,
        incident_id: str,
        *,
        status: str | None = None,
        body: str | None = None,
        components: dict[str, str] | None = None,
    ) -> StatusIncident:
        """Post an update on an incident: a new status, a message, component statuses.

        Args:
            incident_id: the incident's id.
            status: the new incident status, if it changes.
            body: the update's text.
            components: component id -> component status.

        Returns:
            The updated incident.
        """
        incident: dict[str, Any] = {}
        if status is not None:
            _check(status, INCIDENT_STATUSES, "incident status")
            incident["status"] = status
        if body is not None:
            incident["body"] = body
        if components:
            for value in components.values():
                _check(value, COMPONENT_STATUSES, "component status")
            incident["component_ids"] = list(components)
            incident["components"] = dict(components)
        data = await self._json(
            "PATCH", f"{self._page}/incidents/{incident_id}", json={"incident": incident}
        )
        return StatusIncident.model_validate(data)

    async def unresolved_incidents(self) -> list[StatusIncident]:
        """The page's incidents that are not resolved, newest first."""
        data = await self._json("GET", f"{self._page}/incidents/unresolved")
        return [StatusIncident.model_validate(row) for row in data or []]

    async def find_open_incident(self, name_prefix: str) -> StatusIncident | None:
        """The newest unresolved incident whose name starts with ``name_prefix`` (look before create)."""
        for incident in await self.unresolved_incidents():
            if incident.name.startswith(name_prefix):
                return incident
        return None

    async def list_components(self) -> list[StatusComponent]:
        """The page's components and their statuses."""
        data = await self._json("GET", f"{self._page}/components")
        return [StatusComponent.model_validate(row) for row in data or []]

    async def set_component_status(self, component_id: str, status: str) -> StatusComponent:
        """Set one component's status.

        Args:
            component_id: the component's id.
            status: operational, degraded_performance, partial_outage, major_outage or
                under_maintenance.

        Returns:
            The component as Statuspage now has it.
        """
        _check(status, COMPONENT_STATUSES, "component status")
        data = await self._json(
            "PATCH",
            f"{self._page}/components/{component_id}",
            json={"component": {"status": status}},
        )
        return StatusComponent.model_validate(data)
