"""Prefect block: the alert gateway's secrets (bearer token, PagerDuty, Sentry and Grafana signing)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from runbook.gateway.config import GatewayConfig


class GatewaySecrets(Block):
    """The secrets the alert gateway checks senders against; unset fields fall back to the
    environment variables (``RUNBOOK_GATEWAY_TOKEN`` ...), so both ways keep working.

    ``runbook gateway --secrets-block NAME`` serves the gateway with a stored block's secrets.

    Example:
        Build the gateway's configuration from a stored block:
        ```python
        from blocks.gateway import GatewaySecrets

        gateway_secrets = GatewaySecrets.load("BLOCK_NAME")
        config = gateway_secrets.gateway_config()
        ```
    """

    _block_type_name = "Runbook Gateway Secrets"
    _block_type_slug = "runbook-gateway-secrets"
    _logo_url = "https://prometheus.io/assets/prometheus_logo_grey.svg"  # type: ignore[assignment]
    _documentation_url = "https://prometheus.io/docs/alerting/latest/configuration/#webhook_config"  # type: ignore[assignment]
    _description = (
        "Secrets of the runbook alert gateway: the bearer token for Alertmanager, Datadog and "
        "generic senders, and the PagerDuty, Sentry and Grafana signing secrets."
    )

    token: SecretStr | None = Field(
        default=None,
        description="Bearer token (or basic-auth password) for Alertmanager, Datadog, generic "
        "and, without an HMAC secret, Grafana.",
    )
    pagerduty_webhook_secrets: list[SecretStr] = Field(
        default_factory=list,
        description="PagerDuty v3 webhook secrets; hold the old and the new one while rotating.",
    )
    sentry_client_secret: SecretStr | None = Field(
        default=None, description="The Sentry integration's client secret (Sentry-Hook-Signature)."
    )
    grafana_hmac_secret: SecretStr | None = Field(
        default=None, description="Grafana's webhook HMAC secret (X-Grafana-Alerting-Signature)."
    )
    grafana_timestamp_header: str | None = Field(
        default=None,
        description="The header Grafana sends its signing timestamp in "
        "(default X-Grafana-Alerting-Timestamp).",
    )

    @field_validator("token", "sentry_client_secret", "grafana_hmac_secret")
    @classmethod
    def _not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("the secret is blank: leave the field empty or give the secret")
        return value

    def gateway_config(
        self, env: Mapping[str, str] | None = None, **overrides: Any
    ) -> GatewayConfig:
        """The gateway's configuration: this block's secrets, the environment's for the rest.

        Args:
            env: the environment (default ``os.environ``).
            overrides: other GatewayConfig fields (``insecure_no_auth``, limits ...).

        Returns:
            The configuration.
        """
        mine: dict[str, Any] = {}
        if self.token is not None:
            mine["token"] = self.token
        if self.pagerduty_webhook_secrets:
            mine["pagerduty_secrets"] = tuple(self.pagerduty_webhook_secrets)
        if self.sentry_client_secret is not None:
            mine["sentry_secret"] = self.sentry_client_secret
        if self.grafana_hmac_secret is not None:
            mine["grafana_secret"] = self.grafana_hmac_secret
        if self.grafana_timestamp_header:
            mine["grafana_timestamp_header"] = self.grafana_timestamp_header
        base = GatewayConfig.from_env(os.environ if env is None else env)
        return dataclasses.replace(base, **mine, **overrides)
