"""A long flow run that tests/flows/test_worker_cancel.py starts through ``runbook worker`` and cancels:
it writes its process id where it is told, then waits."""

from __future__ import annotations

import os
import time
from pathlib import Path

from prefect import flow


@flow(name="cancel-probe")
def probe(pid_file: str) -> None:
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(600)
