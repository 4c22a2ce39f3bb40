"""The fork server behind ``runbook worker``: flow-run processes forked from a preloaded interpreter.

``python -m flows.forkserver --socket PATH`` imports prefect and the flows once (what ``runbook
serve``'s forkserver preloads: ``flows.serve.FORKSERVER_PRELOAD``), then listens on a Unix socket
(mode 0600: only its user may connect). For each ``runbook.forkrun`` client it forks a child that
takes the client's stdin/stdout/stderr, environment, working directory and arguments and runs
``prefect.engine`` as ``python -m prefect.engine`` would (at the niceness ``$RUNBOOK_RUN_NICE`` of that
environment asks: ``runbook.forkrun.lower_priority``), under a Prefect settings context rebuilt
from that environment (as Prefect's own subprocess starter does); the server then relays the
client's signals to the child and, when the child ends, its exit status to the client.

One thread, one ``selectors`` loop: the listening socket, every client connection and a wake-up
pipe for SIGCHLD. Nothing here starts a thread or opens a connection before forking. A client whose
connection closes before its child ended (it was killed) gets its child a SIGTERM, so Prefect's
engine marks the run as it does for a terminated process; on Linux a child whose server dies gets a
SIGTERM too (``PR_SET_PDEATHSIG``), and its client reports the run as failed. SIGTERM or SIGINT to the server stops
accepting, sends SIGTERM to the children still running, waits up to ``--grace`` seconds for them,
then exits.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runbook.forkrun import FORWARDED_SIGNALS, encode, lower_priority, read_request

ENGINE_MODULE = "prefect.engine"


@dataclass
class _Client:
    conn: socket.socket
    pid: int | None = None


class ForkServer:
    """Fork a child per client request and relay signals and exit statuses (see the module doc)."""

    def __init__(
        self, path: str | Path, module: str = ENGINE_MODULE, grace_s: float = 30.0
    ) -> None:
        self.path = str(path)
        self.module = module
        self.grace_s = grace_s
        self.sel = selectors.DefaultSelector()
        self.clients: dict[int, _Client] = {}  # by connection fd
        self.children: dict[int, _Client] = {}  # by child pid
        self.stopping = False
        self.listener: socket.socket | None = None
        self._wake_r, self._wake_w = os.pipe()

    # --- setup ---------------------------------------------------------------------------------
    def listen(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.listener.bind(self.path)
        finally:
            os.umask(old)
        self.listener.listen(128)
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, "accept")
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the loop through the pipe
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)

    def _stop(self, signum: int, _frame: object) -> None:
        self.stopping = True

    # --- the loop ------------------------------------------------------------------------------
    def serve_forever(self) -> None:
        """Serve until SIGTERM/SIGINT, then end the children (``grace_s``) and return."""
        try:
            while not self.stopping:
                for key, _ in self.sel.select(timeout=1.0):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._wake_r, 4096)
                    else:
                        self._readable(key.data)
                self._reap()
        finally:
            self._shutdown()

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        conn.settimeout(10)  # the request follows the connect at once
        client = _Client(conn)
        try:
            request, fds = read_request(conn)
        except (OSError, ValueError) as exc:
            with contextlib.suppress(OSError):
                conn.sendall(encode({"error": str(exc)}))
            conn.close()
            return
        try:
            client.pid = self._fork(request, fds, conn)
        except OSError as exc:
            # no fork (out of processes or memory): this run fails, not the server
            with contextlib.suppress(OSError):
                conn.sendall(encode({"error": f"fork failed: {exc}"}))
            conn.close()
            return
        finally:
            for fd in fds:
                os.close(fd)
        conn.setblocking(False)
        self.clients[conn.fileno()] = client
        self.children[client.pid] = client
        self.sel.register(conn, selectors.EVENT_READ, client)

    def _readable(self, client: _Client) -> None:
        try:
            data = client.conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the client is gone: its child must not outlive it
            if client.pid is not None and client.pid in self.children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(client.pid, signal.SIGTERM)
            self._forget(client)
            return
        for line in data.splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                signum = int(json.loads(line)["signal"])
                if client.pid is not None and signum in FORWARDED_SIGNALS:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(client.pid, signum)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:  # none left to wait for: whatever is still listed is gone
                for gone in list(self.children.values()):
                    self._report_exit(gone, 1)
                self.children.clear()
                return
            if pid == 0:
                return
            client = self.children.pop(pid, None)
            if client is not None:
                self._report_exit(client, os.waitstatus_to_exitcode(status))

    def _report_exit(self, client: _Client, code: int) -> None:
        """Tell a client (still connected) its child's exit code, and let it go."""
        if client.conn.fileno() != -1:
            with contextlib.suppress(OSError):
                client.conn.setblocking(True)
                client.conn.sendall(encode({"exit": code}))
            self._forget(client)

    def _forget(self, client: _Client) -> None:
        if client.conn.fileno() != -1:
            self.clients.pop(client.conn.fileno(), None)
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(client.conn)
            client.conn.close()

    def _shutdown(self) -> None:
        if self.listener is not None:
            self.listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        while self.children and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while self.children:
            self._reap()
            time.sleep(0.01)
        for client in list(self.clients.values()):
            self._forget(client)

    # --- the child -----------------------------------------------------------------------------
    def _fork(self, request: dict[str, Any], fds: list[int], conn: socket.socket) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            self._become_child(request, fds, conn)
            code = run_engine(self.module, list(request["argv"]))
        except BaseException as exc:  # noqa: BLE001 - the child must end here, whatever happened
            with contextlib.suppress(Exception):
                print(f"flows.forkserver child: {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def _become_child(self, request: dict[str, Any], fds: list[int], conn: socket.socket) -> None:
        _die_with_parent()
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        self.sel.close()
        for other in [self.listener, conn, *(c.conn for c in self.clients.values())]:
            if other is not None:
                other.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.chdir(request["cwd"])
        sys.path[0] = request["cwd"]  # as `python -m` puts the working directory first
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in request["env"].items()})
        signal.signal(signal.SIGINT, signal.default_int_handler)
        lower_priority(os.environ)  # the server keeps its own priority: only the run yields


