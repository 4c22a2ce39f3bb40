"""A private, throwaway PostgreSQL cluster for benchmarks and tests that must not touch a shared server.

``initdb`` + ``pg_ctl`` from the local PostgreSQL installation, trust authentication on 127.0.0.1 only,
a free port, the socket and data under a temporary folder; run as the ``postgres`` user when we are
root (initdb refuses root). Deleted when the context ends, whatever happened.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from runbook.ports import free_port


class ClusterUnavailable(RuntimeError):
    """No PostgreSQL server binaries here (or no way to run them as a non-root user)."""


def pg_bin() -> Path:
    """The newest installed PostgreSQL server binaries (``/usr/lib/postgresql/<major>/bin``).

    Raises:
        ClusterUnavailable: none installed.
    """
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if not found:
        raise ClusterUnavailable(
            "no PostgreSQL server binaries (/usr/lib/postgresql/<version>/bin/initdb): install "
            "the postgresql package"
        )
    return Path(found[-1]).parent


def _as_postgres(*command: str) -> list[str]:
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            raise ClusterUnavailable(
                "running as root needs runuser to start PostgreSQL as postgres"
            )
        return ["runuser", "-u", "postgres", "--", *command]
    return list(command)


class PrivateCluster:
    """A running private cluster: ``dsn`` reaches it as the superuser ``postgres``."""

    def __init__(self, root: Path, port: int, bin_dir: Path) -> None:
        self.root = root
        self.port = port
        self.bin = bin_dir
        self.data = root / "data"

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def _ctl(self, *args: str, check: bool = True) -> None:
        subprocess.run(  # noqa: S603 - fixed binaries, our own arguments
            _as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", *args),
            check=check,
            capture_output=True,
            timeout=90,
        )

    def start(self, **settings: object) -> None:
        """Start it with ``-c name=value`` for each setting."""
        conf = " ".join(f"-c {k}={v}" for k, v in settings.items())
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 {conf}"
        self._ctl("-o", options, "-l", str(self.root / "log"), "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop it (``immediate`` is a crash: no shutdown checkpoint, WAL replay on restart)."""
        self._ctl("-m", mode, "stop", check=False)


@contextlib.contextmanager
def private_cluster(**settings: object) -> Iterator[PrivateCluster]:
    """A fresh cluster started with ``settings`` (e.g. ``max_connections=300``); removed afterwards.

    Raises:
        ClusterUnavailable: no server binaries, or initdb/start failed (with its output).
    """
    bin_dir = pg_bin()
    root = Path(tempfile.mkdtemp(prefix="runbook-pg-", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    node = PrivateCluster(root, free_port(), bin_dir)
    try:
        try:
            subprocess.run(  # noqa: S603
                _as_postgres(
                    str(bin_dir / "initdb"), "-D", str(node.data), "-A", "trust", "-U", "postgres",
                    "--no-sync",
                ),
                check=True, capture_output=True, timeout=120,
            )  # fmt: skip
            node.start(**settings)
        except subprocess.CalledProcessError as exc:
            out = (exc.stderr or exc.stdout or b"").decode(errors="replace").strip()
            raise ClusterUnavailable(
                f"could not start a private PostgreSQL: {out[-300:]}"
            ) from None
        yield node
    finally:
        node.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
