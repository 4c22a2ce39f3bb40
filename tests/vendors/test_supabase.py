"""Supabase: the Management API and data-plane clients, their sandbox, and the project block."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import httpx
import pytest

from blocks.supabase import SupabaseProject
from runbook.clients.supabase import SupabaseClient, SupabaseDataClient
from runbook.clock import ManualClock
from runbook.errors import SupabasePermanentError, SupabaseTransientError
from runbook.sandbox import supabase, supabase_data
from runbook.sandbox.core import DEFAULT_TOKEN, FaultRule, World
from tests.conftest import sandbox_url

REF = supabase.PROJECT_REF
T0 = datetime(2026, 3, 2, 12, 0, 5, tzinfo=UTC)
MGMT = "/supabase/v1/projects/" + REF


# --- fixtures: the shared in-process sandbox, over a world with a manual clock ------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def world(clock: ManualClock) -> World:
    """Overrides the shared ``world``: the same seeded world, on a clock the tests move."""
    return World(token=DEFAULT_TOKEN, seed=7, clock=clock)


@pytest.fixture
def transport(sandbox_transport: httpx.ASGITransport) -> httpx.ASGITransport:
    return sandbox_transport


def mgmt(transport: httpx.AsyncBaseTransport, **kw) -> SupabaseClient:
    return SupabaseClient(sandbox_url("supabase"), DEFAULT_TOKEN, transport=transport, **kw)


def data(transport: httpx.AsyncBaseTransport, **kw) -> SupabaseDataClient:
    return SupabaseDataClient(
        sandbox_url("supabase-data"), DEFAULT_TOKEN, transport=transport, **kw
    )


def raw(
    transport: httpx.AsyncBaseTransport, token: str | None = DEFAULT_TOKEN
) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}", "apikey": token} if token else {}
    return httpx.AsyncClient(transport=transport, base_url="http://sandbox", headers=headers)


# --- client error mapping on small fakes ---------------------------------------------------------


def fake(responses: list[httpx.Response | Exception]) -> tuple[httpx.MockTransport, list]:
    """A transport answering ``responses`` in order (the last one repeats); records requests."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = responses[min(len(seen), len(responses)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handler), seen


async def test_429_retry_after_is_honoured_and_remaining_surfaced() -> None:
    """A 429 with Retry-After is retried, and the last X-RateLimit-Remaining is kept on the client."""
    limited = httpx.Response(
        429, json={"message": "Too many requests"}, headers={"retry-after": "0"}
    )
    ok = httpx.Response(200, json=[], headers={"x-ratelimit-remaining": "57"})
    t, seen = fake([limited, ok])
    async with SupabaseClient("http://x", "sbp_secret", transport=t) as c:
        assert await c.list_functions(REF) == []
    assert len(seen) == 2 and c.last_rate_limit_remaining == 57


async def test_429_without_retry_after_uses_the_reset_header() -> None:
    """A 429 carrying only X-RateLimit-Reset is a transient error whose retry_after is that reset."""
    limited = httpx.Response(
        429, json={"message": "Too many requests"}, headers={"x-ratelimit-reset": "42"}
    )
    t, _ = fake([limited])
    async with SupabaseClient("http://x", "sbp_secret", transport=t, max_retries=0) as c:
        with pytest.raises(SupabaseTransientError) as info:
            await c.list_functions(REF)
    assert info.value.retry_after == 42 and info.value.status_code == 429


async def test_5xx_is_retried_then_raised_as_transient() -> None:
    """A persistent 503 is tried max_retries+1 times, then raised as SupabaseTransientError."""
    t, seen = fake(
        [httpx.Response(503, json={"message": "upstream down"}, headers={"retry-after": "0"})]
    )
    async with SupabaseClient("http://x", "sbp_secret", transport=t, max_retries=2) as c:
        with pytest.raises(SupabaseTransientError, match="upstream down"):
            await c.health(REF)
    assert len(seen) == 3


