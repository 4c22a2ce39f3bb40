"""The sandbox's Slack: Web API methods the runbook calls, and incoming webhooks.

Paths are Slack's own (mounted under ``/slack``): ``POST /api/chat.postMessage``,
``POST|GET /api/conversations.create|info|list`` and ``POST /services/{T}/{B}/{secret}``.

Like Slack, the Web API answers HTTP 200 with ``{"ok": false, "error": "<code>"}`` for every
failure except rate limiting, which is HTTP 429 + Retry-After. Posting is limited per channel in
clock time by a token bucket (``SlackState.rate``): a burst of 5, then about one message a second;
``rate.enabled = False`` turns it off. ``RateLimit`` is shared with the other chat/paging vendors.
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from runbook.sandbox.core import World

NAME = "slack"
BOT_USER_ID = "U0SBXBOT01"
BOT_ID = "B0SBXBOT01"
TEAM_ID = "T0SBXTEAM1"
INITIAL_CHANNELS = {"alerts": "C0SBXALERT", "incidents": "C0SBXINCID", "engineering": "C0SBXENGIN"}
MAX_TEXT = 40_000
_NAME_OK = re.compile(r"[a-z0-9_-]+")
_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


@dataclass
class RateLimit:
    """A token bucket per key in clock time: ``burst`` calls at once, then ``per_second``.

    Attributes:
        per_second: the sustained rate.
        burst: how many calls may come at once after a quiet spell.
        enabled: False lets everything through.
        buckets: per key, (tokens left, clock timestamp of the last refill).
    """

    per_second: float
    burst: int
    enabled: bool = True
    buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, key: str, now: datetime) -> float | None:
        """Spend one call for ``key``: None when allowed, else the seconds until one is."""
        if not self.enabled:
            return None
        t = now.timestamp()
        tokens, last = self.buckets.get(key, (float(self.burst), t))
        tokens = min(float(self.burst), tokens + max(0.0, t - last) * self.per_second)
        if tokens >= 1.0:
            self.buckets[key] = (tokens - 1.0, t)
            return None
        self.buckets[key] = (tokens, t)
        return (1.0 - tokens) / self.per_second


@dataclass
class Channel:
    """One conversation and the messages posted to it (oldest first)."""

    id: str
    name: str
    created: int
    is_private: bool = False
    is_member: bool = True
    is_archived: bool = False
    messages: list[dict[str, Any]] = field(default_factory=list)

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "is_channel": not self.is_private,
            "is_group": False,
            "is_private": self.is_private,
            "is_archived": self.is_archived,
            "is_member": self.is_member,
            "created": self.created,
            "creator": BOT_USER_ID,
            "topic": {"value": "", "creator": "", "last_set": 0},
            "purpose": {"value": "", "creator": "", "last_set": 0},
        }


@dataclass
class SlackState:
    """Channels by id, the rate limit, and the channel incoming webhooks post to."""

    channels: dict[str, Channel] = field(default_factory=dict)
    rate: RateLimit = field(default_factory=lambda: RateLimit(per_second=1.0, burst=5))
    webhook_channel: str = INITIAL_CHANNELS["alerts"]
    last_ts_us: int = 0


def init_state(world: World) -> None:
    """Three public channels the bot is in: #alerts, #incidents, #engineering."""
    created = int(world.clock.now().timestamp())
    st = SlackState()
    for name, cid in INITIAL_CHANNELS.items():
        st.channels[cid] = Channel(id=cid, name=name, created=created)
    world.state[NAME] = st


def _state(world: World) -> SlackState:
    st: SlackState = world.state[NAME]
    return st


def find_channel(world: World, ref: str) -> Channel | None:
    """A channel by id (C...), ``#name`` or bare name; None when there is none."""
    st = _state(world)
    if ref in st.channels:
        return st.channels[ref]
    name = ref.removeprefix("#")
    return next((c for c in st.channels.values() if c.name == name), None)


def messages(world: World, ref: str) -> list[dict[str, Any]]:
    """The messages posted to a channel (by id or name), oldest first."""
    channel = find_channel(world, ref)
    return list(channel.messages) if channel else []


