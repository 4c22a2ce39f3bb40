"""``runbook gateway --workers N``: N gateway processes serving one listening socket.

One gateway process is bound by Python's GIL: its event loop and its commit threads take turns, so
on PostgreSQL (where a commit is several round trips) it leaves cores idle. Several worker processes
accept on the same socket (the kernel hands each connection to one of them) and each runs the whole
gateway: parsing, its own group commit and ledger pool, its own outbox dispatcher (claims are safe
across processes and launches are idempotent by incident). What must be one per machine is shared:

- the flap state (status changes per key, the incidents auto-resolved per key) lives in a
  ``SharedFlapTracker`` in shared memory, so a key flapping across workers is still seen flapping;
- the metrics are counted in files under a private ``PROMETHEUS_MULTIPROC_DIR`` and summed by
  whichever worker answers ``/metrics``.

The supervisor (the process that ran ``runbook gateway``) binds the socket, starts the workers
(``spawn``: a fresh interpreter each, nothing inherited but the socket, the settings and the shared
state's handle), restarts a worker that dies, and on SIGINT/SIGTERM stops them all gracefully
(each finishes its queued commits first).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

from runbook.errors import ConfigError
from runbook.gateway.config import GatewayConfig
from runbook.gateway.flapshare import FlapHandle, SharedFlapTracker
from runbook.gateway.metrics import MULTIPROC_ENV

log = logging.getLogger("runbook.gateway")
STOP_GRACE_S = 30.0  # how long a worker may take to finish its commits when asked to stop
POLL_S = 0.5
ORPHAN_CHECK_S = 1.0


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, picklable (it crosses to the spawned process, never the
    environment or a log).

    Attributes:
        ledger_url: the ledger (None: ``RUNBOOK_LEDGER_URL`` or ``$RUNBOOK_HOME``, inherited).
        config: secrets and limits.
        prefect: launch incident flow runs (False: store only).
        uvicorn_options: extra ``uvicorn.Config`` arguments (TLS files).
        flaps: the shared flap state's handle (None: a lone process with its own tracker).
    """

    ledger_url: str | None
    config: GatewayConfig
    prefect: bool
    uvicorn_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    flaps: FlapHandle | None = None


def serve_worker(spec: WorkerSpec, sock: socket.socket) -> None:
    """A gateway process on an already-bound socket until told to stop (a pool's worker, or the
    ingest bench's lone gateway)."""
    import uvicorn

    from runbook.gateway.app import create_app
    from runbook.gateway.dispatcher import prefect_launch
    from runbook.gateway.server import tune_gc, uvicorn_config
    from runbook.ledger import open_ledger

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    flaps = SharedFlapTracker.attach(spec.flaps) if spec.flaps is not None else None
    try:
        with open_ledger(spec.ledger_url) as ledger:
            launcher = prefect_launch if spec.prefect else None
            app = create_app(ledger, spec.config, launcher=launcher, flaps=flaps)
            server = uvicorn.Server(uvicorn_config(app, **spec.uvicorn_options))
            _stop_when_orphaned(server)
            tune_gc()
            server.run(sockets=[sock])
    finally:
        if flaps is not None:
            flaps.close()


def _stop_when_orphaned(server: Any) -> None:
    """Stop this worker gracefully if its supervisor goes away without stopping it (killed)."""
    parent = os.getppid()

    def watch() -> None:
        while not server.should_exit:
            if os.getppid() != parent:
                log.warning("the gateway supervisor is gone; this worker stops")
                server.should_exit = True
                return
            time.sleep(ORPHAN_CHECK_S)

    threading.Thread(target=watch, name="gateway-orphan-watch", daemon=True).start()


