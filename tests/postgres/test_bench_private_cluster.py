"""`runbook bench mitigate-db --private-cluster`: a throwaway cluster with the slots the run needs."""

from __future__ import annotations

import json

import pytest

from runbook.bench import mitigate_db
from runbook.bench.pg_cluster import ClusterUnavailable, pg_bin
from tests.conftest import require_service


@pytest.mark.timeout(180)
def test_private_cluster_run_terminates_every_backend_and_leaves_nothing(capsys) -> None:
    """Against its own cluster the benchmark finds and terminates all its backends (no timing
    asserted here: that is the benchmark's job), and the cluster's folder is gone afterwards."""
    try:
        pg_bin()
    except ClusterUnavailable as exc:
        require_service("PostgreSQL server binaries", str(exc))
    import glob

    before = set(glob.glob("/tmp/runbook-pg-*"))
    assert mitigate_db.main(backends=30, json_out=True, private_cluster=True) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["backends"] == 30 and out["terminated"] == 30 and out["still_running"] == 0
    assert set(glob.glob("/tmp/runbook-pg-*")) == before
