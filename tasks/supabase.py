"""Supabase: edge-function and auth log summaries for triage (``supabase functions logs``)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from prefect import task

from blocks import SupabaseProject
from runbook.clock import utcnow
from runbook.playbooks.auth import raised_limits
from tasks._retry import VENDOR_TASK
from tasks.context import ActionContext

FUNCTION_EDGE_SQL = (
    "select timestamp, event_message, response.status_code, m.function_id, m.execution_time_ms "
    "from function_edge_logs cross join unnest(metadata) as m cross join unnest(m.response) as response "
    "order by timestamp desc limit 1000"
)
AUTH_SQL = (
    "select timestamp, event_message, m.status, m.error, m.level from auth_logs "
    "cross join unnest(metadata) as m order by timestamp desc limit 1000"
)
EDGE_ERRORS_SQL = (
    "select timestamp, event_message, m.error, response.status_code from edge_logs "
    "cross join unnest(metadata) as m cross join unnest(m.response) as response "
    "where response.status_code >= 500 order by timestamp desc limit 1000"
)
TIMEOUT_STATUSES = {504, 546}


def _field(row: dict[str, Any], name: str) -> Any:
    """A column from a logs row: flattened by the query, else inside its first metadata entry."""
    if name in row:
        return row[name]
    meta = row.get("metadata")
    if isinstance(meta, list) and meta and isinstance(meta[0], dict):
        return meta[0].get(name)
    return None


async def _logs(project: SupabaseProject, sql: str, window_min: float) -> list[dict[str, Any]]:
    end = utcnow()
    async with project.get_client() as client:
        return await client.logs(project.project_ref, sql, end - timedelta(minutes=window_min), end)


@task(name="summarize-function-logs", **VENDOR_TASK)
async def summarize_function_logs(
    project: SupabaseProject, window_min: float = 15
) -> dict[str, Any]:
    """Timeouts, errors and slowest execution per edge function over the last ``window_min`` minutes."""
    rows = await _logs(project, FUNCTION_EDGE_SQL, window_min)
    calls: Counter[str] = Counter()
    timeouts: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    slowest: dict[str, float] = {}
    for row in rows:
        slug = str(_field(row, "slug") or _field(row, "function_id") or "?")
        status = int(_field(row, "status_code") or 0)
        calls[slug] += 1
        if status in TIMEOUT_STATUSES:
            timeouts[slug] += 1
        elif status >= 500:
            errors[slug] += 1
        ms = float(_field(row, "execution_time_ms") or 0)
        slowest[slug] = max(slowest.get(slug, 0.0), ms)
    total = sum(calls.values())
    failed = sum(timeouts.values()) + sum(errors.values())
    return {
        "calls": dict(calls),
        "timeouts": dict(timeouts),
        "errors": dict(errors),
        "slowest_ms": slowest,
        "success_pct": round(100 * (total - failed) / total, 2) if total else None,
    }


@task(name="summarize-auth-logs", **VENDOR_TASK)
async def summarize_auth_logs(project: SupabaseProject, window_min: float = 15) -> dict[str, Any]:
    """Auth requests rate-limited (429) and failing over the last ``window_min`` minutes."""
    rows = await _logs(project, AUTH_SQL, window_min)
    statuses = Counter(int(_field(r, "status") or 0) for r in rows)
    kinds = Counter(str(_field(r, "error")) for r in rows if _field(r, "error"))
    return {
        "requests": len(rows),
        "rate_limited": statuses.get(429, 0),
        "errors": sum(n for s, n in statuses.items() if s >= 400 and s != 429),
        "error_kinds": dict(kinds.most_common(5)),
    }


@task(name="summarize-errors", **VENDOR_TASK)
async def summarize_errors(project: SupabaseProject, window_min: float = 15) -> dict[str, Any]:
    """Server errors grouped by type (``pnpm run logs:errors --summary``)."""
    rows = await _logs(project, EDGE_ERRORS_SQL, window_min)
    kinds = Counter(
        str(_field(r, "error") or "unknown")
        for r in rows
        if int(_field(r, "status_code") or 0) >= 500
    )
    return {"errors": sum(kinds.values()), "by_type": dict(kinds.most_common(10))}


@task(name="raise-auth-rate-limits", **VENDOR_TASK)
async def raise_auth_rate_limits(
    ctx: ActionContext, project: SupabaseProject, factor: float = 2.0
) -> dict[str, Any]:
    """Raise the project's auth rate limits by ``factor``, once per incident (the runbook's
    "Temporarily increase rate limits")."""
    async with project.get_client() as client:
        config = await client.get_auth_config(project.project_ref)
        changes = raised_limits(config, factor)
        before = {k: config.get(k) for k in changes}

        async def apply() -> dict[str, Any]:
            after = await client.update_auth_config(project.project_ref, changes)
            return {"before": before, "after": {k: after.get(k) for k in changes}}

        outcome = await ctx.act(
            "raise_auth_rate_limits",
            f"supabase:{project.project_ref}",
            {"set": changes, "before": before},
            apply,
        )
    return {
        "status": outcome.status.value,
        "already_done": outcome.already_done,
        "changes": changes,
    }


def _entrypoint(path: str | None) -> str:
    """The file name the deploy API expects: the last part of the function's entrypoint path."""
    return (path or "index.ts").rstrip("/").rsplit("/", 1)[-1] or "index.ts"