async def test_4xx_is_permanent_with_vendor_message_and_no_token() -> None:
    """A 404 fails at once as SupabasePermanentError with Supabase's message, a hint, and no token."""
    t, seen = fake([httpx.Response(404, json={"message": "Function not found"})])
    async with SupabaseClient("http://x", "sbp_secret", transport=t) as c:
        with pytest.raises(SupabasePermanentError) as info:
            await c.get_function(REF, "nope")
    msg = str(info.value)
    assert (
        len(seen) == 1 and "Function not found" in msg and "slug" in msg and "sbp_secret" not in msg
    )


async def test_timeout_is_transient() -> None:
    """A read timeout becomes SupabaseTransientError after the in-client retries."""
    t, seen = fake([httpx.ReadTimeout("slow")])
    async with SupabaseClient("http://x", "sbp_secret", transport=t, max_retries=0) as c:
        with pytest.raises(SupabaseTransientError, match="did not answer"):
            await c.get_auth_config(REF)
    assert len(seen) == 1


async def test_logs_error_in_body_is_permanent() -> None:
    """A 200 logs answer whose body carries an error raises SupabasePermanentError with that error."""
    body = {"result": None, "error": {"code": 400, "message": "Unrecognized name: foo"}}
    t, _ = fake([httpx.Response(200, json=body)])
    async with SupabaseClient("http://x", "sbp_secret", transport=t) as c:
        with pytest.raises(SupabasePermanentError, match="Unrecognized name: foo"):
            await c.logs(REF, "select foo from edge_logs", T0 - timedelta(minutes=5), T0)


async def test_bad_interval_and_missing_token_fail_before_any_request() -> None:
    """An unknown stats interval and an empty token are permanent errors raised without a call."""
    t, seen = fake([httpx.Response(200, json={"result": []})])
    with pytest.raises(SupabasePermanentError, match="token"):
        SupabaseClient("http://x", "", transport=t)
    async with SupabaseClient("http://x", "sbp_secret", transport=t) as c:
        with pytest.raises(SupabasePermanentError, match="interval"):
            await c.function_stats(REF, "fn-id", interval="5min")
    assert seen == []


async def test_data_probe_results_and_errors() -> None:
    """Data probes report a 5xx as ok=False, raise on a refused connection and on a rejected key."""
    t, _ = fake([httpx.Response(504, json={"message": "Function timed out"})])
    async with SupabaseDataClient("http://x", "anon", transport=t) as c:
        result = await c.invoke_function("transcribe", {"a": 1})
    assert (
        not result.ok
        and result.status_code == 504
        and result.body["message"] == "Function timed out"
    )
    t, _ = fake([httpx.ConnectError("refused")])
    async with SupabaseDataClient("http://x", "anon", transport=t) as c:
        with pytest.raises(SupabaseTransientError, match="cannot reach"):
            await c.auth_health()
    t, _ = fake([httpx.Response(401, json={"message": "Invalid API key"})])
    async with SupabaseDataClient("http://x", "anon", transport=t) as c:
        with pytest.raises(SupabasePermanentError, match="Invalid API key"):
            await c.rest_root()


async def test_data_probe_timeout_is_a_result() -> None:
    """A probe that times out returns ok=False, timed_out=True and no status code."""
    t, _ = fake([httpx.ReadTimeout("slow")])
    async with SupabaseDataClient("http://x", "anon", transport=t) as c:
        result = await c.invoke_function("transcribe", {})
    assert not result.ok and result.timed_out and result.status_code is None


# --- every operation against the sandbox -----------------------------------------------------


async def test_list_and_get_functions(transport, world: World) -> None:
    """The sandbox project lists its three functions and answers one by slug, both recorded."""
    async with mgmt(transport) as c:
        fns = await c.list_functions(REF)
        one = await c.get_function(REF, "send-email")
        assert c.last_rate_limit_remaining == 118
    assert {f.slug for f in fns} == {"transcribe", "send-email", "generate-summary"}
    assert one.version == 2 and one.status == "ACTIVE" and one.updated_at
    paths = [r.path for r in world.requests_for("supabase")]
    assert paths == [f"/v1/projects/{REF}/functions", f"/v1/projects/{REF}/functions/send-email"]


