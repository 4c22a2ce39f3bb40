"""Authentication failures: what can be checked and changed automatically, and what needs a person.

Pure functions: decode a key's ``exp`` claim (no signature check: we only read when it expires), decide
whether 429s dominate the auth errors, and compute raised rate limits.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime

from pydantic import BaseModel

HUMAN_CHECKLIST = [
    "Verify Supabase dashboard for service status",
    "Check API key expiration; rotate an expired key in the dashboard and redeploy with the new one",
    "Review recent CORS changes",
]
RAISED_LIMITS = (
    "rate_limit_token_refresh",
    "rate_limit_verify",
    "rate_limit_otp",
    "rate_limit_anonymous_users",
)


class KeyFinding(BaseModel):
    """What a key's payload says about its validity (never the key itself)."""

    name: str
    is_jwt: bool
    expires_at: datetime | None = None
    expired: bool = False
    role: str | None = None


def inspect_key(name: str, key: str, now: datetime) -> KeyFinding:
    """Read a Supabase key's ``exp`` and ``role`` claims. A non-JWT key is reported as such."""
    parts = key.split(".")
    if len(parts) != 3:
        return KeyFinding(name=name, is_jwt=False)
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return KeyFinding(name=name, is_jwt=False)
    if not isinstance(claims, dict):
        return KeyFinding(name=name, is_jwt=False)
    exp = claims.get("exp")
    expires = datetime.fromtimestamp(exp, UTC) if isinstance(exp, int | float) else None
    return KeyFinding(
        name=name,
        is_jwt=True,
        expires_at=expires,
        expired=bool(expires and expires <= now),
        role=claims.get("role") if isinstance(claims.get("role"), str) else None,
    )


def rate_limited(auth_summary: dict[str, int]) -> bool:
    """429s are most of the auth failures (then raising the limits is the runbook's mitigation)."""
    limited = auth_summary.get("rate_limited", 0)
    return limited > 0 and limited >= auth_summary.get("errors", 0)


def raised_limits(config: dict[str, object], factor: float = 2.0) -> dict[str, int]:
    """The auth rate limits to set: each relevant one multiplied by ``factor`` (at least +1)."""
    changes = {}
    for key in RAISED_LIMITS:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            changes[key] = max(value + 1, int(value * factor))
    return changes