@task(name="snapshot-functions", **VENDOR_TASK)
async def snapshot_functions(
    project: SupabaseProject, ledger_url: str | None = None
) -> dict[str, Any]:
    """Keep each function's current source in the ledger (the watcher runs this every minute), so
    the edge-timeouts playbook can redeploy the version before a bad one."""
    from flows.runtime import get_ledger

    ledger = get_ledger(ledger_url)
    saved = []
    async with project.get_client() as client:
        for fn in await client.list_functions(project.project_ref):
            if fn.status != "ACTIVE":
                continue
            body = await client.get_function_body(project.project_ref, fn.slug)
            if ledger.save_function_snapshot(
                project.project_ref, fn.slug, fn.version, body, _entrypoint(fn.entrypoint_path)
            ):
                saved.append(f"{fn.slug}@{fn.version}")
    return {"saved": saved}


@task(name="redeploy-function", **VENDOR_TASK)
async def redeploy_function(
    ctx: ActionContext,
    project: SupabaseProject,
    slug: str,
    version: int,
    body: bytes,
    entrypoint: str,
) -> dict[str, Any]:
    """Redeploy the kept source of ``slug``'s ``version`` as a new version, once per incident and
    version, then call the function directly to check it answers."""
    ref = project.project_ref

    async def apply() -> dict[str, Any]:
        async with project.get_client() as client:
            fn = await client.deploy_function(
                ref, slug, {entrypoint: body}, entrypoint_path=entrypoint
            )
        return {"slug": slug, "from_source_of": version, "new_version": fn.version}

    outcome = await ctx.act(
        "redeploy_function",
        f"supabase:{ref}:{slug}",
        {"slug": slug, "source_of_version": version, "bytes": len(body)},
        apply,
        key=ctx.key("redeploy_function", f"{ref}:{slug}", str(version)),
    )
    probe = None
    if outcome.status.value == "applied":
        async with project.get_data_client() as data:
            probe = await data.invoke_function(slug, {"runbook_check": True})
    return {
        "status": outcome.status.value,
        "already_done": outcome.already_done,
        "new_version": outcome.result.get("new_version"),
        "probe_ok": None if probe is None else probe.ok,
        "probe_ms": None if probe is None else round(probe.latency_ms, 1),
    }


@task(name="probe-functions", **VENDOR_TASK)
async def probe_functions(project: SupabaseProject) -> dict[str, dict[str, Any]]:
    """Call every active edge function directly with the runbook's test payload ``{"test": true}``,
    concurrently; a timeout or 5xx is a finding, not an error."""
    import asyncio

    async with project.get_client() as client:
        functions = [
            f for f in await client.list_functions(project.project_ref) if f.status == "ACTIVE"
        ]
    async with project.get_data_client() as data:
        probes = await asyncio.gather(
            *(data.invoke_function(f.slug, {"test": True}) for f in functions)
        )
    return {
        f.slug: {
            "ok": p.ok,
            "status_code": p.status_code,
            "latency_ms": round(p.latency_ms, 1),
            "timed_out": p.timed_out,
        }
        for f, p in zip(functions, probes, strict=True)
    }
