"""The SQL of the database playbook (PostgreSQL 13+). Values only ever as bound parameters."""

from __future__ import annotations

QUERY_TEXT_LIMIT = 500

PRIVILEGES = """
SELECT current_user AS role, r.rolsuper AS superuser,
       pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS read_all_stats,
       pg_has_role(current_user, 'pg_signal_backend', 'USAGE') AS signal_backend,
       pg_has_role(current_user, 'pg_stat_scan_tables', 'USAGE') AS stat_scan_tables,
       has_function_privilege('pg_reload_conf()', 'EXECUTE') AS reload_conf
FROM pg_roles r WHERE r.rolname = current_user
"""

HEAD = """
SELECT current_setting('server_version_num')::int AS server_version,
       current_database() AS database, pg_backend_pid() AS own_pid,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int AS used,
       current_setting('max_connections')::int
         - current_setting('superuser_reserved_connections')::int AS connection_limit,
       EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')
         AS has_pg_stat_statements,
       EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pgstattuple') AS has_pgstattuple
"""

# in the target's database only (the cluster's other databases are someone else's): long-running
# (active past the threshold), idle in transaction past it (measured from the last
# state change: a busy transaction between statements is not idle), and both sides of a lock wait
BACKENDS = f"""
WITH a AS (
  SELECT a.*, CASE WHEN a.state LIKE 'idle in transaction%%' THEN a.state_change
                   ELSE a.query_start END AS since
  FROM pg_stat_activity a
  WHERE a.pid <> pg_backend_pid() AND coalesce(a.datname, current_database()) = current_database()
), blocked AS (
  SELECT a.pid, pg_blocking_pids(a.pid) AS by FROM a WHERE a.wait_event_type = 'Lock'
), blockers AS (
  SELECT b, array_agg(blocked.pid ORDER BY blocked.pid) AS blocking
  FROM blocked, unnest(blocked.by) AS b GROUP BY b
)
SELECT a.pid, a.backend_start, a.usename AS role,
       coalesce(a.application_name, '') AS application_name, host(a.client_addr) AS client_addr,
       a.state, coalesce(a.backend_type, '') AS backend_type,
       coalesce(r.rolsuper, false) AS is_superuser,
       extract(epoch FROM now() - a.query_start)::float8 AS query_age_s,
       extract(epoch FROM now() - a.xact_start)::float8 AS xact_age_s,
       coalesce(extract(epoch FROM now() - a.since), 0)::float8 AS age_s,
       a.query_start, a.wait_event_type, left(coalesce(a.query, ''), {QUERY_TEXT_LIMIT}) AS query,
       coalesce(bd.by, '{{}}'::int[]) AS blocked_by, coalesce(bk.blocking, '{{}}'::int[]) AS blocking
FROM a LEFT JOIN pg_roles r ON r.oid = a.usesysid
       LEFT JOIN blocked bd ON bd.pid = a.pid LEFT JOIN blockers bk ON bk.b = a.pid
WHERE (a.state <> 'idle' AND a.since < now() - make_interval(secs => %(threshold)s))
   OR bk.b IS NOT NULL OR bd.pid IS NOT NULL
ORDER BY age_s DESC
"""

TABLES = """
WITH t AS (
  SELECT s.schemaname AS schema_name, s.relname AS name,
         pg_total_relation_size(s.relid) AS total_bytes, s.n_live_tup, s.n_dead_tup, s.seq_scan,
         s.seq_tup_read, s.idx_scan, s.last_vacuum, s.last_autovacuum
  FROM pg_stat_user_tables s
), ranked AS (
  SELECT t.*, rank() OVER (ORDER BY total_bytes DESC) AS size_rank,
         rank() OVER (ORDER BY n_dead_tup DESC) AS dead_rank
  FROM t
)
SELECT schema_name, name, total_bytes, n_live_tup, n_dead_tup, seq_scan, seq_tup_read, idx_scan,
       last_vacuum, last_autovacuum
FROM ranked
WHERE size_rank <= 10 OR (n_dead_tup > 0 AND dead_rank <= 20)
   OR (seq_scan > coalesce(idx_scan, 0) AND n_live_tup >= %(min_rows)s)
ORDER BY total_bytes DESC LIMIT 100
"""

SLOW_STATEMENTS = f"""
SELECT left(query, {QUERY_TEXT_LIMIT}) AS query, calls::bigint AS calls,
       total_exec_time::float8 AS total_ms, mean_exec_time::float8 AS mean_ms
FROM pg_stat_statements ORDER BY mean_exec_time DESC LIMIT 10
"""

PGSTATTUPLE = """
SELECT dead_tuple_percent::float8 AS dead_tuple_percent
FROM pgstattuple(format('%%I.%%I', %s::text, %s::text)::regclass)
"""

# one statement signals every pid; a pid is signalled only when it is still the process the
# playbook chose (same backend_start), a client backend, not a superuser's and not our own:
# signalling a superuser backend would fail the whole statement
_SIGNAL = """
WITH c AS (
  SELECT t.pid, a.pid IS NOT NULL AND (t.started IS NULL OR a.backend_start = t.started) AS present,
         coalesce(a.backend_type = 'client backend' AND NOT coalesce(r.rolsuper, false)
                  AND a.pid <> pg_backend_pid(), false) AS eligible,
         a.state, a.backend_start, a.query_start
  FROM unnest(%(pids)s::int[], %(starts)s::timestamptz[]) AS t(pid, started)
  LEFT JOIN pg_stat_activity a ON a.pid = t.pid
  LEFT JOIN pg_roles r ON r.oid = a.usesysid
)
SELECT pid, present, eligible, state, backend_start, query_start,
       CASE WHEN present AND eligible THEN {fn}(pid) ELSE false END AS signalled
FROM c
"""
CANCEL = _SIGNAL.format(fn="pg_cancel_backend")
TERMINATE = _SIGNAL.format(fn="pg_terminate_backend")

STATES = """
SELECT pid, state, backend_start, query_start FROM pg_stat_activity WHERE pid = ANY(%(pids)s::int[])
"""

_RESOLVE_TABLE = """
SELECT c.oid, n.nspname, c.relname, pg_get_userbyid(c.relowner) AS owner, current_user AS role,
       (pg_has_role(c.relowner, 'USAGE') OR pg_has_role(d.datdba, 'USAGE') {maintain}) AS may_vacuum,
       pg_has_role(c.relowner, 'USAGE') AS owns
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     JOIN pg_database d ON d.datname = current_database()
WHERE c.oid = to_regclass(%(name)s) AND c.relkind IN ('r', 'm', 'p')
"""
RESOLVE_TABLE_16 = _RESOLVE_TABLE.format(maintain="")
RESOLVE_TABLE_17 = _RESOLVE_TABLE.format(maintain="OR has_table_privilege(c.oid, 'MAINTAIN')")

# the columns of one table, and whether each already leads an index (missing-index hints)
COLUMNS = """
SELECT a.attname AS column_name,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indkey[0] = a.attnum)
         AS indexed
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = %(schema)s AND c.relname = %(name)s
ORDER BY a.attnum
"""

INDEX_VALID = """
SELECT i.indisvalid AS valid
FROM pg_class ic JOIN pg_index i ON i.indexrelid = ic.oid
     JOIN pg_namespace n ON n.oid = ic.relnamespace
WHERE n.nspname = %(schema)s AND ic.relname = %(name)s
"""