async def test_deploy_bumps_version_and_body_returns_new_source(transport, world: World) -> None:
    """A deploy makes version+1, keeps the history, and the body endpoint answers the new source."""
    source = b"Deno.serve(() => new Response('v4'));\n"
    async with mgmt(transport) as c:
        fn = await c.deploy_function(REF, "transcribe", {"index.ts": source}, verify_jwt=False)
        body = await c.get_function_body(REF, "transcribe")
    assert fn.version == 4 and fn.verify_jwt is False and body == source
    assert supabase.function_source(world, "transcribe", 3) != source
    deploy_req = world.requests_for("supabase", r"/functions/deploy$")[-1]
    assert deploy_req.query == "slug=transcribe" and deploy_req.status == 201
    assert "multipart/form-data" in deploy_req.headers["content-type"]


async def test_redeploying_previous_source_fixes_slow_function(transport, world: World) -> None:
    """After a slow version, redeploying the previous source makes direct calls succeed again."""
    supabase_data.set_function_timeout(world, 0.01)
    async with mgmt(transport) as c, data(transport) as d:
        good = await c.get_function_body(REF, "transcribe")
        slow_version = supabase.deploy_slow_version(world, "transcribe")
        assert supabase.slow_functions(world) == {"transcribe"}
        assert supabase.SLOW_MARKER in await c.get_function_body(REF, "transcribe")
        failed = await d.invoke_function("transcribe", {"audio": "a.wav"})
        fixed = await c.deploy_function(REF, "transcribe", {"index.ts": good})
        healthy = await d.invoke_function("transcribe", {"audio": "a.wav"})
    assert not failed.ok and failed.status_code == 504
    assert fixed.version == slow_version + 1 and supabase.slow_functions(world) == set()
    assert healthy.ok and healthy.body["version"] == fixed.version


async def test_slow_function_times_out_the_client(transport, world: World) -> None:
    """A slow function holds longer than the client's timeout, so the probe reports a timeout."""
    supabase.deploy_slow_version(world, "generate-summary")
    supabase_data.set_function_timeout(world, 2.0)
    async with data(transport, timeout=0.1) as d:
        result = await d.invoke_function("generate-summary", {"text": "x"})
    assert result.timed_out and not result.ok and result.latency_ms < 1000


async def test_health_reflects_auth_degradation(transport, world: World) -> None:
    """Auth health turns UNHEALTHY while auth is down and back to ACTIVE_HEALTHY after restore."""
    async with mgmt(transport) as c, data(transport) as d:
        before = await c.health(REF)
        supabase.degrade_auth(world, "down")
        during = {h.name: h for h in await c.health(REF)}
        probe = await d.auth_health()
        supabase.restore_auth(world)
        after = await c.health(REF, services=("auth",))
        probe_after = await d.auth_health()
    assert all(h.healthy for h in before) and len(before) == 5
    assert during["auth"].status == "UNHEALTHY" and during["auth"].error and during["db"].healthy
    assert probe.status_code == 503 and not probe.ok
    assert (
        after[0].status == "ACTIVE_HEALTHY"
        and probe_after.ok
        and probe_after.body["name"] == "GoTrue"
    )
    assert "services=auth%2Cdb%2Crest" in world.requests_for("supabase", "/health$")[0].query


