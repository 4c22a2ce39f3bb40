"""``python -m flows.prefect_cli``: Prefect's own CLI (how ``runbook worker`` runs ``prefect worker
start``), in a process whose Prefect API clients share one TLS context."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import prefect

ROOT = Path(__file__).resolve().parents[2]

# two API clients, as the process worker makes for every run it starts: the same TLS context or not
TWO_CLIENTS = """
import sys
if sys.argv[1] == "cli":
    import flows.prefect_cli  # noqa: F401 - what `python -m flows.prefect_cli` imports first
from prefect.client.orchestration import PrefectClient
a, b = (PrefectClient("http://127.0.0.1:9/api") for _ in range(2))
print(a._client._transport._pool._ssl_context is b._client._transport._pool._ssl_context)
"""


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our interpreter, our module
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, **env},
    )  # fmt: skip


def test_it_runs_prefects_command_and_passes_its_exit_code_on() -> None:
    """`version` prints Prefect's release and exits 0; an unknown command exits non-zero, as
    `prefect` itself does."""
    done = _run("-m", "flows.prefect_cli", "version")
    assert done.returncode == 0, done.stderr[-2000:]
    assert prefect.__version__ in done.stdout
    assert _run("-m", "flows.prefect_cli", "no-such-command").returncode != 0


def test_its_api_clients_share_one_tls_context_where_plain_prefects_do_not() -> None:
    """Two clients in a process that started as the CLI module share a context; in a process that
    imported only Prefect (what `prefect worker start` was), each built its own."""
    shared, plain = (_run("-c", TWO_CLIENTS, mode) for mode in ("cli", "plain"))
    assert shared.returncode == 0 and plain.returncode == 0, shared.stderr + plain.stderr
    assert shared.stdout.strip() == "True"
    assert plain.stdout.strip() == "False"


def test_its_runs_share_one_cancellation_subscription_where_plain_prefects_do_not() -> None:
    """The CLI's process hands Prefect's executor contexts the shared cancellation watch
    (flows/cancel_watch.py); a process that imported only Prefect builds one observer per run."""
    script = (
        "import sys\n"
        "if sys.argv[1] == 'cli':\n"
        "    import flows.prefect_cli  # noqa: F401\n"
        "from prefect.runner import _flow_run_executor as executor\n"
        "print(executor.FlowRunCancellingObserver.__name__)\n"
    )
    shared, plain = (_run("-c", script, mode) for mode in ("cli", "plain"))
    assert shared.returncode == 0 and plain.returncode == 0, shared.stderr + plain.stderr
    assert shared.stdout.strip() == "observer_for_run"
    assert plain.stdout.strip() == "FlowRunCancellingObserver"


def test_the_shared_cancellation_watch_can_be_turned_off() -> None:
    """RUNBOOK_WORKER_SHARED_CANCEL_WATCH=0 leaves Prefect's own observer per run in the CLI's
    process (an escape hatch); 1 shares it, as when unset."""
    script = (
        "import flows.prefect_cli  # noqa: F401\n"
        "from prefect.runner import _flow_run_executor as executor\n"
        "print(executor.FlowRunCancellingObserver.__name__)\n"
    )
    off = _run("-c", script, RUNBOOK_WORKER_SHARED_CANCEL_WATCH="0")
    on = _run("-c", script, RUNBOOK_WORKER_SHARED_CANCEL_WATCH="1")
    assert off.returncode == 0 and on.returncode == 0, off.stderr + on.stderr
    assert off.stdout.strip() == "FlowRunCancellingObserver"
    assert on.stdout.strip() == "observer_for_run"
