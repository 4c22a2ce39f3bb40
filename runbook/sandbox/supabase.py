"""Sandbox: the Supabase Management API (``https://api.supabase.com``) for one project.

Mounted under ``/supabase``; paths are Supabase's own (``/v1/projects/{ref}/...``). One project,
ref ``sbxprojectref0000000``, with three edge functions ("transcribe", "send-email",
"generate-summary") whose every deployed version is kept, source and all, in ``SupabaseState``.

World rules (what the runbook's playbooks act on):

- A function version whose source contains ``// sandbox:slow`` is slow: its invocations time out
  (504/546, ~60 s in the logs; the data plane holds ``function_timeout_s``). Redeploying the previous
  source (there is no rollback endpoint) makes the function healthy again.
- ``degrade_auth(world, "rate_limit")``: auth answers 429s (logs, data plane) until a PATCH of
  ``/config/auth`` raises any ``rate_limit_*`` above the value it had when the degradation began.
  ``degrade_auth(world, "down")``: auth health is UNHEALTHY and the data plane answers 503.
- 120 requests per clock minute, then 429 for the rest of that minute (``X-RateLimit-*`` headers).

The sandbox cannot run SQL: ``logs.all`` and ``functions.combined-stats`` are answered from the
simulated traffic of the data plane (``supabase_data``), consistent with this state.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import policy
from email.parser import BytesParser
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from runbook.sandbox.core import World

NAME = "supabase"
PROJECT_REF = "sbxprojectref0000000"
SLOW_MARKER = b"// sandbox:slow"
RATE_LIMIT_PER_MINUTE = 120
SERVICES = ("auth", "db", "db_postgres_user", "pooler", "realtime", "rest", "storage", "pg_bouncer")
AUTH_DEGRADATIONS = ("rate_limit", "down")
GOTRUE_INFO = {
    "name": "GoTrue",
    "version": "v2.170.0",
    "description": "GoTrue is a user registration and authentication API",
}

DEFAULT_AUTH_CONFIG: dict[str, Any] = {
    "site_url": "https://app.example.com",
    "disable_signup": False,
    "external_email_enabled": True,
    "jwt_exp": 3600,
    "mailer_otp_exp": 3600,
    "rate_limit_anonymous_users": 30,
    "rate_limit_email_sent": 2,
    "rate_limit_sms_sent": 30,
    "rate_limit_verify": 30,
    "rate_limit_token_refresh": 150,
    "rate_limit_otp": 30,
    "rate_limit_web3": 30,
}

_HANDLER = "Deno.serve(async (req) => {{\n  const body = await req.json();\n  return Response.json({});\n}});\n"
_INITIAL_SOURCES: dict[str, list[str]] = {
    "transcribe": [
        _HANDLER.format("{ text: '' }"),
        _HANDLER.format("{ text: `transcribed ${body.audio}` }"),
        _HANDLER.format("{ text: `transcribed ${body.audio}`, lang: 'en' }"),
    ],
    "send-email": [
        _HANDLER.format("{ queued: true }"),
        _HANDLER.format("{ queued: true, to: body.to }"),
    ],
    "generate-summary": [_HANDLER.format("{ summary: String(body.text).slice(0, 200) }")],
}


@dataclass
class FunctionVersion:
    """One deployed version of an edge function: its files and when it went live."""

    version: int
    files: dict[str, bytes]
    entrypoint_path: str
    deployed_at: datetime

    @property
    def source(self) -> bytes:
        """The entrypoint's source (what the body endpoint answers)."""
        if self.entrypoint_path in self.files:
            return self.files[self.entrypoint_path]
        return b"\n".join(self.files.values())

    @property
    def slow(self) -> bool:
        return any(SLOW_MARKER in content for content in self.files.values())


@dataclass
class EdgeFunctionState:
    """An edge function and its full version history (newest last)."""

    id: str
    slug: str
    name: str
    created_at: datetime
    verify_jwt: bool = True
    status: str = "ACTIVE"
    history: list[FunctionVersion] = field(default_factory=list)

    @property
    def current(self) -> FunctionVersion:
        return self.history[-1]


@dataclass
class AuthState:
    """Auth config plus the current degradation ("rate_limit" and/or "down")."""

    config: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_AUTH_CONFIG))
    degraded: set[str] = field(default_factory=set)
    since: datetime | None = None
    baseline: dict[str, int] = field(default_factory=dict)


@dataclass
class SupabaseState:
    """Everything the Supabase project holds in the sandbox."""

    ref: str = PROJECT_REF
    functions: dict[str, EdgeFunctionState] = field(default_factory=dict)
    auth: AuthState = field(default_factory=AuthState)
    service_status: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    invocations: list[dict[str, Any]] = field(default_factory=list)
    rl_minute: int = -1
    rl_count: int = 0


