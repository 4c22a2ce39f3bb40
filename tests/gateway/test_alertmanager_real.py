"""A real Prometheus Alertmanager sends to the gateway: one incident per group, resolved attaches."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from runbook.gateway import GatewayConfig, create_app
from runbook.ledger import Ledger, open_ledger
from runbook.models import AlertStatus
from runbook.ports import free_port
from runbook.sandbox.server import RunningServer, serve_in_thread
from tests.conftest import require_service
from tests.gateway.conftest import TOKEN

BINARY = "/usr/bin/prometheus-alertmanager"
CONFIG = """
route:
  receiver: runbook
  group_by: [alertname]
  group_wait: 100ms
  group_interval: 400ms
  repeat_interval: 1h
receivers:
  - name: runbook
    webhook_configs:
      - url: {url}/hooks/alertmanager
        send_resolved: true
        http_config:
          authorization:
            credentials: {token}
"""


def _wait_for(predicate, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[RunningServer, Ledger, list[int]]]:
    """The gateway on a real port over a SQLite ledger, with a launcher that records launches."""
    launches: list[int] = []

    async def launch(incident_id: int) -> None:
        launches.append(incident_id)

    with open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        app = create_app(
            ledger, GatewayConfig.from_env({"RUNBOOK_GATEWAY_TOKEN": TOKEN}), launcher=launch
        )
        app.state.gateway.dispatcher.poll_s = 0.05
        server = serve_in_thread(app)
        yield server, ledger, launches
        server.stop()


@pytest.fixture
def alertmanager(tmp_path: Path, gateway: tuple[RunningServer, Ledger, list[int]]) -> Iterator[str]:
    """Alertmanager on a free loopback port, sending to the gateway; yields its URL."""
    if shutil.which(BINARY) is None:
        require_service(
            "alertmanager", f"{BINARY} is missing (apt-get install prometheus-alertmanager)"
        )
    port = free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text(CONFIG.format(url=gateway[0].url, token=TOKEN))
    proc = subprocess.Popen(  # noqa: S603 - a fixed binary and our own arguments
        [BINARY, f"--config.file={config}", f"--storage.path={tmp_path / 'am'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        if not _wait_for(ready, 20):
            proc.kill()
            pytest.fail(
                f"alertmanager did not start: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}"
            )
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _post(url: str, alerts: list[dict[str, object]]) -> None:
    response = httpx.post(f"{url}/api/v2/alerts", json=alerts, timeout=5)
    assert response.status_code == 200, response.text


def _alert(name: str, instance: str, ends: datetime | None = None) -> dict[str, object]:
    now = datetime.now(UTC)
    alert: dict[str, object] = {
        "labels": {"alertname": name, "instance": instance, "severity": "critical"},
        "annotations": {"summary": f"{name} on {instance}"},
        "startsAt": (now - timedelta(minutes=1)).isoformat(),
        "generatorURL": "http://prometheus.local/graph",
    }
    if ends is not None:
        alert["endsAt"] = ends.isoformat()
    return alert


def test_alertmanager_groups_make_one_incident_each_and_resolved_attaches(
    alertmanager: str, gateway: tuple[RunningServer, Ledger, list[int]]
) -> None:
    """Two Alertmanager groups open exactly two incidents; the resolved notification attaches; both launch."""
    _server, ledger, launches = gateway
    _post(
        alertmanager,
        [_alert("DiskFull", "db-1"), _alert("DiskFull", "db-2"), _alert("HighLatency", "api-1")],
    )

    def two_groups_in() -> bool:
        return sum(i.alert_count for i in ledger.list_incidents()) == 3

    assert _wait_for(two_groups_in), f"got {ledger.list_incidents()}"
    incidents = {i.title.split(" on ")[0]: i for i in ledger.list_incidents()}
    assert sorted(incidents) == ["DiskFull", "HighLatency"]
    disk = incidents["DiskFull"]
    assert disk.alert_count == 2 and incidents["HighLatency"].alert_count == 1

    ended = datetime.now(UTC) - timedelta(seconds=1)
    _post(alertmanager, [_alert("DiskFull", "db-1", ended), _alert("DiskFull", "db-2", ended)])

    def disk_resolved() -> bool:
        return sum(a.status == AlertStatus.RESOLVED for a in ledger.alerts_for(disk.id)) == 2

    assert _wait_for(disk_resolved), f"got {ledger.alerts_for(disk.id)}"
    assert len(ledger.list_incidents()) == 2  # resolved notifications opened nothing new
    # the gateway settles the incident after the commit, just before it answers
    assert _wait_for(lambda: any(e.kind == "alerts_resolved" for e in ledger.timeline(disk.id)))
    assert _wait_for(lambda: sorted(launches) == sorted(i.id for i in incidents.values()), 5)
    stored = ledger.alerts_for(disk.id)[0]
    assert stored.source == "alertmanager" and stored.raw_body.startswith(b"{")