def _die_with_parent() -> None:
    """Linux: SIGTERM this child if the server dies (its client then reports the run as failed),
    instead of leaving a run nobody waits for."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def run_engine(module: str, argv: list[str]) -> int:
    """Run ``module`` as ``python -m module argv...`` would, under settings read from this
    process's environment now; its exit code. The interpreter's exit handlers run before it
    returns (Prefect sends a run's last logs and events from them)."""
    import runpy

    from prefect.context import SettingsContext, get_settings_context
    from prefect.settings import Settings

    sys.argv = [module, *argv]
    # as in a fresh `python -m`, the module runs as __main__ without having been imported (a
    # preloaded copy would make runpy warn in every run's output)
    sys.modules.pop(module, None)
    code: int = 0
    try:
        with SettingsContext(profile=get_settings_context().profile, settings=Settings()):
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        atexit._run_exitfuncs()
    return code


def preload() -> None:
    """Import what every flow run needs, as ``runbook serve``'s forkserver does."""
    from flows.serve import FORKSERVER_PRELOAD

    for name in FORKSERVER_PRELOAD:
        if name != "runbook.cli":  # the client is runbook.forkrun, not the CLI
            importlib.import_module(name)  # flows._preload, last, freezes the heap it leaves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.forkserver", description=__doc__)
    parser.add_argument("--socket", required=True, help="the Unix socket to listen on")
    parser.add_argument("--module", default=ENGINE_MODULE, help="what each child runs")
    parser.add_argument("--grace", type=float, default=30.0, help="seconds children get at exit")
    parser.add_argument("--no-preload", action="store_true", help="skip the imports (tests)")
    args = parser.parse_args(argv)
    if not args.no_preload:
        preload()
    server = ForkServer(args.socket, args.module, args.grace)
    server.listen()
    print(f"flows.forkserver: ready on {args.socket} (pid {os.getpid()})", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
