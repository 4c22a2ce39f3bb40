"""The GatewaySecrets block: its secrets win, the environment fills the rest, nothing leaks."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from blocks.gateway import GatewaySecrets

ENV = {
    "RUNBOOK_GATEWAY_TOKEN": "env-token",
    "RUNBOOK_SENTRY_CLIENT_SECRET": "env-sentry",
    "RUNBOOK_PAGERDUTY_WEBHOOK_SECRET": "env-pd",
}


def test_block_secrets_win_and_the_environment_fills_the_rest() -> None:
    """Fields set on the block replace the environment's; unset ones come from the environment."""
    block = GatewaySecrets(
        token=SecretStr("block-token"),
        pagerduty_webhook_secrets=[SecretStr("pd-new"), SecretStr("pd-old")],
        grafana_timestamp_header="X-Ts",
    )
    config = block.gateway_config(ENV, max_body_bytes=2048)
    assert config.token is not None and config.token.get_secret_value() == "block-token"
    assert [s.get_secret_value() for s in config.pagerduty_secrets] == ["pd-new", "pd-old"]
    assert config.sentry_secret is not None
    assert config.sentry_secret.get_secret_value() == "env-sentry"
    assert config.grafana_secret is None and config.grafana_timestamp_header == "X-Ts"
    assert config.max_body_bytes == 2048


def test_an_empty_block_is_the_environment() -> None:
    """A block with nothing set gives exactly the environment's configuration."""
    from runbook.gateway.config import GatewayConfig

    assert GatewaySecrets().gateway_config(ENV) == GatewayConfig.from_env(ENV)


def test_secrets_never_show_and_blank_ones_are_refused() -> None:
    """The block's repr hides its secrets; a blank secret is refused with a reason."""
    block = GatewaySecrets(token=SecretStr("sentinel-token-1"), sentry_client_secret=SecretStr("s"))
    assert "sentinel-token-1" not in repr(block) and "sentinel-token-1" not in str(
        block.gateway_config({})
    )
    with pytest.raises(ValidationError, match="blank"):
        GatewaySecrets(token=SecretStr("  "))
