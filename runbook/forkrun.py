"""``python -m runbook.forkrun``: a flow run's process, forked from a preloaded server.

Prefect's process worker starts every flow run as a fresh interpreter: by default a workspace
supervisor (imports prefect, ~1.9 s of CPU here) that then execs ``python -m prefect.engine``
(imports prefect and the flows again, ~3.9 s). On 2 cores that was half of an incident's CPU in
``runbook bench scale``. ``runbook worker`` starts a fork server that has imported prefect and the
flows once (``flows/forkserver.py``) next to ``prefect worker start``, and the deployments' job
variable ``command`` names this module, so the process the worker starts is only this small client
(the standard library and two small modules of ours, ~50 ms):

1. it connects to the server's Unix socket (``$RUNBOOK_FORKSERVER``) and sends its arguments,
   environment and working directory, and its stdin, stdout and stderr as file descriptors;
2. the server forks a child that takes those descriptors, that environment and directory, and runs
   ``prefect.engine`` as ``python -m prefect.engine`` would (the same code, already imported);
3. the client forwards the signals it gets (SIGTERM, SIGINT, SIGHUP: how the worker cancels or stops
   a run) to the child, and exits with the child's exit status; a client that dies (SIGKILL) closes
   its connection and the server sends SIGTERM to the child, so no run outlives its process.

With no ``$RUNBOOK_FORKSERVER``, or no server answering on it, the client replaces itself with
``python -m prefect.engine`` (a warning on stderr): the run goes on as Prefect would have run it.

Either way, ``$RUNBOOK_RUN_NICE`` (a whole number from 0 to 19, default 0; ``runbook worker``
refuses to start with anything else) lowers the run's priority by that much before the engine
starts (``lower_priority``): on a machine the runs share with the Prefect server, the worker and
the database, every run then yields the CPU to the processes all of them wait on.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

from runbook.envvars import whole_number
from runbook.errors import ConfigError

ENV_SOCKET = "RUNBOOK_FORKSERVER"
ENV_RUN_NICE = "RUNBOOK_RUN_NICE"
MAX_NICE = 19  # the highest niceness Linux knows
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_HEADER = struct.Struct("!I")
MAX_REQUEST = 4 * 1024 * 1024  # an environment is a few KiB; anything near this is not a request


def encode(message: dict[str, Any]) -> bytes:
    """One message on the connection: a JSON object and a newline."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def request_bytes(argv: list[str], env: dict[str, str], cwd: str) -> bytes:
    """The client's request: a 4-byte length, then the JSON of argv, env and cwd."""
    body = json.dumps({"argv": argv, "env": env, "cwd": cwd}).encode()
    return _HEADER.pack(len(body)) + body


def read_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """The server's side of ``request_bytes``: the request and the 3 descriptors sent with it.

    Raises:
        ValueError: the connection closed early, sent no descriptors or an oversized request.
    """
    head, fds, _flags, _addr = socket.recv_fds(conn, _HEADER.size, 3)
    if len(head) < _HEADER.size or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise ValueError("a forkrun request needs a length and 3 file descriptors")
    (size,) = _HEADER.unpack(head)
    if size > MAX_REQUEST:
        for fd in fds:
            os.close(fd)
        raise ValueError(f"a forkrun request of {size} bytes is too large")
    body = bytearray()
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            for fd in fds:
                os.close(fd)
            raise ValueError("the forkrun request ended early")
        body += chunk
    return json.loads(body), list(fds)


def lower_priority(env: Mapping[str, str]) -> int:
    """Raise this process's niceness by ``env[RUNBOOK_RUN_NICE]``; the increment applied (0 when
    unset, blank or 0). A value that is not a whole number from 0 to 19 changes nothing and says so
    on stderr: the run goes on at its priority (``runbook worker`` refuses such a value before it
    starts, so only a worker started otherwise meets one here)."""
    try:
        increment = whole_number(env, ENV_RUN_NICE, 0, 0, MAX_NICE)  # as runbook worker checks it
    except ConfigError as exc:
        print(f"runbook.forkrun: {exc}; this run keeps its priority", file=sys.stderr)
        return 0
    if increment:
        os.nice(increment)
    return increment


def _fall_back(reason: str) -> NoReturn:
    """Run the engine in this process, as Prefect's own command would (never returns)."""
    print(f"runbook.forkrun: {reason}; running python -m prefect.engine instead", file=sys.stderr)
    sys.stderr.flush()
    lower_priority(os.environ)
    os.execv(sys.executable, [sys.executable, "-m", "prefect.engine", *sys.argv[1:]])  # noqa: S606


def _exit_with(code: int) -> int:
    """The child's status as this process's own: a signal death is repeated, a code returned."""
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code  # not reached unless the signal is ignored
    return code


def main() -> int:
    path = os.environ.get(ENV_SOCKET)
    if not path:
        _fall_back(f"${ENV_SOCKET} is not set (start workers with `runbook worker`)")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError as exc:
        sock.close()
        _fall_back(f"no fork server at {path} ({exc.strerror or exc})")
    data = request_bytes(sys.argv[1:], dict(os.environ), os.getcwd())
    socket.send_fds(sock, [data[: _HEADER.size]], [0, 1, 2])
    sock.sendall(data[_HEADER.size :])

    def forward(signum: int, _frame: object) -> None:
        try:
            sock.sendall(encode({"signal": signum}))
        except OSError:
            pass  # the server is gone; the status read below says so

    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, forward)
    stream = sock.makefile("rb")
    for line in stream:
        message = json.loads(line)
        if "error" in message:
            print(f"runbook.forkrun: the fork server refused: {message['error']}", file=sys.stderr)
            return 1
        if "exit" in message:
            return _exit_with(int(message["exit"]))
    print(
        "runbook.forkrun: the fork server closed the connection before the run ended",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
