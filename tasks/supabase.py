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