# --- state and world functions (used by scenarios, the product app and the data plane) -----------


def _new_id(world: World) -> str:
    return str(uuid.UUID(int=world.rng.getrandbits(128), version=4))


def init_state(world: World) -> None:
    """Put the initial project (three functions with version histories) in ``world.state``."""
    st = SupabaseState()
    now = world.clock.now()
    for slug, sources in _INITIAL_SOURCES.items():
        first = now - timedelta(days=len(sources) + 7)
        fn = EdgeFunctionState(id=_new_id(world), slug=slug, name=slug, created_at=first)
        for i, src in enumerate(sources, start=1):
            deployed = now - timedelta(days=len(sources) - i + 1)
            fn.history.append(FunctionVersion(i, {"index.ts": src.encode()}, "index.ts", deployed))
        st.functions[slug] = fn
    world.state[NAME] = st


def get_state(world: World) -> SupabaseState:
    """The project's state, created on first use."""
    if NAME not in world.state:
        init_state(world)
    st: SupabaseState = world.state[NAME]
    return st


def deploy(
    world: World,
    slug: str,
    files: dict[str, bytes],
    *,
    entrypoint_path: str = "index.ts",
    name: str | None = None,
    verify_jwt: bool | None = None,
) -> EdgeFunctionState:
    """Deploy ``files`` as the next version of ``slug`` (creating the function if new)."""
    st = get_state(world)
    now = world.clock.now()
    fn = st.functions.get(slug)
    if fn is None:
        fn = EdgeFunctionState(id=_new_id(world), slug=slug, name=name or slug, created_at=now)
        st.functions[slug] = fn
    if name:
        fn.name = name
    if verify_jwt is not None:
        fn.verify_jwt = verify_jwt
    version = fn.current.version + 1 if fn.history else 1
    fn.history.append(FunctionVersion(version, dict(files), entrypoint_path, now))
    fn.status = "ACTIVE"
    return fn


def deploy_slow_version(world: World, slug: str) -> int:
    """Deploy a new version of ``slug`` whose source carries the slow marker; return its version."""
    fn = get_state(world).functions.get(slug)
    if fn is None:
        raise ValueError(f"no edge function {slug!r} in the sandbox project")
    cur = fn.current
    files = dict(cur.files)
    files[cur.entrypoint_path] = cur.source + b"\n" + SLOW_MARKER + b"\n"
    return deploy(world, slug, files, entrypoint_path=cur.entrypoint_path).current.version


def slow_functions(world: World) -> set[str]:
    """Slugs whose current version is slow."""
    return {
        s
        for s, fn in get_state(world).functions.items()
        if fn.status == "ACTIVE" and fn.current.slow
    }


def function_source(world: World, slug: str, version: int | None = None) -> bytes:
    """The source of ``slug`` at ``version`` (default: current). Raises KeyError when unknown."""
    fn = get_state(world).functions[slug]
    if version is None:
        return fn.current.source
    for v in fn.history:
        if v.version == version:
            return v.source
    raise KeyError(f"{slug} has no version {version}")


def degrade_auth(world: World, kind: str = "rate_limit") -> None:
    """Degrade auth: "rate_limit" (auth answers 429s) or "down" (auth health unhealthy)."""
    if kind not in AUTH_DEGRADATIONS:
        raise ValueError(f"auth degradation must be one of {AUTH_DEGRADATIONS}, not {kind!r}")
    auth = get_state(world).auth
    if not auth.degraded:
        auth.since = world.clock.now()
    auth.degraded.add(kind)
    if kind == "rate_limit":
        auth.baseline = {k: v for k, v in auth.config.items() if k.startswith("rate_limit_")}


def restore_auth(world: World) -> None:
    """End every auth degradation."""
    auth = get_state(world).auth
    auth.degraded.clear()
    auth.since = None
    auth.baseline = {}


def auth_is_degraded(world: World) -> bool:
    """True while auth is rate limiting or down."""
    return bool(get_state(world).auth.degraded)


def auth_degradation(world: World) -> set[str]:
    """The current auth degradations ("rate_limit", "down"); empty when healthy."""
    return set(get_state(world).auth.degraded)


def set_service_status(world: World, service: str, status: str, error: str | None = None) -> None:
    """Force a service's health ("ACTIVE_HEALTHY", "UNHEALTHY", "COMING_UP") for a scenario."""
    if service not in SERVICES:
        raise ValueError(f"unknown Supabase service {service!r}; one of {SERVICES}")
    get_state(world).service_status[service] = (status, error)


