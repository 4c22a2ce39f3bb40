"""``python -m flows.prefect_cli ARGS``: Prefect's own command line (``prefect ARGS``), with Prefect's API
clients sharing one TLS context per CA bundle (``flows/prefect_tls.py``).

``runbook worker`` starts ``prefect worker start`` this way. Prefect's process worker makes new API
clients for every flow run it starts (the run's executor context, its cancellation observer), and
each built a TLS context from the whole CA bundle, even for a plain ``http://`` API: 37 ms of CPU
each on the README's machine, for every run of a storm. Importing ``flows`` installs the sharing
(and nothing else: the flows themselves are not imported).

Each run's executor context also opened its own cancellation subscription to the API's event
stream; ``flows/cancel_watch.py`` makes them share one per process (installed here, so only in
this CLI's process: ``runbook serve`` and the flow runs themselves are untouched), unless
``RUNBOOK_WORKER_SHARED_CANCEL_WATCH=0`` (``cancel_watch.ENV_SHARED``) keeps Prefect's own.
"""

from __future__ import annotations

import sys

import flows  # noqa: F401 - installs the shared TLS context for Prefect's client modules
from flows import cancel_watch

if cancel_watch.shared_watch_wanted():  # `runbook worker` refused a bad value before starting us
    cancel_watch.install()  # one cancellation subscription for all the worker's runs (cancel_watch)


def main() -> int:
    from prefect.cli import app

    sys.argv[0] = "prefect"
    app()
    return 0


if __name__ == "__main__":
    sys.exit(main())
