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

**Services reading their messages in batches.** With the server's messages in Redis (``--redis``, the
production layout of several API replicas) the event persister, the task-run recorder and the
triggers each read the event stream ONE message at a time by default (``read_batch_size`` 1): for
every event, every one of them asked Redis to reclaim stale messages, read one and acknowledged it,
three round trips per event per service. They now read up to ``READ_BATCH_SIZE`` messages at a time
(what has arrived: a read returns as soon as there is anything, so an event waits no longer), and the
event persister inserts up to ``PERSISTER_BATCH_SIZE`` events per transaction (Prefect's default 20;
it still flushes every 5 s, so an event is stored at most 5 s after it arrived, as one was before
when fewer than 20 came; a storm's ~60 events/s fill a batch in under 2 s). In a 100-incident storm of ``runbook bench scale --redis``
the services process spent 142-168 CPU-s instead of 204 (README, Benchmarks). Each message is still handled and
acknowledged as before, in order; one that fails stays pending and is retried as before.

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
READ_BATCH_SIZE = 100
PERSISTER_BATCH_SIZE = 100

#: environment variable -> value, for a server started as a process (``prefect server start``)
SERVER_DEFAULTS: dict[str, str] = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": str(RECORDER_BATCH_SIZE),
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": str(RECORDER_FLUSH_INTERVAL_S),
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": str(READ_BATCH_SIZE),
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_READ_BATCH_SIZE": str(READ_BATCH_SIZE),
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": str(PERSISTER_BATCH_SIZE),
    "PREFECT_SERVER_SERVICES_TRIGGERS_READ_BATCH_SIZE": str(READ_BATCH_SIZE),
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
