"""The sandbox's PagerDuty Events API v2: trigger, acknowledge and resolve alerts.

Path as the vendor's own (mounted under ``/pagerduty``): ``POST /v2/enqueue``. The routing key in
the body is the credential (``world.token_for(NAME)``); like PagerDuty, a bad key is a 400 "invalid event".
Alerts are kept by ``dedup_key``: a repeated trigger of an open alert is deduplicated into it, a
trigger after a resolve opens a new one. About 120 events a minute per routing key, then 429.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from runbook.sandbox.core import World
from runbook.sandbox.slack import RateLimit

NAME = "pagerduty"
ACTIONS = ("trigger", "acknowledge", "resolve")
SEVERITIES = ("critical", "error", "warning", "info")
MAX_SUMMARY = 1024
MAX_DEDUP_KEY = 255


@dataclass
class PDAlert:
    """One alert: its latest status and every event that touched it (oldest first)."""

    dedup_key: str
    status: str  # triggered | acknowledged | resolved
    summary: str
    source: str
    severity: str
    created_at: str
    payload: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class PagerDutyState:
    """Open and last-known alerts by dedup key; alerts closed before a re-trigger; every event."""

    alerts: dict[str, PDAlert] = field(default_factory=dict)
    closed: list[PDAlert] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    rate: RateLimit = field(default_factory=lambda: RateLimit(per_second=2.0, burst=120))


def init_state(world: World) -> None:
    """No alerts yet; 120 events a minute per routing key."""
    world.state[NAME] = PagerDutyState()


def _state(world: World) -> PagerDutyState:
    st: PagerDutyState = world.state[NAME]
    return st


def alerts(world: World) -> dict[str, PDAlert]:
    """Alerts by dedup key (the latest incarnation of each)."""
    return dict(_state(world).alerts)


def _invalid(*errors: str) -> JSONResponse:
    return JSONResponse(
        {"status": "invalid event", "message": "Event object is invalid", "errors": list(errors)},
        400,
    )


def error_response(status: int, message: str, retry_after: float | None = None) -> Response:
    """PagerDuty's answers to faults: 429 "throttle event"; 5xx a JSON status and message."""
    if status == 429:
        headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after else None
        return JSONResponse(
            {
                "status": "throttle event",
                "message": "Requests for this service are arriving too quickly. Please retry later.",
                "errors": ["Too many requests"],
            },
            429,
            headers=headers,
        )
    return JSONResponse({"status": "error", "message": message}, status)


def _validate(event: dict[str, Any], token: str) -> list[str]:
    """PagerDuty's validation messages for an event, empty when it is valid."""
    errors: list[str] = []
    key = event.get("routing_key")
    if not isinstance(key, str) or not key:
        errors.append("'routing_key' is missing or blank")
    elif key != token:
        errors.append("Invalid routing key")
    action = event.get("event_action")
    if action not in ACTIONS:
        errors.append("'event_action' is invalid (must be one of: trigger, acknowledge, resolve)")
    dedup = event.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or len(dedup) > MAX_DEDUP_KEY):
        errors.append(f"'dedup_key' must be a string of at most {MAX_DEDUP_KEY} characters")
    if action in ("acknowledge", "resolve") and not dedup:
        errors.append("'dedup_key' is missing or blank")
    if action == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict):
            return [*errors, "'payload' is missing or not an object"]
        summary = payload.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            errors.append("'payload.summary' is missing or blank")
        elif len(summary) > MAX_SUMMARY:
            errors.append(f"Length of 'payload.summary' is too long (max {MAX_SUMMARY})")
        if not isinstance(payload.get("source"), str) or not payload["source"].strip():
            errors.append("'payload.source' is missing or blank")
        if payload.get("severity") not in SEVERITIES:
            errors.append(
                "'payload.severity' is invalid (must be one of: critical, error, warning, info)"
            )
        details = payload.get("custom_details")
        if details is not None and not isinstance(details, dict | list | str):
            errors.append("'payload.custom_details' must be an object")
    return errors


def _apply(world: World, event: dict[str, Any], dedup_key: str) -> None:
    st = _state(world)
    now = world.clock.now().isoformat()
    action = event["event_action"]
    record = {"at": now, "event_action": action, "dedup_key": dedup_key, "event": event}
    st.events.append(record)
    alert = st.alerts.get(dedup_key)
    if action == "trigger":
        if alert is not None and alert.status != "resolved":
            alert.events.append(record)  # deduplicated into the open alert, as PagerDuty does
            return
        if alert is not None:
            st.closed.append(alert)
        payload = event["payload"]
        st.alerts[dedup_key] = PDAlert(
            dedup_key=dedup_key,
            status="triggered",
            summary=payload["summary"],
            source=payload["source"],
            severity=payload["severity"],
            created_at=now,
            payload=payload,
            events=[record],
        )
        return
    if alert is None or alert.status == "resolved":
        return  # PagerDuty accepts and ignores these
    alert.events.append(record)
    alert.status = "acknowledged" if action == "acknowledge" else "resolved"


def routes(world: World) -> list[BaseRoute]:
    """The Events API v2 enqueue endpoint."""

    async def enqueue(request: Request) -> Response:
        try:
            event = json.loads(await request.body())
        except ValueError:
            return _invalid("Event object is not valid JSON")
        if not isinstance(event, dict):
            return _invalid("Event object must be a JSON object")
        errors = _validate(event, world.token_for(NAME))
        if errors:
            return _invalid(*errors)
        wait = _state(world).rate.take(event["routing_key"], world.clock.now())
        if wait is not None:
            return error_response(429, "throttled")
        dedup_key = event.get("dedup_key") or "".join(
            world.rng.choice("0123456789abcdef") for _ in range(32)
        )
        _apply(world, event, dedup_key)
        return JSONResponse(
            {"status": "success", "message": "Event processed", "dedup_key": dedup_key}, 202
        )

    return [Route("/v2/enqueue", enqueue, methods=["POST"])]
