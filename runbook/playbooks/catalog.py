"""The runbook's scenarios: which can be mitigated automatically, and the human checklist for each.

The checklists are the runbook's own "Mitigation" lists, shown to the person the incident is handed
to when no automated playbook applies (or it could not finish).
"""

from __future__ import annotations

AUTOMATED = {
    "bad-deploy": "roll production back to the last good deployment",
    "high-error-rate": "roll back when the rise followed a deploy; otherwise hand over the error summary",
    "auth-failure": "check key expiry; raise the auth rate limits when 429s dominate",
    "db-degradation": "stop long-running backends (never protected ones), vacuum bloated tables",
    "edge-timeouts": "redeploy the last good version of each timing-out function, then call it",
}

CHECKLISTS: dict[str, list[str]] = {
    "bad-deploy": [
        "Rollback recent deployment (vercel rollback <DEPLOYMENT_URL>)",
        "Or redeploy a stable commit (git revert HEAD; git push origin main)",
    ],
    "high-error-rate": [
        "Rollback recent deployment",
        "Add error handling",
        "Implement fallbacks",
        "Fix client-side bugs",
    ],
    "auth-failure": [
        "Verify Supabase dashboard for service status",
        "Check API key expiration",
        "Review recent CORS changes",
        "Temporarily increase rate limits",
    ],
    "db-degradation": [
        "Kill long-running queries",
        "Add missing indexes",
        "Run VACUUM ANALYZE",
        "Increase connection pool size",
    ],
    "edge-timeouts": [
        "Increase function timeout (max 60s)",
        "Implement circuit breakers",
        "Add request timeout limits",
        "Optimize database queries",
    ],
}


def checklist(scenario: str | None) -> list[str]:
    """The human checklist for a scenario (the generic mitigation steps when it is unknown)."""
    return CHECKLISTS.get(
        scenario or "",
        [
            "Apply immediate fix: rollback, restart, or patch",
            "Verify mitigation",
            "Monitor for recurrence",
        ],
    )
