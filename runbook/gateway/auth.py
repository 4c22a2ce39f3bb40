"""Who may call the gateway: one check per sender, secrets from the config, constant-time compares.

- alertmanager, datadog, generic: ``Authorization: Bearer <token>``, or basic auth whose password is
  the token (Alertmanager's ``basic_auth``; the user name is not checked).
- grafana: ``X-Grafana-Alerting-Signature`` = hex HMAC-SHA256(secret, [ts ":"] body) when an HMAC
  secret is set (the timestamp, if sent, must be within the replay window), else the token.
- pagerduty: ``X-PagerDuty-Signature: v1=<hex>[,v1=<hex>]``; any signature by any configured secret.
- sentry: ``Sentry-Hook-Signature`` = hex HMAC-SHA256(client secret, body).

Missing credentials are 401, wrong ones 403. Messages never echo a credential.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Mapping
from datetime import datetime

from pydantic import SecretStr

from runbook.gateway.config import ENV_GRAFANA, ENV_PAGERDUTY, ENV_SENTRY, ENV_TOKEN, GatewayConfig


class AuthFailure(Exception):
    """The request is not from who it should be. ``status`` is 401 (no credentials) or 403."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def sign(secret: str, body: bytes, timestamp: str | None = None) -> str:
    """Hex HMAC-SHA256 of ``[timestamp ":"] body``, as PagerDuty, Sentry and Grafana sign.

    Args:
        secret: the shared secret.
        body: the raw body.
        timestamp: Grafana's optional timestamp, prefixed to the body.

    Returns:
        Lowercase hex digest.
    """
    message = body if timestamp is None else timestamp.encode() + b":" + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _matches(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.strip().lower().encode("utf-8", "replace"))


def _need(secret: SecretStr | None, env: str) -> str:
    if secret is None:
        raise AuthFailure(403, f"this route is not configured: set {env} on the gateway")
    return secret.get_secret_value()


def check_token(
    headers: Mapping[str, str], body: bytes, config: GatewayConfig, now: datetime
) -> None:
    """Bearer token, or basic auth whose password is the token."""
    token = _need(config.token, ENV_TOKEN)
    given = headers.get("authorization", "")
    if not given:
        raise AuthFailure(401, "missing Authorization header (Bearer token or basic auth)")
    scheme, _, value = given.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        candidate = value.strip()
    elif scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as error:
            raise AuthFailure(401, "malformed basic auth credentials") from error
        candidate = decoded.partition(":")[2]
    else:
        raise AuthFailure(401, "Authorization must use the Bearer or Basic scheme")
    if not hmac.compare_digest(token.encode(), candidate.encode("utf-8", "replace")):
        raise AuthFailure(403, "invalid credentials")


def check_pagerduty(
    headers: Mapping[str, str], body: bytes, config: GatewayConfig, now: datetime
) -> None:
    """Any ``v1=`` signature in ``X-PagerDuty-Signature`` by any configured secret."""
    if not config.pagerduty_secrets:
        _need(None, ENV_PAGERDUTY)
    given = headers.get("x-pagerduty-signature", "")
    if not given:
        raise AuthFailure(401, "missing X-PagerDuty-Signature header")
    signatures = [part.strip()[3:] for part in given.split(",") if part.strip().startswith("v1=")]
    if not signatures:
        raise AuthFailure(401, "X-PagerDuty-Signature has no v1= signature")
    expected = [sign(s.get_secret_value(), body) for s in config.pagerduty_secrets]
    # compare every pair (no early exit) so timing says nothing about which one matched
    ok = False
    for candidate in signatures:
        for digest in expected:
            ok |= _matches(digest, candidate)
    if not ok:
        raise AuthFailure(403, "X-PagerDuty-Signature does not match the webhook secret")


def check_sentry(
    headers: Mapping[str, str], body: bytes, config: GatewayConfig, now: datetime
) -> None:
    """``Sentry-Hook-Signature`` = HMAC-SHA256(client secret, body)."""
    secret = _need(config.sentry_secret, ENV_SENTRY)
    given = headers.get("sentry-hook-signature", "")
    if not given:
        raise AuthFailure(401, "missing Sentry-Hook-Signature header")
    if not _matches(sign(secret, body), given):
        raise AuthFailure(403, "Sentry-Hook-Signature does not match the client secret")


def check_grafana(
    headers: Mapping[str, str], body: bytes, config: GatewayConfig, now: datetime
) -> None:
    """Grafana's HMAC (with the optional timestamp and replay window), else the token."""
    if config.grafana_secret is None:
        if config.token is None:
            _need(None, f"{ENV_GRAFANA} or {ENV_TOKEN}")
        check_token(headers, body, config, now)
        return
    given = headers.get("x-grafana-alerting-signature", "")
    if not given:
        raise AuthFailure(401, "missing X-Grafana-Alerting-Signature header")
    stamp = headers.get(config.grafana_timestamp_header.lower(), "") or None
    if stamp is not None:
        try:
            sent = float(stamp)
        except ValueError as error:
            raise AuthFailure(
                401, f"{config.grafana_timestamp_header} must be Unix seconds"
            ) from error
        age = abs(now.timestamp() - sent)
        if not age <= config.replay_window.total_seconds():
            raise AuthFailure(
                403, f"the signed timestamp is outside the {config.replay_window} replay window"
            )
    if not _matches(sign(config.grafana_secret.get_secret_value(), body, stamp), given):
        raise AuthFailure(403, "X-Grafana-Alerting-Signature does not match the HMAC secret")


Check = Callable[[Mapping[str, str], bytes, GatewayConfig, datetime], None]

CHECKS: dict[str, Check] = {
    "alertmanager": check_token,
    "datadog": check_token,
    "generic": check_token,
    "grafana": check_grafana,
    "pagerduty": check_pagerduty,
    "sentry": check_sentry,
}


def authenticate(
    source: str, headers: Mapping[str, str], body: bytes, config: GatewayConfig, now: datetime
) -> None:
    """Check a request's credentials for its route.

    Args:
        source: the route's sender.
        headers: the request headers, lower-case names (Starlette's ``Headers`` work).
        body: the raw body, exactly as received.
        config: the gateway's secrets.
        now: the current time, for Grafana's replay window.

    Raises:
        AuthFailure: 401 without credentials, 403 with wrong ones or an unconfigured route.
    """
    if config.insecure_no_auth:
        return
    CHECKS[source](headers, body, config, now)
