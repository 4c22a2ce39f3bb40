"""Settings for the Prefect servers this project starts (drills, benchmarks) and recommends (README).

**Task-run recorder batching.** A flow run reports its task runs' states as events; the server's task
run recorder turns them into task run rows. Prefect's default writes every event on its own
(``batch_size`` 1): one transaction, and one SQL statement compiled for it, per state change, three
per task. A phase of the incident flow runs 3 to 20 tasks, and the recorder's writes ran on the
server's event loop while the same server answered the flow's own calls (its Running and Completed
states). Written in batches of up to ``RECORDER_BATCH_SIZE`` every ``RECORDER_FLUSH_INTERVAL_S``
seconds instead, the server's CPU for one ``runbook bench overhead`` incident went from 7.1-7.8 s to
6.0-6.6 s (startup, ~4.5 s, included), on the 2-core machine of the README's figures.

The cost: a task run appears in the Prefect UI up to ``RECORDER_FLUSH_INTERVAL_S`` after its state
changed (its times are the events' own, so nothing shown is shifted). Nothing is dropped: a stopping
server writes what it holds, and the recorder retries a failed write.

A value the environment already sets is kept: these are defaults, not overrides.

**A server of our own.** Prefect's ``SubprocessASGIServer()`` is one object per port per process, and
without a port it is the very server Prefect's ephemeral mode and its test harness use: asking for it
while one runs returned that running server (with its database and settings), and stopping "ours"
stopped it. ``private_server`` asks for a free port, so it is always a server of its own.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from runbook.ports import free_port

if TYPE_CHECKING:
    from prefect.server.api.server import SubprocessASGIServer

RECORDER_BATCH_SIZE = 100
RECORDER_FLUSH_INTERVAL_S = 1.0

#: environment variable -> value, for a server started as a process (``prefect server start``)
SERVER_DEFAULTS: dict[str, str] = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": str(RECORDER_BATCH_SIZE),
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": str(RECORDER_FLUSH_INTERVAL_S),
}


def server_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """``SERVER_DEFAULTS`` without the variables ``environ`` (default: ``os.environ``) sets."""
    present = os.environ if environ is None else environ
    return {name: value for name, value in SERVER_DEFAULTS.items() if name not in present}


def server_settings(environ: dict[str, str] | None = None) -> dict[Any, Any]:
    """``server_env`` as ``prefect.settings.temporary_settings`` updates (for Prefect's
    ``SubprocessASGIServer``, which passes the current settings to its process)."""
    import prefect.settings

    return {getattr(prefect.settings, name): value for name, value in server_env(environ).items()}


def private_server() -> SubprocessASGIServer:
    """A Prefect server process of our own (not started yet): on a port free right now, so never
    the one Prefect's ephemeral mode or test harness may already run in this process."""
    from prefect.server.api.server import SubprocessASGIServer

    return SubprocessASGIServer(port=free_port())