def error_response(status: int, message: str, retry_after: float | None = None) -> Response:
    """Slack's own answers to faults: 429 JSON ``ratelimited``; 5xx a small page from its edge."""
    if status == 429:
        headers = {"Retry-After": str(max(1, math.ceil(retry_after or 1)))}
        return JSONResponse({"ok": False, "error": "ratelimited"}, status, headers=headers)
    if status >= 500:
        body = f"<html><body><h1>{status} Server Error</h1><p>{message}</p></body></html>"
        return Response(body, status, media_type="text/html")
    return JSONResponse({"ok": False, "error": message}, status)


def _fail(error: str) -> JSONResponse:
    # the Web API reports its failures inside an HTTP 200
    return JSONResponse({"ok": False, "error": error})


async def _args(request: Request) -> dict[str, Any] | JSONResponse:
    """Method arguments from the query string and a JSON or form body, as Slack reads them."""
    args: dict[str, Any] = dict(request.query_params)
    raw = await request.body()
    if not raw:
        return args
    ctype = request.headers.get("content-type", "")
    if "json" in ctype:
        try:
            data = json.loads(raw)
        except ValueError:
            return _fail("invalid_json")
        if not isinstance(data, dict):
            return _fail("json_not_object")
        args.update(data)
    else:
        args.update(parse_qsl(raw.decode("utf-8", errors="replace")))
    return args


def _auth_error(world: World, request: Request, args: dict[str, Any]) -> JSONResponse | None:
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else args.get("token")
    if not token:
        return _fail("not_authed")
    if token != world.token_for(NAME):
        return _fail("invalid_auth")
    return None


def _next_ts(world: World) -> str:
    # Slack's ts is seconds.microseconds and unique within a channel: never repeat one
    st = _state(world)
    us = max(int(world.clock.now().timestamp() * 1_000_000), st.last_ts_us + 1)
    st.last_ts_us = us
    return f"{us // 1_000_000}.{us % 1_000_000:06d}"


def _new_channel_id(world: World) -> str:
    st = _state(world)
    while True:
        cid = "C" + "".join(world.rng.choice(_ID_CHARS) for _ in range(10))
        if cid not in st.channels:
            return cid


def _name_error(name: str) -> str | None:
    if not name:
        return "invalid_name_required"
    if len(name) > 80:
        return "invalid_name_maxlength"
    if not _NAME_OK.fullmatch(name):
        return "invalid_name_specials"
    if not re.search(r"[a-z0-9]", name):
        return "invalid_name_punctuation"
    return None


def _rate_limited(retry_after: float) -> Response:
    return error_response(429, "ratelimited", retry_after=retry_after)