def service_health(world: World, service: str) -> dict[str, Any]:
    """One service's entry in the health endpoint's answer."""
    st = get_state(world)
    status, error = st.service_status.get(service, ("ACTIVE_HEALTHY", None))
    if service == "auth" and "down" in st.auth.degraded:
        status, error = "UNHEALTHY", "GoTrue is not responding: connection refused"
    entry: dict[str, Any] = {"name": service, "healthy": status == "ACTIVE_HEALTHY"}
    entry["status"] = status
    if error:
        entry["error"] = error
    elif service == "auth":
        entry["info"] = dict(GOTRUE_INFO)
    return entry


# --- HTTP ------------------------------------------------------------------------------------------


def error_response(status: int, message: str, retry_after: float | None = None) -> Response:
    """Supabase Management API's own error body: ``{"message": ...}``."""
    headers = {"Retry-After": str(math.ceil(retry_after))} if retry_after is not None else None
    return JSONResponse({"message": message}, status_code=status, headers=headers)


def _count_request(world: World, st: SupabaseState) -> tuple[bool, dict[str, str]]:
    """Count one request in the clock minute; return (over the limit, rate-limit headers)."""
    ts = world.clock.now().timestamp()
    minute = int(ts // 60)
    if minute != st.rl_minute:
        st.rl_minute, st.rl_count = minute, 0
    st.rl_count += 1
    reset = max(1, math.ceil((minute + 1) * 60 - ts))
    headers = {
        "X-RateLimit-Limit": str(RATE_LIMIT_PER_MINUTE),
        "X-RateLimit-Remaining": str(max(0, RATE_LIMIT_PER_MINUTE - st.rl_count)),
        "X-RateLimit-Reset": str(reset),
    }
    return st.rl_count > RATE_LIMIT_PER_MINUTE, headers


def _endpoint(world: World, handler: Any) -> Any:
    """Wrap a handler with the token check, the per-minute rate limit and the project lookup."""

    async def endpoint(request: Request) -> Response:
        st = get_state(world)
        if request.headers.get("authorization") != f"Bearer {world.token_for(NAME)}":
            return error_response(401, "Unauthorized")
        limited, headers = _count_request(world, st)
        if limited:
            resp = error_response(
                429, "Too many requests", retry_after=float(headers["X-RateLimit-Reset"])
            )
        elif request.path_params.get("ref") != st.ref:
            resp = error_response(404, "Project not found or you do not have access to it")
        else:
            resp = await handler(request, st)
        resp.headers.update(headers)
        return resp

    return endpoint


def _function_json(fn: EdgeFunctionState) -> dict[str, Any]:
    cur = fn.current
    return {
        "id": fn.id,
        "slug": fn.slug,
        "name": fn.name,
        "status": fn.status,
        "version": cur.version,
        "created_at": int(fn.created_at.timestamp() * 1000),
        "updated_at": int(cur.deployed_at.timestamp() * 1000),
        "verify_jwt": fn.verify_jwt,
        "import_map": False,
        "entrypoint_path": cur.entrypoint_path,
        "import_map_path": None,
    }


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Split a deploy body into its ``metadata`` JSON and its ``file`` parts. Raises ValueError."""
    ctype = content_type.lower()
    if not ctype.startswith("multipart/form-data") or "boundary=" not in ctype:
        raise ValueError("expected a multipart/form-data body with a boundary")
    head = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
    msg = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    parts = list(msg.iter_parts()) if msg.is_multipart() else []  # type: ignore[attr-defined]
    if not parts or msg.defects:
        raise ValueError("malformed multipart body: no well-formed parts found")
    metadata: dict[str, Any] | None = None
    files: dict[str, bytes] = {}
    for part in parts:
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        payload = payload if isinstance(payload, bytes) else b""
        if name == "metadata":
            try:
                metadata = json.loads(payload)
            except ValueError as exc:
                raise ValueError(f"metadata is not valid JSON: {exc}") from exc
            if not isinstance(metadata, dict):
                raise ValueError("metadata must be a JSON object")
        elif name == "file" or part.get_filename():
            files[part.get_filename() or f"file{len(files)}"] = payload
    if metadata is None:
        raise ValueError("the metadata part is required")
    if not files:
        raise ValueError("at least one file part is required")
    return metadata, files


def routes(world: World) -> list[BaseRoute]:
    """The Management API routes, paths as Supabase's own."""

    async def list_functions(request: Request, st: SupabaseState) -> Response:
        return JSONResponse([_function_json(fn) for fn in st.functions.values()])

    async def get_function(request: Request, st: SupabaseState) -> Response:
        fn = st.functions.get(request.path_params["slug"])
        if fn is None:
            return error_response(404, "Function not found")
        return JSONResponse(_function_json(fn))

    async def get_body(request: Request, st: SupabaseState) -> Response:
        fn = st.functions.get(request.path_params["slug"])
        if fn is None:
            return error_response(404, "Function not found")
        return Response(fn.current.source, media_type="application/octet-stream")

    async def deploy_function(request: Request, st: SupabaseState) -> Response:
        try:
            metadata, files = parse_multipart(
                request.headers.get("content-type", ""), await request.body()
            )
        except ValueError as exc:
            return error_response(400, str(exc))
        slug = request.query_params.get("slug") or metadata.get("name")
        entry, jwt = metadata.get("entrypoint_path"), metadata.get("verify_jwt")
        if not isinstance(slug, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,99}", slug):
            return error_response(400, "slug must start with a letter (letters, digits, - and _)")
        if not isinstance(entry, str) or not entry:
            return error_response(400, "metadata.entrypoint_path is required")
        if entry not in files:
            return error_response(400, f"entrypoint_path {entry!r} is not among the uploaded files")
        if jwt is not None and not isinstance(jwt, bool):
            return error_response(400, "metadata.verify_jwt must be a boolean")
        if request.query_params.get("bundleOnly") in ("1", "true"):
            preview = {"slug": slug, "name": metadata.get("name") or slug, "entrypoint_path": entry}
            return JSONResponse(preview, status_code=201)
        fn = deploy(
            world, slug, files, entrypoint_path=entry, name=metadata.get("name"), verify_jwt=jwt
        )
        return JSONResponse(_function_json(fn), status_code=201)

    async def health(request: Request, st: SupabaseState) -> Response:
        raw = request.query_params.get("services", "")
        names = [s.strip() for s in raw.split(",") if s.strip()]
        if not names:
            return error_response(400, "services is required: a comma-separated list of services")
        unknown = [s for s in names if s not in SERVICES]
        if unknown:
            return error_response(400, f"unknown services {unknown}; valid: {list(SERVICES)}")
        return JSONResponse([service_health(world, s) for s in names])

    async def logs(request: Request, st: SupabaseState) -> Response:
        from runbook.sandbox import supabase_data  # the traffic lives there; it imports this module

        status, body = supabase_data.logs_all(world, dict(request.query_params))
        return JSONResponse(body, status_code=status)

    async def stats(request: Request, st: SupabaseState) -> Response:
        from runbook.sandbox import supabase_data

        status, body = supabase_data.combined_stats(world, dict(request.query_params))
        return JSONResponse(body, status_code=status)

    async def auth_config(request: Request, st: SupabaseState) -> Response:
        if request.method == "GET":
            return JSONResponse(st.auth.config)
        try:
            changes = json.loads(await request.body())
        except ValueError:
            return error_response(400, "body must be a JSON object of auth config fields")
        problem = _validate_auth_changes(st.auth.config, changes)
        if problem:
            return error_response(400, problem)
        st.auth.config.update(changes)
        _maybe_clear_rate_limit(st.auth)
        return JSONResponse(st.auth.config)

    p = "/v1/projects/{ref}"
    table: list[tuple[str, Any, list[str]]] = [
        (f"{p}/functions", list_functions, ["GET"]),
        (f"{p}/functions/deploy", deploy_function, ["POST"]),
        (f"{p}/functions/{{slug}}", get_function, ["GET"]),
        (f"{p}/functions/{{slug}}/body", get_body, ["GET"]),
        (f"{p}/health", health, ["GET"]),
        (f"{p}/analytics/endpoints/logs.all", logs, ["GET"]),
        (f"{p}/analytics/endpoints/functions.combined-stats", stats, ["GET"]),
        (f"{p}/config/auth", auth_config, ["GET", "PATCH"]),
    ]
    return [Route(path, _endpoint(world, h), methods=m) for path, h, m in table]


def _validate_auth_changes(config: dict[str, Any], changes: Any) -> str | None:
    """The reason a PATCH body is invalid, or None. Types follow the current values."""
    if not isinstance(changes, dict):
        return "body must be a JSON object of auth config fields"
    for key, value in changes.items():
        if key not in config:
            return f"unknown auth config field {key!r}"
        current = config[key]
        if isinstance(current, bool):
            if not isinstance(value, bool):
                return f"{key} must be a boolean"
        elif isinstance(current, int):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                return f"{key} must be a non-negative integer"
        elif value is not None and not isinstance(value, str):
            return f"{key} must be a string"
    return None


def _maybe_clear_rate_limit(auth: AuthState) -> None:
    """Raising any rate limit above its value when the 429s began ends the 429 part."""
    if "rate_limit" not in auth.degraded:
        return
    if any(auth.config[k] > v for k, v in auth.baseline.items()):
        auth.degraded.discard("rate_limit")
        auth.baseline = {}
        if not auth.degraded:
            auth.since = None
