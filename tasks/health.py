"""Health checks of the detect phase: the app, Supabase's data plane, Supabase's own service health.

Read-only; a failing check is a finding, not an error. Only "could not ask at all" raises.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from blocks import AppEndpoint, SupabaseProject
from runbook.clients.supabase import ProbeResult
from tasks._retry import VENDOR_TASK


@task(name="check-app-health", **VENDOR_TASK)
async def check_app_health(app: AppEndpoint) -> dict[str, Any]:
    """Probe the app's health URL (the runbook's ``curl https://YOUR_DOMAIN/api/health``).

    Returns:
        {"check": "app", "ok", "status_code", "latency_ms", "status"}
    """
    async with app.get_client() as client:
        result = await client.health()
    return {
        "check": "app",
        "ok": result.ok,
        "status_code": result.status_code,
        "latency_ms": round(result.latency_ms, 1),
        "status": result.status,
    }


def _probe(check: str, result: ProbeResult) -> dict[str, Any]:
    return {
        "check": check,
        "ok": result.ok,
        "status_code": result.status_code,
        "latency_ms": round(result.latency_ms, 1),
    }


@task(name="check-supabase-rest", **VENDOR_TASK)
async def check_supabase_rest(project: SupabaseProject) -> dict[str, Any]:
    """Probe Supabase's REST root (``curl https://YOUR_SUPABASE_URL/rest/v1/``)."""
    async with project.get_data_client() as client:
        return _probe("supabase_rest", await client.rest_root())


@task(name="check-supabase-auth", **VENDOR_TASK)
async def check_supabase_auth(project: SupabaseProject) -> dict[str, Any]:
    """Probe Supabase auth (``curl https://YOUR_SUPABASE_URL/auth/v1/health``)."""
    async with project.get_data_client() as client:
        return _probe("supabase_auth", await client.auth_health())


@task(name="check-supabase-services", **VENDOR_TASK)
async def check_supabase_services(project: SupabaseProject) -> dict[str, Any]:
    """Ask the Management API which of the project's services are unhealthy."""
    async with project.get_client() as client:
        services = await client.health(project.project_ref)
    unhealthy = sorted(s.name for s in services if not s.healthy)
    return {"check": "supabase_services", "ok": not unhealthy, "unhealthy": unhealthy}
