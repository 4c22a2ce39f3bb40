"""Serve an ASGI app (the sandbox world, the gateway) on a real port from a background thread.

Tests, the demo and drills use it so that blocks reach the sandbox by URL, the way they reach real
vendors, including from other processes (a served deployment, a worker).
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

import uvicorn
from starlette.types import ASGIApp


@dataclass
class RunningServer:
    """A server running in a daemon thread. ``url`` has no trailing slash."""

    url: str
    port: int
    _server: uvicorn.Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def stop(self, timeout: float = 5.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_in_thread(app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Start ``app`` on ``host:port`` (port 0: any free port) and return once it accepts connections.

    Raises:
        RuntimeError: the server did not start within 10 s.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    actual = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError(f"server on {host}:{actual} did not start")
        time.sleep(0.01)
    return RunningServer(url=f"http://{host}:{actual}", port=actual, _server=server, _thread=thread)
