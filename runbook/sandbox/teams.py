"""The sandbox's Microsoft Teams: a Workflows (Power Automate) "post to a channel" webhook.

Path as the vendor's own (mounted under ``/teams``):
``POST /workflows/{workflow_id}/triggers/manual/paths/invoke?sig=<signature>``. The signature in the
query string is the credential (``world.token_for(NAME)``). The body must be a message with one Adaptive Card
attachment; at most 28 KB; about 4 requests a second per workflow, then 429. Success is 202 with an
empty body. Errors are Logic Apps' ``{"error": {"code", "message"}}``.
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

NAME = "teams"
MAX_BYTES = 28 * 1024
CARD_TYPE = "application/vnd.microsoft.card.adaptive"


@dataclass
class ReceivedCard:
    """One accepted message: which workflow, when (clock time), and the Adaptive Card."""

    workflow_id: str
    at: str
    card: dict[str, Any]
    payload: dict[str, Any]


@dataclass
class TeamsState:
    cards: list[ReceivedCard] = field(default_factory=list)
    rate: RateLimit = field(default_factory=lambda: RateLimit(per_second=4.0, burst=4))


def init_state(world: World) -> None:
    """No cards yet; 4 requests a second per workflow."""
    world.state[NAME] = TeamsState()


def cards(world: World) -> list[ReceivedCard]:
    """The cards received so far, oldest first."""
    st: TeamsState = world.state[NAME]
    return list(st.cards)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


def error_response(status: int, message: str, retry_after: float | None = None) -> Response:
    """Logic Apps' error body; 429 carries Retry-After."""
    if status == 429:
        headers = {"Retry-After": str(max(1, math.ceil(retry_after or 1)))}
        return _error(429, "WorkflowRequestsThrottled", message, headers)
    code = {502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout"}.get(
        status, "InternalServerError"
    )
    return _error(status, code, message)


def _card_problem(data: Any) -> str | None:
    """Why a body is not a message with an Adaptive Card, or None when it is one."""
    if not isinstance(data, dict) or data.get("type") != "message":
        return 'the body must be an object with "type": "message"'
    attachments = data.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        return '"attachments" must be a non-empty array'
    for i, att in enumerate(attachments):
        if not isinstance(att, dict) or att.get("contentType") != CARD_TYPE:
            return f"attachments[{i}].contentType must be {CARD_TYPE}"
        content = att.get("content")
        if not isinstance(content, dict) or content.get("type") != "AdaptiveCard":
            return f"attachments[{i}].content must be an AdaptiveCard object"
        if not isinstance(content.get("body", []), list):
            return f"attachments[{i}].content.body must be an array"
    return None


def routes(world: World) -> list[BaseRoute]:
    """The Workflows webhook trigger."""

    async def invoke(request: Request) -> Response:
        st: TeamsState = world.state[NAME]
        sig = request.query_params.get("sig")
        if not sig:
            return _error(
                401,
                "DirectApiAuthorizationRequired",
                "The request must be authenticated only by Shared Access scheme.",
            )
        if sig != world.token_for(NAME):
            return _error(
                401,
                "DirectApiInvalidAuthorizationSignature",
                "The provided authentication signature is not valid.",
            )
        raw = await request.body()
        if len(raw) > MAX_BYTES:
            return _error(
                413,
                "RequestEntityTooLarge",
                f"The request body is {len(raw)} bytes; the limit is {MAX_BYTES} bytes.",
            )
        try:
            data = json.loads(raw or b"null")
        except ValueError:
            return _error(400, "InvalidRequestContent", "The request content is not valid JSON.")
        if (problem := _card_problem(data)) is not None:
            return _error(
                400,
                "TriggerInputSchemaMismatch",
                f"The input body for trigger 'manual' did not match its schema: {problem}.",
            )
        workflow_id = request.path_params["workflow_id"]
        wait = st.rate.take(workflow_id, world.clock.now())
        if wait is not None:
            return error_response(429, "Rate limit is exceeded. Try again later.", wait)
        for att in data["attachments"]:
            st.cards.append(
                ReceivedCard(
                    workflow_id=workflow_id,
                    at=world.clock.now().isoformat(),
                    card=att["content"],
                    payload=data,
                )
            )
        return Response(status_code=202)

    return [
        Route("/workflows/{workflow_id}/triggers/manual/paths/invoke", invoke, methods=["POST"])
    ]