async def test_auth_config_patch_clears_rate_limit(
    transport, world: World, clock: ManualClock
) -> None:
    """Auth 429s show in the data plane and logs until a PATCH raises a rate limit, then stop. The
    logs show the rate limit as 429s and the requests let through, never as other errors (a triage
    weighing 429s against other auth errors would otherwise misread the fault)."""
    supabase.degrade_auth(world, "rate_limit")
    clock.advance(120)
    async with mgmt(transport) as c, raw(transport) as r:
        config = await c.get_auth_config(REF)
        limited = await r.post("/supabase-data/auth/v1/token")
        rows = await c.logs(REF, "select * from auth_logs", T0, clock.now())
        new = await c.update_auth_config(
            REF, {"rate_limit_token_refresh": config["rate_limit_token_refresh"] * 4}
        )
        after = await r.post("/supabase-data/auth/v1/token")
    assert limited.status_code == 429 and limited.json()["error_code"] == "over_request_rate_limit"
    statuses = [row["status"] for row in rows]
    assert set(statuses) <= {429, 200} and statuses.count(429) > statuses.count(200)
    assert new["rate_limit_token_refresh"] == 600 and not supabase.auth_is_degraded(world)
    assert after.status_code == 200
    assert world.requests_for("supabase", "/config/auth$")[-1].method == "PATCH"


async def test_auth_config_patch_validates_types(transport, world: World) -> None:
    """A PATCH with a wrong type or an unknown field is a 400 that names the field, changing nothing."""
    async with mgmt(transport) as c:
        with pytest.raises(
            SupabasePermanentError, match="rate_limit_otp must be a non-negative integer"
        ):
            await c.update_auth_config(REF, {"rate_limit_otp": "lots"})
        with pytest.raises(SupabasePermanentError, match="unknown auth config field"):
            await c.update_auth_config(REF, {"rate_limit_everything": 5})
        config = await c.get_auth_config(REF)
    assert config["rate_limit_otp"] == 30


async def test_function_logs_and_stats_show_slow_version(
    transport, world: World, clock: ManualClock
) -> None:
    """After a slow deploy the function logs carry ~60 s 504/546 rows and stats count server errors."""
    supabase.deploy_slow_version(world, "transcribe")
    clock.advance(300)
    async with mgmt(transport) as c:
        fn = await c.get_function(REF, "transcribe")
        sql = f"select * from function_edge_logs where function_id = '{fn.id}' limit 30"
        rows = await c.logs(REF, sql, T0 + timedelta(seconds=1), clock.now())
        stats = await c.function_stats(REF, fn.id, interval="15min")
        healthy = await c.function_stats(REF, (await c.get_function(REF, "send-email")).id)
    assert len(rows) == 30 and all(r["function_id"] == fn.id for r in rows)
    assert all(r["status_code"] in (504, 546) and r["execution_time_ms"] > 59_000 for r in rows)
    assert len(stats) == 15 and stats[-1].server_err_count > 0.8 * stats[-1].requests_count
    assert stats[-1].avg_execution_time > 59_000 and stats[0].server_err_count == 0
    assert all(s.error_count <= 1 for s in healthy)


async def test_logs_follow_app_error_types_and_real_invocations(transport, world: World) -> None:
    """Function logs carry the app's error types, and direct invocations appear in edge function logs."""
    # shaped like the product app's state: {type: weight} and an extra error rate
    app = SimpleNamespace(error_types={"TypeError": 3, "DatabaseTimeout": 1}, extra_error_rate=1.0)
    world.state["app"] = app
    async with mgmt(transport) as c, data(transport) as d:
        await d.invoke_function("send-email", {"to": "a@b.c"})
        start, end = T0 - timedelta(minutes=5), T0 + timedelta(seconds=1)
        logs = await c.logs(REF, "select * from function_logs", start, end)
        edge = await c.logs(REF, "select * from function_edge_logs limit 1000", start, end)
    assert logs and all(r["level"] == "error" for r in logs)
    assert {r["event_message"].split(":")[0] for r in logs} <= {"TypeError", "DatabaseTimeout"}
    assert any(
        r["timestamp"] == supabase_data.to_us(T0) and r["slug"] == "send-email" for r in edge
    )


