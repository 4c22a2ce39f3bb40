"""The gateway's settings: secrets, limits and batching, from the environment or given directly.

Secrets are ``SecretStr`` and come from the environment (or from a block's fields passed in by the
caller), never from a request. A route whose secret is not configured refuses every request, unless
the gateway runs with ``insecure_no_auth`` (local drills only).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from pydantic import SecretStr

ENV_TOKEN = "RUNBOOK_GATEWAY_TOKEN"
ENV_PAGERDUTY = "RUNBOOK_PAGERDUTY_WEBHOOK_SECRET"
ENV_SENTRY = "RUNBOOK_SENTRY_CLIENT_SECRET"
ENV_GRAFANA = "RUNBOOK_GRAFANA_HMAC_SECRET"
ENV_GRAFANA_TS_HEADER = "RUNBOOK_GRAFANA_TIMESTAMP_HEADER"
DEFAULT_GRAFANA_TS_HEADER = "X-Grafana-Alerting-Timestamp"
MAX_BODY_BYTES = 1024 * 1024


def _secret(env: Mapping[str, str], name: str) -> SecretStr | None:
    value = env.get(name, "").strip()
    return SecretStr(value) if value else None


def _secrets(env: Mapping[str, str], name: str) -> tuple[SecretStr, ...]:
    # a comma-separated list lets an operator hold the old and new secret while rotating
    return tuple(SecretStr(s.strip()) for s in env.get(name, "").split(",") if s.strip())


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway app needs besides the ledger.

    Attributes:
        token: the bearer token (or basic-auth password) for alertmanager, datadog, generic, and
            grafana when no HMAC secret is set.
        pagerduty_secrets: PagerDuty v3 webhook secrets (several while rotating).
        sentry_secret: the Sentry integration's client secret.
        grafana_secret: Grafana's HMAC secret (optional; without it Grafana uses the token).
        grafana_timestamp_header: the header Grafana is configured to send its timestamp in.
        replay_window: how old (or far in the future) a signed Grafana timestamp may be.
        insecure_no_auth: accept unauthenticated requests on every route (local drills only).
        max_body_bytes: larger bodies get 413.
        batch_max: the most alerts in one group commit.
        batch_wait_s: how long a commit waits for company once the ledger is free.
        commit_writers: group commits that may run at once (None: 1 on SQLite, 2 on PostgreSQL).
        flap_window: firing/resolved changes of one key within this window count as flapping.
        flap_changes: this many status changes within the window mark the key as flapping
            (2: it fired again after resolving).
        auto_resolve: the policy's ``auto_resolve_on_alerts_resolved``.
    """

    token: SecretStr | None = None
    pagerduty_secrets: tuple[SecretStr, ...] = ()
    sentry_secret: SecretStr | None = None
    grafana_secret: SecretStr | None = None
    grafana_timestamp_header: str = DEFAULT_GRAFANA_TS_HEADER
    replay_window: timedelta = timedelta(minutes=5)
    insecure_no_auth: bool = False
    max_body_bytes: int = MAX_BODY_BYTES
    batch_max: int = 1024
    batch_wait_s: float = 0.0005
    commit_writers: int | None = None
    flap_window: timedelta = timedelta(minutes=10)
    flap_changes: int = 2
    auto_resolve: bool = False

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        insecure_no_auth: bool = False,
        **overrides: object,
    ) -> GatewayConfig:
        """Read the secrets from the environment variables the gateway documents.

        Args:
            env: the environment (default ``os.environ``).
            insecure_no_auth: accept unauthenticated requests (local drills only).
            overrides: any other field, e.g. ``max_body_bytes=...`` or the policy's values.

        Returns:
            The configuration.
        """
        env = os.environ if env is None else env
        values: dict[str, object] = {
            "token": _secret(env, ENV_TOKEN),
            "pagerduty_secrets": _secrets(env, ENV_PAGERDUTY),
            "sentry_secret": _secret(env, ENV_SENTRY),
            "grafana_secret": _secret(env, ENV_GRAFANA),
            "grafana_timestamp_header": env.get(ENV_GRAFANA_TS_HEADER, DEFAULT_GRAFANA_TS_HEADER),
            "insecure_no_auth": insecure_no_auth,
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def missing_secrets(self) -> list[str]:
        """The environment variables not set, i.e. the routes that will refuse everything."""
        pairs = [
            (ENV_TOKEN, self.token),
            (ENV_PAGERDUTY, self.pagerduty_secrets or None),
            (ENV_SENTRY, self.sentry_secret),
            (ENV_GRAFANA, self.grafana_secret or self.token),
        ]
        return [name for name, value in pairs if value is None]