def routes(world: World) -> list[BaseRoute]:
    """Slack's Web API methods and incoming webhooks."""

    async def post_message(request: Request) -> Response:
        args = await _args(request)
        if isinstance(args, JSONResponse):
            return args
        if (denied := _auth_error(world, request, args)) is not None:
            return denied
        channel = find_channel(world, str(args.get("channel") or ""))
        if channel is None:
            return _fail("channel_not_found")
        if channel.is_archived:
            return _fail("is_archived")
        if not channel.is_member:
            return _fail("not_in_channel")
        text, blocks = args.get("text"), args.get("blocks")
        if isinstance(blocks, str):  # form posts carry blocks as a JSON string
            try:
                blocks = json.loads(blocks)
            except ValueError:
                return _fail("invalid_blocks")
        if blocks is not None and not isinstance(blocks, list):
            return _fail("invalid_blocks")
        if not text and not blocks and not args.get("attachments"):
            return _fail("no_text")
        if text and len(str(text)) > MAX_TEXT:
            return _fail("msg_too_long")
        wait = _state(world).rate.take(channel.id, world.clock.now())
        if wait is not None:
            return _rate_limited(wait)
        message: dict[str, Any] = {
            "type": "message",
            "subtype": "bot_message",
            "text": str(text or ""),
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "ts": _next_ts(world),
        }
        if blocks:
            message["blocks"] = blocks
        if args.get("thread_ts"):
            message["thread_ts"] = str(args["thread_ts"])
        channel.messages.append(message)
        return JSONResponse(
            {"ok": True, "channel": channel.id, "ts": message["ts"], "message": message}
        )

    async def conversations_create(request: Request) -> Response:
        args = await _args(request)
        if isinstance(args, JSONResponse):
            return args
        if (denied := _auth_error(world, request, args)) is not None:
            return denied
        name = str(args.get("name") or "")
        if (error := _name_error(name)) is not None:
            return _fail(error)
        if find_channel(world, name) is not None:
            return _fail("name_taken")
        is_private = str(args.get("is_private", "")).lower() in ("true", "1")
        channel = Channel(
            id=_new_channel_id(world),
            name=name,
            created=int(world.clock.now().timestamp()),
            is_private=is_private,
        )
        _state(world).channels[channel.id] = channel
        return JSONResponse({"ok": True, "channel": channel.to_api()})

    async def conversations_info(request: Request) -> Response:
        args = await _args(request)
        if isinstance(args, JSONResponse):
            return args
        if (denied := _auth_error(world, request, args)) is not None:
            return denied
        # like Slack, info takes a channel id; a name is "not found"
        channel = _state(world).channels.get(str(args.get("channel") or ""))
        if channel is None or (channel.is_private and not channel.is_member):
            return _fail("channel_not_found")
        return JSONResponse({"ok": True, "channel": channel.to_api()})

    async def conversations_list(request: Request) -> Response:
        args = await _args(request)
        if isinstance(args, JSONResponse):
            return args
        if (denied := _auth_error(world, request, args)) is not None:
            return denied
        types = set(str(args.get("types") or "public_channel").split(","))
        exclude_archived = str(args.get("exclude_archived", "")).lower() in ("true", "1")
        try:
            limit = min(1000, max(1, int(args.get("limit") or 100)))
            cursor = str(args.get("cursor") or "")
            offset = int(base64.b64decode(cursor).decode().split(":")[1]) if cursor else 0
        except (ValueError, IndexError):
            return _fail("invalid_cursor")
        visible = [
            c
            for c in _state(world).channels.values()
            if ("private_channel" if c.is_private else "public_channel") in types
            and (c.is_member or not c.is_private)
            and not (exclude_archived and c.is_archived)
        ]
        page = visible[offset : offset + limit]
        more = offset + limit < len(visible)
        next_cursor = base64.b64encode(f"offset:{offset + limit}".encode()).decode() if more else ""
        return JSONResponse(
            {
                "ok": True,
                "channels": [c.to_api() for c in page],
                "response_metadata": {"next_cursor": next_cursor},
            }
        )

    async def unknown_method(request: Request) -> Response:
        return JSONResponse({"ok": False, "error": "unknown_method"}, 404)

    async def webhook(request: Request) -> Response:
        if request.path_params["secret"] != world.token_for(NAME):
            return PlainTextResponse("invalid_token", 403)
        raw = await request.body()
        try:
            if "form" in request.headers.get("content-type", ""):
                raw = dict(parse_qsl(raw.decode())).get("payload", "").encode()
            data = json.loads(raw)
        except ValueError:
            return PlainTextResponse("invalid_payload", 400)
        if not isinstance(data, dict):
            return PlainTextResponse("invalid_payload", 400)
        if not data.get("text") and not data.get("blocks"):
            return PlainTextResponse("no_text", 400)
        channel = _state(world).channels.get(_state(world).webhook_channel)
        if channel is None:
            return PlainTextResponse("channel_not_found", 404)
        if channel.is_archived:
            return PlainTextResponse("channel_is_archived", 410)
        wait = _state(world).rate.take(channel.id, world.clock.now())
        if wait is not None:
            return PlainTextResponse(
                "rate_limited", 429, headers={"Retry-After": str(max(1, math.ceil(wait)))}
            )
        message = {
            "type": "message",
            "subtype": "bot_message",
            "text": str(data.get("text") or ""),
            "bot_id": BOT_ID,
            "ts": _next_ts(world),
            "via": "webhook",
        }
        if data.get("blocks"):
            message["blocks"] = data["blocks"]
        channel.messages.append(message)
        return PlainTextResponse("ok")

    both = ["GET", "POST"]
    return [
        Route("/api/chat.postMessage", post_message, methods=["POST"]),
        Route("/api/conversations.create", conversations_create, methods=["POST"]),
        Route("/api/conversations.info", conversations_info, methods=both),
        Route("/api/conversations.list", conversations_list, methods=both),
        Route("/api/{method}", unknown_method, methods=both),
        Route("/services/{team}/{bot}/{secret}", webhook, methods=["POST"]),
    ]
