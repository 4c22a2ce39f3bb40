"""Serve every deployment of the runbook from one process, no work pool needed (`runbook serve`).

The runner polls for scheduled runs every second (Prefect's default is 10 s), so a run launched by the
alert gateway or the UI starts within about two seconds. Each run executes in its own subprocess.
"""

from __future__ import annotations

import os
from typing import Any

DEPLOYMENT_NAME = "runbook"
INCIDENT_DEPLOYMENT = f"incident-response/{DEPLOYMENT_NAME}"


def build_deployments() -> list[Any]:
    """The seven deployments, named ``<flow>/runbook`` like the ones in prefect.yaml."""
    from flows.communicate import communicate
    from flows.detect import detect
    from flows.incident import incident_response
    from flows.mitigate import mitigate
    from flows.rca import rca
    from flows.triage import triage
    from flows.watch import watch

    tags = ["runbook"]
    out = [
        incident_response.to_deployment(
            name=DEPLOYMENT_NAME,
            tags=[*tags, "incident"],
            description="Walk one incident through the runbook: detect, triage, mitigate, communicate, rca.",
        )
    ]
    for phase in (detect, triage, mitigate, communicate, rca):
        out.append(
            phase.to_deployment(
                name=DEPLOYMENT_NAME,
                tags=[*tags, "phase"],
                description=f"Run only the {phase.name} phase for an incident.",
            )
        )
    out.append(
        watch.to_deployment(
            name=DEPLOYMENT_NAME,
            tags=[*tags, "watch"],
            cron="* * * * *",
            description="Escalate missed deadlines and overruns every minute.",
        )
    )
    return out


def main(limit: int | None = None, poll_seconds: int = 1) -> None:
    """Serve every deployment until interrupted (Ctrl-C or SIGTERM stop it cleanly)."""
    os.environ["PREFECT_RUNNER_POLL_FREQUENCY"] = str(max(1, int(poll_seconds)))
    from prefect import serve

    serve(*build_deployments(), limit=limit, print_starting_message=True)


if __name__ == "__main__":
    main()
