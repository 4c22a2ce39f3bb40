"""PagerDuty Events API v2 client: trigger, acknowledge and resolve alerts by dedup key.

PagerDuty answers 202 ``{"status": "success", "message", "dedup_key"}``; 400 ``{"status": "invalid
event", "message", "errors": [...]}`` must not be retried (it names the bad field, or a bad routing
key); 429 and 5xx are transient. A trigger with the dedup key of an open alert does not page twice,
so a retried trigger is safe.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from runbook.clients.base import RETRYABLE_STATUS, BaseClient, parse_retry_after, vendor_message
from runbook.errors import PagerDutyPermanentError, PagerDutyTransientError

DEFAULT_BASE_URL = "https://events.pagerduty.com"
SEVERITIES = ("critical", "error", "warning", "info")
MAX_SUMMARY = 1024


class PagerDutyEvent(BaseModel):
    """PagerDuty's answer to one event: the alert's dedup key, "success", and its message."""

    model_config = ConfigDict(extra="ignore")

    dedup_key: str
    status: str
    message: str = ""


def truncate_summary(summary: str) -> str:
    """The summary cut to PagerDuty's 1024 characters, marked with an ellipsis when cut."""
    summary = summary.strip()
    return summary if len(summary) <= MAX_SUMMARY else summary[: MAX_SUMMARY - 1] + "…"


class PagerDutyClient(BaseClient):
    """Async client of the PagerDuty Events API v2 for one service's routing key.

    Args:
        base_url: the API root (``https://events.pagerduty.com``; the sandbox's ``.../pagerduty``).
        routing_key: the Integration Key of the service's Events API v2 integration (a secret;
            it travels in the body and never reaches a message).
        timeout: seconds for every call.
        transport: an httpx transport for tests.
        max_retries: in-client retries of transient failures.

    Raises:
        PagerDutyTransientError: 429, 5xx, timeouts, after the retries.
        PagerDutyPermanentError: 400 (bad event or routing key), with PagerDuty's errors.
    """

    system = "pagerduty"
    transient_error = PagerDutyTransientError
    permanent_error = PagerDutyPermanentError

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        routing_key: str = "",
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_retries: int = 2,
    ) -> None:
        if not routing_key:
            raise PagerDutyPermanentError(
                "a PagerDuty routing key is required (PagerDuty.routing_key)"
            )
        super().__init__(base_url, timeout=timeout, transport=transport, max_retries=max_retries)
        self._routing_key = routing_key

    def check_response(self, response: httpx.Response) -> None:
        """PagerDuty's answers, with its ``errors`` list in the message of a 400."""
        if response.is_success:
            return
        status = response.status_code
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        try:
            data = response.json()
        except ValueError:
            data = None
        errors = data.get("errors") if isinstance(data, dict) else None
        msg = "; ".join(str(e) for e in errors) if isinstance(errors, list) and errors else ""
        msg = msg or vendor_message(response)
        if status in RETRYABLE_STATUS:
            raise PagerDutyTransientError(
                f"PagerDuty answered {status}: {msg}",
                status_code=status,
                vendor_message=msg,
                retry_after=retry_after,
            )
        hint = (
            "check PagerDuty.routing_key: use the Integration Key of an Events API v2 integration"
            if "routing key" in msg.lower() or "routing_key" in msg
            else "fix the event"
        )
        raise PagerDutyPermanentError(
            f"PagerDuty rejected the event ({status}): {msg} ({hint})",
            status_code=status,
            vendor_message=msg,
        )

    async def _enqueue(self, event: dict[str, Any]) -> PagerDutyEvent:
        body = {"routing_key": self._routing_key, **event}
        data = await self._json("POST", "/v2/enqueue", json=body)
        return PagerDutyEvent.model_validate(data or {})

    async def trigger(
        self,
        summary: str,
        source: str,
        severity: str,
        dedup_key: str | None,
        *,
        component: str | None = None,
        group: str | None = None,
        class_: str | None = None,
        custom_details: dict[str, Any] | None = None,
        links: list[dict[str, str]] | None = None,
    ) -> PagerDutyEvent:
        """Open an alert, or add to the open one with the same dedup key (no second page).

        Args:
            summary: what is wrong; cut to 1024 characters.
            source: the affected system (host, service, URL).
            severity: critical, error, warning or info.
            dedup_key: the alert's key (the incident id); None lets PagerDuty make one.
            component: the affected component.
            group: a logical grouping (e.g. the cluster).
            class_: the class or type of the event.
            custom_details: free-form details shown in the alert.
            links: ``[{"href", "text"}]`` links shown in the alert.

        Returns:
            PagerDuty's answer, with the dedup key to acknowledge or resolve it by.

        Raises:
            PagerDutyPermanentError: a severity PagerDuty does not know, or a 400.
        """
        if severity not in SEVERITIES:
            raise PagerDutyPermanentError(
                f"PagerDuty severity must be one of {', '.join(SEVERITIES)}, not {severity!r}"
            )
        payload: dict[str, Any] = {
            "summary": truncate_summary(summary),
            "source": source,
            "severity": severity,
        }
        optional = {
            "component": component,
            "group": group,
            "class": class_,
            "custom_details": custom_details,
        }
        payload.update({k: v for k, v in optional.items() if v is not None})
        event: dict[str, Any] = {"event_action": "trigger", "payload": payload}
        if dedup_key:
            event["dedup_key"] = dedup_key
        if links:
            event["links"] = links
        return await self._enqueue(event)

    async def acknowledge(self, dedup_key: str) -> PagerDutyEvent:
        """Acknowledge the alert with this dedup key (stops its escalation)."""
        return await self._enqueue({"event_action": "acknowledge", "dedup_key": dedup_key})

    async def resolve(self, dedup_key: str) -> PagerDutyEvent:
        """Resolve the alert with this dedup key."""
        return await self._enqueue({"event_action": "resolve", "dedup_key": dedup_key})
