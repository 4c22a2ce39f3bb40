"""No secret leaks: a drill whose every block credential is a distinct sentinel leaves none of them in
the logs, the Prefect artifacts and run parameters, the ledger, the RCA or the JSON report."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import uuid
from pathlib import Path

import pytest
from rich.console import Console

from runbook.drill.run import DrillSettings, run_drill
from runbook.drill.world import CREDENTIALS


async def _prefect_texts(since_names: set[str] | None = None) -> dict[str, str]:
    """Every flow run's parameters, every log line and every artifact on the Prefect server."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        runs = await client.read_flow_runs(limit=200)
        logs = await client.read_logs(limit=200)
        offset = 200
        while True:  # every log line, page by page
            page = await client.read_logs(limit=200, offset=offset)
            if not page:
                break
            logs += page
            offset += 200
        artifacts = await client.read_artifacts(limit=200)
    return {
        "run parameters": "\n".join(json.dumps(r.parameters, default=str) for r in runs),
        "run logs": "\n".join(log.message for log in logs),
        "artifacts": "\n".join(f"{a.key} {a.description} {a.data}" for a in artifacts),
    }


def _sqlite_dump(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return "\n".join(conn.iterdump())


@pytest.mark.timeout(240)
def test_sentinel_credentials_appear_nowhere(
    prefect_api, pg_admin_dsn, tmp_path, monkeypatch, capfd
) -> None:
    """Each credential is a distinct sentinel (the sandbox accepts only it, so the drill succeeding
    proves they were used); none appears in any output the drill or the flows leave behind."""
    monkeypatch.setenv("RUNBOOK_HOME", str(tmp_path / "home"))
    tag = uuid.uuid4().hex[:10]
    creds = {name: f"SENTINEL{tag}{name.replace('-', '')}" for name in CREDENTIALS}
    pg_password = f"SENTINEL{tag}pgpassword"
    # trust authentication ignores the password, so it can be a sentinel too
    dsn = f"{pg_admin_dsn} password={pg_password}"
    sentinels = [*creds.values(), pg_password]
    out = io.StringIO()
    report = run_drill(
        DrillSettings(scenario="bad-deploy", database_url=dsn, credentials=creds),
        Console(file=out, width=200),
    )
    assert report.ok, out.getvalue()
    captured = capfd.readouterr()
    folder = Path(report.folder or "")
    texts = {
        "console": out.getvalue(),
        "stdout/stderr": captured.out + captured.err,
        "JSON report": report.model_dump_json(),
        "ledger": _sqlite_dump(folder / "ledger.db"),
        **{
            str(p.relative_to(folder)): p.read_text("utf-8", errors="replace")
            for p in folder.rglob("*")
            if p.is_file() and p.suffix in (".md", ".toml", ".json", ".svg", ".txt", ".log")
        },
        **asyncio.run(_prefect_texts()),
    }
    assert report.rca_path and any(k.endswith(".md") for k in texts), "the RCA was read"
    leaks = [(where, s) for where, text in texts.items() for s in sentinels if s in text]
    assert leaks == []