@dataclass
class WorkerPool:
    """The running workers, their shared state and their metrics folder (the supervisor's side)."""

    sock: socket.socket
    spec: WorkerSpec
    flaps: SharedFlapTracker
    metrics_dir: str
    procs: list[BaseProcess] = dataclasses.field(default_factory=list)

    def start(self, count: int) -> None:
        """Start ``count`` more workers (with the metrics folder in their environment only)."""
        ctx = mp.get_context("spawn")
        previous = os.environ.get(MULTIPROC_ENV)
        os.environ[MULTIPROC_ENV] = self.metrics_dir  # read by a worker's first prometheus import
        try:
            for _ in range(count):
                proc = ctx.Process(target=serve_worker, args=(self.spec, self.sock), daemon=False)
                proc.start()
                self.procs.append(proc)
        finally:
            if previous is None:
                del os.environ[MULTIPROC_ENV]
            else:
                os.environ[MULTIPROC_ENV] = previous

    def replace_dead(self) -> int:
        """Restart every worker that exited; returns how many."""
        dead = [p for p in self.procs if not p.is_alive()]
        for proc in dead:
            log.warning("gateway worker %s exited (code %s); starting another", proc.pid,
                        proc.exitcode)  # fmt: skip
            _forget_metrics(self.metrics_dir, proc.pid)
            self.procs.remove(proc)
            if proc.exitcode is not None and proc.exitcode < 0:
                # killed by a signal: maybe inside the flap table's lock
                _free_orphaned_lock(self.flaps.handle())
        self.start(len(dead))
        return len(dead)

    def stop(self) -> None:
        """Ask every worker to stop (SIGTERM: it commits what is queued), kill laggards, clean up."""
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                log.warning("gateway worker %s did not stop in %.0f s; killing it", proc.pid,
                            STOP_GRACE_S)  # fmt: skip
                proc.kill()
                proc.join(5)
        self.flaps.close()
        self.flaps.unlink()
        shutil.rmtree(self.metrics_dir, ignore_errors=True)


def start_pool(
    sock: socket.socket,
    workers: int,
    *,
    ledger_url: str | None,
    config: GatewayConfig,
    prefect: bool,
    uvicorn_options: dict[str, Any] | None = None,
) -> WorkerPool:
    """Create the shared state and the metrics folder, then start ``workers`` workers on ``sock``.

    Args:
        sock: the bound listening socket.
        workers: how many processes (at least 1).
        ledger_url: the ledger (None: from the inherited environment).
        config: secrets and limits (``commit_writers`` None becomes 1 per worker).
        prefect: launch incident flow runs.
        uvicorn_options: extra ``uvicorn.Config`` arguments (TLS files).

    Returns:
        The pool; call ``stop()`` when done.

    Raises:
        ValueError: workers is below 1.
        ConfigError: the config's ``flap_changes`` is more than the shared table keeps (8).
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if config.commit_writers is None:
        # measured on 2 cores, PostgreSQL: 2 workers x 1 writer beat 2 x 2 (6,200-6,900 vs ~5,500/s)
        config = dataclasses.replace(config, commit_writers=1)
    try:
        flaps = SharedFlapTracker.create(config.flap_window, config.flap_changes)
    except ValueError as error:  # flap_changes past what a shared slot keeps
        raise ConfigError(
            f"--workers: the shared flap table refuses this setting: {error}"
        ) from None
    metrics_dir = tempfile.mkdtemp(prefix="runbook-gateway-metrics-")
    spec = WorkerSpec(ledger_url, config, prefect, uvicorn_options or {}, flaps.handle())
    pool = WorkerPool(sock, spec, flaps, metrics_dir)
    pool.start(workers)
    return pool


def supervise(pool: WorkerPool) -> None:
    """Keep the workers running until SIGINT or SIGTERM, then stop them."""
    stopping = False

    def ask_stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, ask_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stopping:
            time.sleep(POLL_S)
            if not stopping:
                pool.replace_dead()
    finally:
        log.info("stopping %d gateway workers", len(pool.procs))
        pool.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _forget_metrics(metrics_dir: str, pid: int | None) -> None:
    """Drop a dead worker's live gauges (its counters stay: what it counted happened)."""
    if pid is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, metrics_dir)


def _free_orphaned_lock(flaps: FlapHandle) -> None:
    """Release the flap table's lock if a killed worker left it held.

    The table's lock is held for microseconds per call; if nobody can take it for a whole second,
    the process that held it is gone, and every worker would wait on it forever. (A
    ``multiprocessing.Lock`` may be released by another process.)
    """
    for _ in range(10):
        if flaps.lock.acquire(timeout=0.1):
            flaps.lock.release()
            return
    log.warning("the flap table's lock was left held by a killed worker; releasing it")
    flaps.lock.release()
