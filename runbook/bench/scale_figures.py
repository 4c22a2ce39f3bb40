"""The pure parts of ``runbook bench scale``: side effects counted from the worlds' request logs,
duplicates, the bench's policy, the TTM figures and the verdict (``runbook/bench/scale.py`` has the
method)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from runbook.bench.latency import percentile
from runbook.timings import Timings

TARGET_RATIO = 2.0
SERVICE_PREFIX = "scale-"
# (kind, vendor, methods, path regex, body regex) of each side effect that must happen once per incident
SIDE_EFFECTS: tuple[tuple[str, str, str, str, str | None], ...] = (
    ("ticket", "github", "POST", r"^/repos/[^/]+/[^/]+/issues$", None),
    ("page", "pagerduty", "POST", r"/enqueue$", r'"event_action"\s*:\s*"trigger"'),
    ("status_incident", "statuspage", "POST", r"/incidents$", None),
    ("rollback", "vercel", "POST", r"/rollback/", None),
    ("promote", "vercel", "POST", r"/promote/", None),
)


# --- pure parts -----------------------------------------------------------------------------------


def side_effects(requests: Iterable[Mapping[str, Any]]) -> Counter[str]:
    """Count the side effects in one world's request log (answered 2xx), by kind (``SIDE_EFFECTS``).

    Args:
        requests: recorded requests with ``vendor``, ``method``, ``path``, ``status`` and ``body``.
    """
    counts: Counter[str] = Counter()
    for r in requests:
        if not 200 <= int(r.get("status") or 0) < 300:
            continue
        for kind, vendor, method, path, body in SIDE_EFFECTS:
            if r.get("vendor") != vendor or r.get("method") != method:
                continue
            if re.search(path, str(r.get("path", ""))) and (
                body is None or re.search(body, str(r.get("body", "")))
            ):
                counts[kind] += 1
    return counts


def duplicate_side_effects(per_incident: Mapping[Any, Mapping[str, int]]) -> int:
    """Side effects beyond the first of their kind, summed over every incident."""
    return sum(max(0, n - 1) for counts in per_incident.values() for n in counts.values())


def duplicate_action_keys(rows: Iterable[tuple[str, str]]) -> int:
    """Ledger ``(idempotency_key, status)`` rows: the extra ``done`` rows of any one key."""
    done = Counter(key for key, status in rows if status == "done")
    return sum(n - 1 for n in done.values() if n > 1)


# the watch for recurrence after a verified mitigation: the policy's 15 min would hold every run
# (and the bench) a quarter of an hour at production speed; it starts after mitigated_at, so TTM is
# the same either way
BENCH_RECURRENCE_WATCH = "2m"


def bench_policy_text(default_actions: dict[str, dict[str, Any]]) -> str:
    """The drill's overlay (approvals run on their own), no rollback interval per target, and a
    shorter watch for recurrence (``BENCH_RECURRENCE_WATCH``).

    The safety envelope allows one rollback per Vercel project per ``min_interval`` (30 min, 18 s at
    100x). Every sandbox world has the same project id (``prj_sandbox``) where a real storm of
    distinct incidents would have distinct projects, so the envelope would hold back every
    rollback after the first as "the same project was just rolled back".
    """
    from runbook.drill.run import drill_policy_text

    text = drill_policy_text(default_actions)
    head = "[actions.rollback_deployment]\n"
    note = "# bench scale: every world's project is prj_sandbox; a real storm has one per service\n"
    if head in text:
        text = text.replace(head, note + head + "min_interval = 0\n", 1)
    else:
        text += note + head + "min_interval = 0\n"
    return (
        text + "# bench scale: the watch after mitigation (TTM ends before it), shortened\n"
        f'[monitoring]\nrecurrence_watch = "{BENCH_RECURRENCE_WATCH}"\n'
    )


def world_index(service: str) -> int | None:
    """World ``k`` of an incident whose service is ``scale-<k>``; None for any other service."""
    m = re.fullmatch(re.escape(SERVICE_PREFIX) + r"(\d+)", service or "")
    return int(m.group(1)) if m else None


def ttm_figures(ttms: Sequence[float], single_ttm_s: float | None) -> dict[str, Any]:
    """p50/p95/max of the storm's TTMs and the ratio p95 / single (None where not computable)."""
    if not ttms:
        return {"p50_ttm_s": None, "p95_ttm_s": None, "max_ttm_s": None, "ratio": None}
    p95 = percentile(ttms, 95)
    return {
        "p50_ttm_s": round(percentile(ttms, 50), 3),
        "p95_ttm_s": round(p95, 3),
        "max_ttm_s": round(max(ttms), 3),
        "ratio": round(p95 / single_ttm_s, 3) if single_ttm_s else None,
    }


def verdict(out: Mapping[str, Any]) -> list[str]:
    """Why the run fails (empty: it passes): unresolved incidents, duplicates, ratio over target."""
    why = []
    if out.get("resolved") != out.get("incidents") or not out.get("single_resolved", True):
        why.append(
            f"{out.get('resolved')} of {out.get('incidents')} incidents resolved"
            + ("" if out.get("single_resolved", True) else "; the single incident did not resolve")
        )
    if out.get("duplicate_side_effects") or out.get("duplicate_action_keys"):
        why.append(
            f"{out.get('duplicate_side_effects')} duplicate side effects, "
            f"{out.get('duplicate_action_keys')} idempotency keys done twice"
        )
    ratio = out.get("ratio")
    if ratio is None or ratio > out.get("target_ratio", TARGET_RATIO):
        why.append(
            f"p95 TTM {out.get('p95_ttm_s')} s is {ratio}x the single incident's "
            f"{out.get('single_ttm_s')} s (target <= {out.get('target_ratio', TARGET_RATIO)}x)"
        )
    return why


def incident_row(
    k: int, incident_id: int, timings: Timings, run: Any, nice: int | None = None
) -> dict[str, Any]:
    """One incident's path through the storm, in seconds from its detection: its flow run (Prefect's
    ``FlowRun``, or None) created and Running, each phase's start and end, and its TTM; a row of
    ``incidents.json`` in the bench's folder, for finding where a slow storm's time went. ``nice``:
    the niceness its run's process took after mitigation (``runbook.priority``), None if it kept
    its priority."""

    def since(at: datetime | None) -> float | None:
        return None if at is None else round((at - timings.detected_at).total_seconds(), 2)

    return {
        "world": k,
        "incident": incident_id,
        "run_created_s": since(run.created) if run is not None else None,
        "run_running_s": since(run.start_time) if run is not None else None,
        "phases": {t.phase.value: [since(t.started_at), since(t.ended_at)] for t in timings.phases},
        "ttm_s": timings.ttm_s,
        "nice_after_mitigation": nice,
    }
