"""A stand-in for the incident flow (same flow name) whose process tests/flows/test_recovery.py kills:
it only waits, sending Prefect's heartbeats."""

from __future__ import annotations

import time

from prefect import flow


@flow(name="incident-response")
def probe(incident_id: int | None = None) -> None:
    time.sleep(900)
