"""``runbook gateway``: serve the alert gateway with uvicorn."""

from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Any

import uvicorn

from runbook.gateway.app import create_app
from runbook.gateway.config import GatewayConfig
from runbook.gateway.dispatcher import INCIDENT_DEPLOYMENT, prefect_launch
from runbook.ledger import open_ledger

log = logging.getLogger("runbook.gateway")


def uvicorn_config(app: Any, **options: Any) -> uvicorn.Config:
    """uvicorn settings for the gateway: httptools and uvloop, no access log, no proxy headers.

    The access log and the proxy-headers middleware cost a fifth of a request; the gateway keeps
    its own per-request metrics and never sits behind a proxy it must trust.

    Args:
        app: the ASGI app.
        options: more ``uvicorn.Config`` arguments (host, port ...).
    """
    return uvicorn.Config(
        app, http="httptools", loop="uvloop", log_level="warning", access_log=False,
        proxy_headers=False, server_header=False, **options,
    )  # fmt: skip


def run(
    host: str,
    port: int,
    insecure_no_auth: bool,
    ledger_url: str | None,
    prefect: bool,
    config: GatewayConfig | None = None,
) -> None:
    """Serve the gateway until interrupted.

    Args:
        host: the interface to listen on.
        port: the TCP port.
        insecure_no_auth: accept unauthenticated requests on every route (local drills only).
        ledger_url: the ledger (default ``RUNBOOK_LEDGER_URL``, else ``$RUNBOOK_HOME/ledger.db``).
        prefect: launch each opened incident's flow run through Prefect; False only stores.
        config: the secrets and limits (default: from the environment), e.g. from a
            ``GatewaySecrets`` block; ``insecure_no_auth`` is applied to it.

    Raises:
        LedgerUnavailableError: the ledger cannot be reached at start.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if config is None:
        config = GatewayConfig.from_env(insecure_no_auth=insecure_no_auth)
    elif insecure_no_auth:
        config = dataclasses.replace(config, insecure_no_auth=True)
    if insecure_no_auth:
        print(
            "WARNING: --insecure-no-auth: the gateway accepts UNAUTHENTICATED alerts on every "
            "route. Use this for local drills only, never on a reachable interface.",
            file=sys.stderr,
        )
    else:
        for name in config.missing_secrets():
            log.warning("%s is not set: the routes that need it refuse every request", name)
    with open_ledger(ledger_url) as ledger:
        log.info("ledger: %s", ledger.describe())
        log.info(
            "incident launches: %s",
            f"run_deployment({INCIDENT_DEPLOYMENT!r})" if prefect else "off (--no-prefect)",
        )
        app = create_app(ledger, config, launcher=prefect_launch if prefect else None)
        uvicorn.Server(uvicorn_config(app, host=host, port=port)).run()