async def test_logs_bad_sql(transport) -> None:
    """Missing sql is a 400 with Supabase's error body; an unknown table is an in-body error."""
    async with mgmt(transport) as c, raw(transport) as r:
        missing = await r.get(f"{MGMT}/analytics/endpoints/logs.all")
        with pytest.raises(SupabasePermanentError, match="no known log table"):
            await c.logs(REF, "select * from nowhere", T0 - timedelta(minutes=1), T0)
    assert missing.status_code == 400 and "sql is required" in missing.json()["error"]["message"]


async def test_rest_root_probe_follows_db_health(transport, world: World) -> None:
    """The REST root answers 200 while the db is healthy and 503 once it is marked unhealthy."""
    async with data(transport) as d:
        up = await d.rest_root()
        supabase.set_service_status(world, "db", "UNHEALTHY", "too many connections")
        down = await d.rest_root()
    assert up.ok and up.body["swagger"] == "2.0"
    assert down.status_code == 503 and not down.ok


async def test_rate_limit_per_clock_minute(transport, clock: ManualClock) -> None:
    """The 121st call in one clock minute gets 429 with the rate-limit headers; the next minute is free."""
    async with raw(transport) as r:
        for _ in range(120):
            ok = await r.get(f"{MGMT}/functions")
        limited = await r.get(f"{MGMT}/functions")
        async with mgmt(transport, max_retries=0) as c:
            with pytest.raises(SupabaseTransientError) as info:
                await c.list_functions(REF)
            assert c.last_rate_limit_remaining == 0
        clock.advance(60)
        again = await r.get(f"{MGMT}/functions")
    assert ok.status_code == 200 and ok.headers["x-ratelimit-remaining"] == "0"
    assert limited.status_code == 429 and limited.json() == {"message": "Too many requests"}
    assert limited.headers["x-ratelimit-limit"] == "120" and limited.headers["retry-after"] == "55"
    assert info.value.status_code == 429 and info.value.retry_after == 55
    assert again.status_code == 200 and again.headers["x-ratelimit-remaining"] == "119"


async def test_wrong_credentials_get_supabase_bodies(transport) -> None:
    """A wrong token gets 401 Unauthorized; a wrong or missing apikey gets Supabase's own 401 bodies."""
    async with raw(transport, "wrong") as r, raw(transport, None) as anon:
        mgmt_401 = await r.get(f"{MGMT}/functions")
        data_401 = await r.get("/supabase-data/rest/v1/")
        no_key = await anon.get("/supabase-data/auth/v1/health")
    async with SupabaseClient(sandbox_url("supabase"), "sbp_wrong", transport=transport) as c:
        with pytest.raises(SupabasePermanentError, match="Unauthorized") as info:
            await c.list_functions(REF)
    assert mgmt_401.status_code == 401 and mgmt_401.json() == {"message": "Unauthorized"}
    assert data_401.status_code == 401 and data_401.json()["message"] == "Invalid API key"
    assert no_key.status_code == 401 and no_key.json()["message"] == "No API key found in request"
    assert "sbp_wrong" not in str(info.value)


async def test_malformed_multipart_is_400(transport, world: World) -> None:
    """A deploy that is not multipart, lacks metadata or is garbled gets 400 {"message"} and no version."""
    url = f"{MGMT}/functions/deploy?slug=transcribe"
    async with raw(transport) as r:
        as_json = await r.post(url, json={"entrypoint_path": "index.ts"})
        no_meta = await r.post(url, files={"file": ("index.ts", b"x")})
        garbled = await r.post(
            url,
            content=b"--zz\r\nnonsense",
            headers={"content-type": "multipart/form-data; boundary=qq"},
        )
        bad_entry = await r.post(
            url,
            data={"metadata": json.dumps({"entrypoint_path": "main.ts"})},
            files={"file": ("index.ts", b"x")},
        )
    assert [x.status_code for x in (as_json, no_meta, garbled, bad_entry)] == [400] * 4
    assert "multipart" in as_json.json()["message"] and "metadata" in no_meta.json()["message"]
    assert "main.ts" in bad_entry.json()["message"]
    assert supabase.get_state(world).functions["transcribe"].current.version == 3


