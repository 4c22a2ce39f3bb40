"""The database playbook's pure decisions (no database needed)."""

from __future__ import annotations

from runbook.clients.postgres import Backend, BackendResult, DbDiagnosis, Privileges, TableStat
from runbook.playbooks.db import choose_tables, index_hints, plan_mitigation, report


def backend(pid: int, **kw) -> Backend:
    base = dict(role="app", application_name="web", state="active", backend_type="client backend",
                age_s=100.0, query_age_s=100.0)  # fmt: skip
    return Backend(pid=pid, **(base | kw))


def diagnosis(*backends: Backend, tables: list[TableStat] | None = None) -> DbDiagnosis:
    return DbDiagnosis(
        server_version=150000, database="app", own_pid=1, threshold_s=60,
        privileges=Privileges(role="bot"), backends=list(backends), tables=tables or [],
    )  # fmt: skip


def test_every_rule_spares_what_it_must_and_says_why() -> None:
    """Own, runbook, non-client, superuser, protected role/app and young backends are spared with
    their reason; an old client backend is chosen."""
    plan = plan_mitigation(
        diagnosis(
            backend(1),
            backend(2, application_name="runbook"),
            backend(3, backend_type="autovacuum worker"),
            backend(4, backend_type="walsender"),
            backend(5, is_superuser=True),
            backend(6, role="replicator"),
            backend(7, application_name="pg_dump"),
            backend(8, age_s=10.0),
            backend(9, state="idle in transaction"),
            backend(10),
        ),
        protected_roles=["replicator"],
        protected_application_names=["pg_dump"],
    )
    reasons = {b.pid: b.reason for b in plan.backends}
    assert sorted(plan.pids) == [9, 10]
    assert reasons[1] == "our own backend"
    assert "runbook session" in reasons[2]
    assert "not a client backend" in reasons[3] and "not a client backend" in reasons[4]
    assert "superuser" in reasons[5]
    assert reasons[6] == "protected role 'replicator'"
    assert reasons[7] == "protected application 'pg_dump'"
    assert "under the 60.0s threshold" in reasons[8]
    assert reasons[9].startswith("idle in transaction for 100.0s, past")


def test_lock_victim_is_spared_when_its_blocker_is_stopped() -> None:
    """A backend waiting on a blocker that is being stopped is left alone; the blocker says whom
    it blocks."""
    plan = plan_mitigation(
        diagnosis(
            backend(20, blocking=[21], state="idle in transaction"), backend(21, blocked_by=[20])
        )
    )
    assert plan.pids == [20]
    reasons = {b.pid: b.reason for b in plan.backends}
    assert "blocks pids 21" in reasons[20] and "waits on pid 20" in reasons[21]


def test_tables_and_index_hints() -> None:
    """Only tables over both dead-tuple thresholds are vacuumed (exact figures win); seq-scanned
    large tables get a CREATE INDEX CONCURRENTLY recommendation with quoted names."""
    tables = [
        TableStat(schema_name="public", name="events", n_live_tup=1000, n_dead_tup=9000),
        TableStat(schema_name="public", name="small", n_live_tup=10, n_dead_tup=90),
        TableStat(
            schema_name="public", name="exact", n_live_tup=1000, n_dead_tup=5000, exact_dead_pct=5.0
        ),
        TableStat(
            schema_name="App",
            name="orders",
            n_live_tup=50_000,
            seq_scan=40,
            seq_tup_read=2_000_000,
            idx_scan=2,
        ),  # fmt: skip
    ]
    decisions = {t.table: t for t in choose_tables(tables)}
    assert [t for t, d in decisions.items() if d.vacuum] == ["public.events"]
    assert decisions["public.exact"].exact and not decisions["public.exact"].vacuum
    [hint] = index_hints(tables)
    assert hint.table == "App.orders"
    assert 'CREATE INDEX CONCURRENTLY ON "App".orders' in hint.statement


def test_report_lists_each_backend_with_action_and_result() -> None:
    """The JSON report gives pid, role, application, query age, action and result per backend."""
    d = diagnosis(backend(30), backend(31, is_superuser=True))
    plan = plan_mitigation(d)
    out = report(d, plan, [BackendResult(pid=30, action="terminate", outcome="terminated")])
    rows = {b["pid"]: b for b in out["backends"]}
    assert (rows[30]["action"], rows[30]["result"], rows[30]["query_age_s"]) == (
        "terminate",
        "terminated",
        100.0,
    )
    assert (rows[31]["action"], rows[31]["result"]) == ("none", "spared")
    assert report(d, plan, dry_run=True)["backends"][0]["result"] == "dry_run"


def test_filter_columns_reads_the_where_clause_of_queries_on_the_table() -> None:
    """Columns come from the WHERE clause of a query that reads the table (qualified, aliased or
    not); other tables, and queries without a filter, give none."""
    from runbook.playbooks.db import filter_columns

    q = "SELECT * FROM orders WHERE customer_id = 42 AND status = $1 ORDER BY id"
    assert filter_columns(q, "public", "orders") == ["customer_id", "status"]
    q = "select o.id from public.orders o join x on x.id = o.x where o.customer_id in (1, 2)"
    assert filter_columns(q, "public", "orders") == ["customer_id"]
    assert filter_columns("SELECT * FROM orders_archive WHERE a = 1", "public", "orders") == []
    assert filter_columns("SELECT count(*) FROM orders", "public", "orders") == []


def test_index_hint_is_concrete_only_for_an_existing_unindexed_column() -> None:
    """A filter column that exists and leads no index makes a runnable statement; an indexed or
    unknown column leaves the <column> recommendation."""
    big = {"schema_name": "public", "name": "orders", "n_live_tup": 50_000, "seq_scan": 9}
    queries = ["SELECT * FROM public.orders WHERE customer_id = 7"]
    [hint] = index_hints([TableStat(**big, columns={"customer_id": False})], queries=queries)
    assert hint.column == "customer_id"
    assert hint.statement == "CREATE INDEX CONCURRENTLY ON public.orders (customer_id);"
    for columns in ({"customer_id": True}, {"other": False}):
        [hint] = index_hints([TableStat(**big, columns=columns)], queries=queries)
        assert hint.column is None and "<column>" in hint.statement
