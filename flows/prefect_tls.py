"""Prefect's API clients in our processes share one verifying TLS context per CA bundle.

Prefect builds a new ``ssl.SSLContext`` for every API client it makes (``PrefectClient``,
``SyncPrefectClient``, the events websocket, the API version check), loading the whole CA bundle each
time: about 40 ms of CPU here (OpenSSL 3), even when the API is plain ``http://``. A served run made
eight of them, a phase subflow's artifact one more, on the path from an alert to the incident's first
step (counted by wrapping ``ssl.create_default_context`` during ``runbook bench overhead``: 17 per
incident, 0.55 s of CPU).

``install()`` gives those Prefect modules an ``ssl`` whose ``create_default_context`` returns one
shared context for each CA file, the same context Prefect would have built (same purpose, same file,
nothing changed on it after). Only calls that name a CA file (Prefect's verifying path) are shared:
the insecure path (``PREFECT_API_TLS_INSECURE_SKIP_VERIFY``) calls it without one and then switches
verification off on the result, so it keeps getting a context of its own. A CA file that changes on
disk (size or modification time) is loaded again. Prefect's clients never change a context they were
given, and httpcore only sets the ALPN protocols on it, the same for every Prefect API client of a
process (``PREFECT_API_ENABLE_HTTP2``).

Installed when the ``flows`` package is imported (every flow run, served or run by a worker, imports
it), and again by ``runbook serve``'s forkserver preload, which also builds the context once before
forking so that no served run loads the bundle at all.
"""

from __future__ import annotations

import os
import ssl
import threading
import types
from typing import Any

#: the Prefect modules that build an API client's TLS context with ``ssl.create_default_context``
PREFECT_MODULES = (
    "prefect.client.orchestration",
    "prefect._internal.websockets",
    "prefect._internal.version_checking",
)

_contexts: dict[tuple[str, int, int], ssl.SSLContext] = {}
_lock = threading.Lock()


def _bundle_key(cafile: str) -> tuple[str, int, int] | None:
    try:
        st = os.stat(cafile)
    except OSError:
        return None  # let ssl raise its own error for a missing file
    return (os.path.realpath(cafile), st.st_size, st.st_mtime_ns)


def create_default_context(
    purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH,
    *,
    cafile: str | None = None,
    capath: str | None = None,
    cadata: Any = None,
) -> ssl.SSLContext:
    """``ssl.create_default_context``, with the context of a verifying client shared per CA file."""
    key = _bundle_key(cafile) if cafile else None
    if (
        key is None
        or capath is not None
        or cadata is not None
        or purpose != ssl.Purpose.SERVER_AUTH
    ):
        return ssl.create_default_context(purpose, cafile=cafile, capath=capath, cadata=cadata)
    with _lock:
        ctx = _contexts.get(key)
        if ctx is None:
            ctx = _contexts[key] = ssl.create_default_context(purpose, cafile=cafile)
        return ctx


class _SharedSSL(types.ModuleType):
    """The ``ssl`` module, but for ``create_default_context``."""

    def __init__(self) -> None:
        super().__init__("ssl")
        self.create_default_context = create_default_context

    def __getattr__(self, name: str) -> Any:
        return getattr(ssl, name)


_shared_ssl = _SharedSSL()


def install() -> None:
    """Point Prefect's client modules at the sharing ``ssl`` (idempotent)."""
    import importlib

    for name in PREFECT_MODULES:
        module = importlib.import_module(name)
        if getattr(module, "ssl", None) is ssl:
            module.ssl = _shared_ssl  # type: ignore[attr-defined]


def warm() -> ssl.SSLContext:
    """Build the context Prefect's verifying clients will ask for (before a forkserver forks)."""
    import certifi
    from prefect.settings import PREFECT_API_SSL_CERT_FILE

    return create_default_context(cafile=PREFECT_API_SSL_CERT_FILE.value() or certifi.where())


def installed() -> bool:
    """Whether every Prefect client module uses the sharing ``ssl``."""
    import sys

    return all(
        getattr(sys.modules.get(name), "ssl", None) is _shared_ssl for name in PREFECT_MODULES
    )