async def test_unknown_project_and_function(transport) -> None:
    """An unknown project ref and an unknown function slug are permanent 404s."""
    async with mgmt(transport) as c, data(transport) as d:
        with pytest.raises(SupabasePermanentError, match="Project not found"):
            await c.list_functions("aaaaaaaaaaaaaaaaaaaa")
        with pytest.raises(SupabasePermanentError, match="Requested function was not found"):
            await d.invoke_function("nope", {})
        with pytest.raises(SupabasePermanentError, match="services is required"):
            await c.health(REF, services=())


async def test_injected_fault_uses_supabase_error_body(transport, world: World) -> None:
    """An injected 503 answers Supabase's {"message"} body and the client retries past it."""
    world.add_fault(FaultRule(vendor="supabase", kind="error", path="/functions$", remaining=1))
    async with mgmt(transport) as c:
        fns = await c.list_functions(REF)
    first = world.requests_for("supabase")[0]
    assert len(fns) == 3 and first.status == 503 and first.fault == "error"


async def test_scenarios_drive_the_supabase_world(transport, world: World) -> None:
    """The control API's edge-timeouts and auth-failure scenarios show up through the Supabase clients."""
    supabase_data.set_function_timeout(world, 0.01)
    async with raw(transport) as r, mgmt(transport) as c, data(transport) as d:
        for name, params in (("edge-timeouts", {}), ("auth-failure", {"kind": "down"})):
            answer = await r.post("/_sandbox/scenario", json={"name": name, "params": params})
            assert answer.status_code == 200, answer.text
        fn = await c.get_function(REF, "transcribe")
        call = await d.invoke_function("transcribe", {})
        auth = {h.name: h for h in await c.health(REF)}["auth"]
        state = (await r.get("/_sandbox/state")).json()["supabase"]
    assert fn.version == 4 and call.status_code == 504 and auth.status == "UNHEALTHY"
    assert state["slow_functions"] == ["transcribe"] and state["auth_degraded"] is True


# --- the block ---------------------------------------------------------------------------------


def _block(**kw) -> SupabaseProject:
    values = {"project_ref": REF, "management_token": "sbp_" + "a" * 40, "anon_key": "anon"}
    return SupabaseProject(**{**values, **kw})


def test_block_validates_ref_and_token_without_echoing_secrets() -> None:
    """A bad ref or a non-sbp_ token for the real API is rejected with a message that hides the token."""
    with pytest.raises(ValueError, match="20 lowercase letters and digits"):
        _block(project_ref="My-Project")
    with pytest.raises(ValueError, match="sbp_") as info:
        _block(management_token="sandbox-token")
    assert "sandbox-token" not in str(info.value)
    sandbox = _block(
        management_token="sandbox-token", api_base_url="http://127.0.0.1:8900/supabase"
    )
    assert sandbox.project_url == f"https://{REF}.supabase.co"
    assert "sandbox-token" not in repr(sandbox)


async def test_block_clients_reach_the_sandbox(transport, world: World) -> None:
    """The block's clients, built from its plain values, talk to the sandbox with its credentials."""
    block = _block(
        management_token=DEFAULT_TOKEN,
        anon_key=DEFAULT_TOKEN,
        api_base_url=sandbox_url("supabase"),
        data_url=sandbox_url("supabase-data"),
        timeout=5,
    )
    async with (
        block.get_client(transport=transport) as c,
        block.get_data_client(transport=transport) as d,
    ):
        fns = await c.list_functions(block.project_ref)
        probe = await d.auth_health()
    assert len(fns) == 3 and probe.ok and c.timeout == 5
    assert [r.vendor for r in world.requests] == ["supabase", "supabase-data"]
