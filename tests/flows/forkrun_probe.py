"""What a fork server child runs in tests/flows/test_forkserver.py, instead of prefect.engine.

It prints what it was given (arguments, working directory, PROBE_* environment, whether Prefect's
settings see the client's PREFECT_API_URL, its niceness) as one JSON line on stdout, then acts on
PROBE_MODE: ``exit:N`` exits N; ``wait`` waits for SIGTERM and exits 7 from its handler; ``hang``
ignores nothing and sleeps (a child whose client is killed)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from prefect.settings import get_current_settings


def _on_term(signum: int, _frame: object) -> None:
    print("got SIGTERM", flush=True)
    sys.exit(7)


if __name__ == "__main__":
    print(
        json.dumps(
            {
                "argv": sys.argv[1:],
                "cwd": os.getcwd(),
                "env": {k: v for k, v in os.environ.items() if k.startswith("PROBE_")},
                "api_url": get_current_settings().api.url,
                "pid": os.getpid(),
                "path0": sys.path[0],
                "nice": os.nice(0),
            }
        ),
        flush=True,
    )
    mode = os.environ.get("PROBE_MODE", "exit:0")
    if mode.startswith("exit:"):
        print("to stderr", file=sys.stderr, flush=True)
        sys.exit(int(mode.split(":", 1)[1]))
    signal.signal(signal.SIGTERM, _on_term)
    if os.environ.get("PROBE_PIDFILE"):
        with open(os.environ["PROBE_PIDFILE"], "w") as f:
            f.write(str(os.getpid()))
    while True:
        time.sleep(0.05)
