"""``runbook gateway``: serve the alert gateway with uvicorn."""

from __future__ import annotations

import dataclasses
import gc
import logging
import ssl
import sys
from pathlib import Path
from typing import Any

import uvicorn

from runbook.errors import ConfigError
from runbook.gateway.app import create_app
from runbook.gateway.config import GatewayConfig
from runbook.gateway.dispatcher import INCIDENT_DEPLOYMENT, prefect_launch
from runbook.ledger import open_ledger

log = logging.getLogger("runbook.gateway")


def uvicorn_config(app: Any, **options: Any) -> uvicorn.Config:
    """uvicorn settings for the gateway: httptools and uvloop, no access log, no proxy headers.

    The access log and the proxy-headers middleware cost a fifth of a request; the gateway keeps
    its own per-request metrics and terminates TLS itself (``tls_options``), so it never sits
    behind a proxy it must trust.

    Args:
        app: the ASGI app.
        options: more ``uvicorn.Config`` arguments (host, port ...).
    """
    return uvicorn.Config(
        app, http="httptools", loop="uvloop", log_level="warning", access_log=False,
        proxy_headers=False, server_header=False, **options,
    )  # fmt: skip


# young-generation collections every this many allocations (Python's default: 700)
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Keep the garbage collector's pauses out of the ack latency; call once, just before serving.

    Full collections walked every object the imports and the app had made (tens of thousands) and
    stopped the event loop for tens of milliseconds: the ingest benchmark's p99 went from ~25 ms
    to ~65 ms. ``gc.freeze`` moves what exists at start out of the collector's sight (it lives as
    long as the process anyway), and a higher young threshold collects less often; what requests
    allocate is still collected.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def tls_options(cert: Path | None, key: Path | None) -> dict[str, str]:
    """uvicorn's TLS arguments for a certificate chain and its private key, checked before serving.

    Args:
        cert: the PEM certificate chain (server certificate first), or None for plain HTTP.
        key: the PEM private key of that certificate (unencrypted), or None for plain HTTP.

    Returns:
        ``ssl_certfile``/``ssl_keyfile`` for ``uvicorn_config``; empty for plain HTTP.

    Raises:
        ConfigError: only one of the two was given, a file is missing, or they do not load as a
            certificate and its key (the message names the files, never their content).
    """
    if cert is None and key is None:
        return {}
    if cert is None or key is None:
        raise ConfigError("give both --tls-cert and --tls-key (or neither, for plain HTTP)")
    for label, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not path.is_file():
            raise ConfigError(f"{label} {path}: no such file")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as error:
        reason = getattr(error, "reason", None) or type(error).__name__
        raise ConfigError(
            f"--tls-cert {cert} and --tls-key {key} do not load as a PEM certificate chain and "
            f"its unencrypted private key ({reason})"
        ) from None
    return {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}


def run(
    host: str,
    port: int,
    insecure_no_auth: bool,
    ledger_url: str | None,
    prefect: bool,
    config: GatewayConfig | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    workers: int = 1,
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
        tls_cert: serve HTTPS with this PEM certificate chain (with ``tls_key``).
        tls_key: the certificate's PEM private key.
        workers: gateway processes on the one port (``runbook.gateway.workers``); 1 serves in
            this process.

    Raises:
        ConfigError: the TLS files are incomplete or do not load, or workers is below 1.
        LedgerUnavailableError: the ledger cannot be reached at start.
    """
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {workers}")
    tls = tls_options(tls_cert, tls_key)
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
            f"runs of the {INCIDENT_DEPLOYMENT} deployment" if prefect else "off (--no-prefect)",
        )
        log.info("listening on %s://%s:%s", "https" if tls else "http", host, port)
        if workers == 1:
            app = create_app(ledger, config, launcher=prefect_launch if prefect else None)
            server = uvicorn.Server(uvicorn_config(app, host=host, port=port, **tls))
            tune_gc()
            server.run()
            return
    # the ledger answered (and is migrated); each worker opens its own
    from runbook.gateway.workers import start_pool, supervise

    # uvicorn's own binding (IPv4/IPv6, SO_REUSEADDR); the workers build their apps themselves
    sock = uvicorn.Config(app="runbook.gateway.workers", host=host, port=port).bind_socket()
    log.info("%d worker processes", workers)
    pool = start_pool(
        sock, workers, ledger_url=ledger_url, config=config, prefect=prefect, uvicorn_options=tls
    )
    supervise(pool)
