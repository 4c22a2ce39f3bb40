"""The Prefect API a drill talks to: the one PREFECT_API_URL names, or a private local server.

Without PREFECT_API_URL a drill starts Prefect's own server in a subprocess (the way Prefect's
ephemeral mode does), on SQLite in ``$RUNBOOK_HOME/drills/prefect.db``, so the drills' flow runs, blocks
and artifacts stay together (``prefect server start`` with that database shows them all in the UI) and
never land in the user's default Prefect database. The first drill creates it (about 20 s).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

STARTUP_TIMEOUT_S = 60


@contextlib.contextmanager
def prefect_api(folder: Path) -> Iterator[str]:
    """Yield the API URL of the Prefect server the drill uses; stop it afterwards if we started it.

    Args:
        folder: where a private server keeps its database (``prefect.db``).
    """
    import prefect.context
    import prefect.settings

    from runbook.prefect_server import private_server, server_settings

    current = prefect.settings.PREFECT_API_URL.value()
    if current:
        yield str(current)
        return
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    folder.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite+aiosqlite:///{folder / 'prefect.db'}"
    with contextlib.ExitStack() as stack:
        stack.enter_context(
            prefect.settings.temporary_settings(
                updates={
                    prefect.settings.PREFECT_SERVER_DATABASE_CONNECTION_URL: db_url,
                    # its shutdown at the end of a drill (or on Ctrl-C) is not the user's concern
                    prefect.settings.PREFECT_SERVER_LOGGING_LEVEL: "CRITICAL",
                    **server_settings(),  # task runs recorded in batches (runbook.prefect_server)
                }
            )
        )
        server = private_server()
        server.start(timeout=STARTUP_TIMEOUT_S)
        stack.callback(server.stop)
        stack.callback(
            _drain_to_api
        )  # runs first: logs and events reach the server before it stops
        stack.enter_context(
            prefect.settings.temporary_settings(
                updates={prefect.settings.PREFECT_API_URL: server.api_url}
            )
        )
        yield server.api_url


def _drain_to_api() -> None:
    """Send the run logs and events still queued in this process (they would be lost, noisily)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    with contextlib.suppress(RuntimeError):  # a worker that never started
        APILogWorker.drain_all(timeout=10)
    with contextlib.suppress(RuntimeError):
        EventsWorker.drain_all(timeout=10)
