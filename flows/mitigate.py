"""Phase 3, Mitigate & Stabilize (15-60 min): playbook actions, verification, watch for recurrence.

For every action: plan -> (approval, per policy) -> apply -> record; then verify (health checks and
metrics back under the alert thresholds), watch for recurrence for the policy's window, and update
stakeholders. The bad-deploy playbook ships here; scenarios without an automated playbook are handed to
a person with the runbook's checklist.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from prefect import flow
from prefect.logging import get_run_logger

from flows.approval import approval_url, ask_approval
from flows.common import attempt, ctx_for, note_skips, send_escalation, skip
from flows.report import PhaseReport, publish
from flows.runtime import Options, Runtime, build_runtime, compress
from runbook.actions import envelope_verdict
from runbook.errors import RunbookError
from runbook.models import Action, ActionStatus, Incident, IncidentStatus, Phase
from runbook.playbooks.auth import HUMAN_CHECKLIST, inspect_key, rate_limited
from runbook.playbooks.catalog import AUTOMATED, checklist
from runbook.playbooks.diagnosis import RECENT_DEPLOY
from runbook.policy import format_duration
from runbook.sla import escalate
from runbook.thresholds import breached, evaluate
from tasks.health import check_app_health
from tasks.metrics import measure_metrics
from tasks.postgres import (
    create_index,
    diagnose_database,
    plan_for,
    terminate_backends,
    vacuum_tables,
)
from tasks.slack import post_slack_message
from tasks.supabase import raise_auth_rate_limits, redeploy_function
from tasks.vercel import rollback_deployment, verify_production

VERIFY_WINDOW_S = 30.0
WATCH_SAMPLES = 3
VERIFY_ATTEMPTS = 3
SETTLE_S = 60.0
MIN_SETTLE_REAL_S = 1.0


async def within_envelope(
    rt: Runtime, inc: Incident, action: str, target: str, report: PhaseReport
) -> bool:
    """Rate limit per action and target, and the circuit breaker; a refusal escalates."""
    rule = rt.policy.actions.get(action)
    interval = compress(rule.min_interval, rt.speed) if rule else timedelta(0)
    recent: list[Action] = []
    # no interval, no rate limit: asked with since=now, the ledger also returned another
    # incident's rollback recorded a moment after this now(), and held this one back
    if interval > timedelta(0):
        recent = await asyncio.to_thread(
            rt.ledger.recent_actions,
            action,
            target,
            rt.now() - interval,
            statuses=[ActionStatus.APPLIED],
        )
    recent = [
        a for a in recent if a.incident_id != inc.id
    ]  # our own earlier run is idempotency's job
    mine = await asyncio.to_thread(rt.ledger.actions_for, inc.id)
    failures = sum(1 for a in mine if a.kind == action and a.status is ActionStatus.FAILED)
    verdict = envelope_verdict(
        recent_applied=recent,
        failures=failures,
        max_failures=rt.policy.approvals.max_failed_applications,
        min_interval_text=format_duration(rule.min_interval) if rule else "0m",
    )
    if verdict is None:
        return True
    report.skipped.append(f"{action} on {target}: {verdict}")
    await send_escalation(
        rt,
        inc,
        escalate(rt.policy, inc, "safety_envelope", f"{action} held back: {verdict}"),
        Phase.MITIGATE,
    )
    return False


async def allowed(
    rt: Runtime, inc: Incident, action: str, plan: str, report: PhaseReport, target: str = ""
) -> bool:
    """The safety envelope, then the policy's verdict for ``action`` at this severity: auto, approve
    (ask in the UI) or never."""
    if not rt.dry_run and not await within_envelope(rt, inc, action, target, report):
        return False
    mode = rt.policy.action_mode(action, inc.severity)
    if mode == "auto" or rt.dry_run:
        return True
    if mode == "never":
        report.skipped.append(
            f"{action}: the policy never runs it automatically at {inc.severity.value}"
        )
        return False
    wait = compress(rt.policy.approvals.timeout, rt.speed)
    url = approval_url()
    await rt.note(
        inc.id,
        "approval_requested",
        f"{action} needs approval: {plan}" + (f" (answer at {url})" if url else ""),
        phase=Phase.MITIGATE,
        data={"action": action, "url": url},
    )
    await ask_in_chat(rt, inc, action, plan, url, rt.policy.approvals.timeout)
    answer = await ask_approval(f"approve-{action.replace('_', '-')}-{inc.id}", wait)
    if answer is None:
        await send_escalation(
            rt,
            inc,
            escalate(rt.policy, inc, "approval_timeout", f"no answer to approve {action}"),
            Phase.MITIGATE,
        )
        report.skipped.append(f"{action}: no approval before the timeout")
        return False
    verdict = "approved" if answer.approve else "rejected"
    await rt.note(
        inc.id,
        "approval",
        f"{action} {verdict} by {answer.approver}: {answer.reason}",
        phase=Phase.MITIGATE,
        actor=answer.approver or "unknown",
        data={"action": action, "approve": answer.approve, "reason": answer.reason},
    )
    if not answer.approve:
        report.skipped.append(f"{action}: rejected by {answer.approver} ({answer.reason})")
    return answer.approve


async def ask_in_chat(
    rt: Runtime, inc: Incident, action: str, plan: str, url: str | None, answer_within: timedelta
) -> None:
    """Tell the incident channel an action waits for a person, with the link to the approval form."""
    slack = rt.systems.get("slack")
    if slack is None:
        return
    where = f"<{url}|approve or reject it in Prefect>" if url else "approve or reject it in Prefect"
    text = (
        f":raised_hand: INC-{inc.id}: *{action}* needs approval: {plan}. Please {where} within "
        f"{format_duration(answer_within)}; no answer escalates."
    )
    try:
        await post_slack_message(ctx_for(rt, inc.id), slack, f"approval-{action}", text)
    except RunbookError as exc:
        get_run_logger().warning("could not ask for approval in Slack: %s", exc)


async def bad_deploy(rt: Runtime, inc: Incident, report: PhaseReport) -> bool:
    """Roll Vercel back to the last good production deployment and check production serves it."""
    vercel = rt.systems.get("vercel")
    if vercel is None:
        skip(rt, report, "vercel", "rollback")
        return False
    findings = (inc.diagnosis or {}).get("findings", {})
    bad_id = findings.get("last_deploy_id")
    plan = (
        f"roll {vercel.project_id} back from {bad_id or 'the live deployment'} to the last good one"
    )
    if not await allowed(rt, inc, "rollback_deployment", plan, report, target=vercel.project_id):
        return False
    before = inc.detected_at
    if findings.get("last_deploy_at"):
        before = datetime.fromisoformat(findings["last_deploy_at"])
    reason = f"INC-{inc.id}: rollback from {bad_id} ({inc.title})"
    result = await attempt(
        rt, report, "rollback", rollback_deployment(ctx_for(rt, inc.id), vercel, before, reason)
    )
    if result is None:
        return False
    report.data["rollback"] = result
    if result["status"] == "nothing_to_do":
        report.found.append("no earlier production deployment to roll back to")
        return False
    if result["status"] == "skipped":
        report.done.append(f"dry run: would roll back {result['from']} -> {result['to']}")
        return False
    report.done.append(
        f"rolled back {result['from']} -> {result['to']}"
        + (" (done earlier, not repeated)" if result["already_done"] else "")
    )
    check = await attempt(rt, report, "verify production", verify_production(vercel, result["to"]))
    ok = bool(check and check["ok"])
    report.checked.append(
        f"production serves {check['live'] if check else '?'}: {'ok' if ok else 'NOT the rollback target'}"
    )
    return ok


async def high_error_rate(rt: Runtime, inc: Incident, report: PhaseReport) -> bool:
    """Errors rising after a deploy: roll back. Otherwise hand over the error summary to a person."""
    findings = (inc.diagnosis or {}).get("findings", {})
    if findings.get("last_deploy_at"):
        deployed = datetime.fromisoformat(findings["last_deploy_at"])
        if timedelta(0) <= inc.detected_at - deployed <= RECENT_DEPLOY:
            report.found.append(
                f"the rise began after deployment {findings.get('last_deploy_id')}: rolling back"
            )
            return await bad_deploy(rt, inc, report)
    types = findings.get("error_types") or {}
    summary = (
        ", ".join(f"{k} x{v}" for k, v in sorted(types.items(), key=lambda kv: -kv[1]))
        or "no error types"
    )
    reason = f"error rate high without a recent deploy; errors: {summary}"
    report.found.append(reason)
    await send_escalation(rt, inc, escalate(rt.policy, inc, "needs_human", reason), Phase.MITIGATE)
    return False


async def auth_failure(rt: Runtime, inc: Incident, report: PhaseReport) -> bool:
    """Check the keys, raise the auth rate limits when 429s dominate, and hand the rest to a person."""
    supa = rt.systems.get("supabase")
    if supa is None:
        skip(rt, report, "supabase", "auth mitigation")
        return False
    now = rt.now()
    keys = [inspect_key("anon key", supa.anon_key.get_secret_value(), now)]
    if supa.service_role_key is not None:
        keys.append(inspect_key("service role key", supa.service_role_key.get_secret_value(), now))
    for k in keys:
        state = (
            "not a JWT"
            if not k.is_jwt
            else ("EXPIRED" if k.expired else f"valid until {k.expires_at}")
        )
        report.checked.append(f"{k.name}: {state}")
    expired = [k.name for k in keys if k.expired]
    findings = (inc.diagnosis or {}).get("findings", {})
    summary = {
        "rate_limited": findings.get("auth_rate_limited", 0),
        "errors": findings.get("auth_errors", 0),
    }
    mitigated = False
    if rate_limited(summary):
        plan = "raise the auth rate limits x2 (429s dominate the auth errors)"
        if await allowed(
            rt, inc, "raise_auth_rate_limits", plan, report, target=f"supabase:{supa.project_ref}"
        ):
            result = await attempt(
                rt,
                report,
                "raise auth rate limits",
                raise_auth_rate_limits(ctx_for(rt, inc.id), supa),
            )
            if result is not None:
                report.done.append(
                    f"auth rate limits raised: {result['changes']} ({result['status']})"
                )
                mitigated = result["status"] == "applied"
    if expired or not mitigated:
        steps = "; ".join(HUMAN_CHECKLIST)
        why = f"expired: {', '.join(expired)}; " if expired else ""
        await send_escalation(
            rt,
            inc,
            escalate(rt.policy, inc, "needs_human", f"auth failure: {why}by hand: {steps}"),
            Phase.MITIGATE,
        )
    return mitigated and not expired


async def db_degradation(rt: Runtime, inc: Incident, report: PhaseReport) -> bool:
    """Cancel then terminate long-running backends (never protected ones), vacuum bloated tables,
    and record index recommendations for the RCA (an index is never created here)."""
    target = rt.postgres()
    if target is None:
        skip(rt, report, "postgres", "database mitigation")
        return False
    diagnosis = await attempt(rt, report, "diagnose database", diagnose_database(target))
    if diagnosis is None:
        return False
    plan = plan_for(target, diagnosis)
    for b in plan.backends:
        verdict = "stop" if b.act else "spare"
        report.checked.append(
            f"backend {b.pid} ({b.role}, {b.application_name or '-'}): {verdict}: {b.reason}"
        )
    owner = rt.policy.escalation_level(0).role
    for hint in plan.index_hints:
        await rt.note(
            inc.id,
            "recommendation",
            f"{hint.statement} ({hint.reason})",
            phase=Phase.MITIGATE,
            data={"table": hint.table, "column": hint.column},  # the RCA's "add index" item
        )
        await asyncio.to_thread(
            rt.ledger.add_action_item,
            inc.id,
            f"Consider: {hint.statement}",
            owner=owner,
            due_at=rt.now() + timedelta(days=7),
            source="rca",
        )
    ctx, acted = ctx_for(rt, inc.id), False
    if plan.pids and await allowed(
        rt,
        inc,
        "terminate_backends",
        f"cancel, then terminate, {len(plan.pids)} long-running backends",
        report,
        target=target.describe(),
    ):
        result = await attempt(
            rt, report, "terminate backends", terminate_backends(ctx, target, plan)
        )
        if result is not None:
            outcomes = (
                ", ".join(f"{r['pid']} {r['outcome']}" for r in result["results"])
                or result["status"]
            )
            report.done.append(f"backends: {outcomes}")
            acted = result["status"] == "applied"
    elif not plan.pids:
        report.found.append("no backend past the threshold that may be stopped")
    for hint in plan.index_hints:
        if hint.column is None:
            continue
        if await allowed(rt, inc, "create_index", hint.statement, report, target=hint.table):
            result = await attempt(
                rt,
                report,
                f"create index on {hint.table}",
                create_index(ctx, target, hint.table, hint.column),
            )
            if result is not None:
                built = result["result"]
                report.done.append(
                    f"index {built.get('index')}: {built.get('outcome')} {built.get('detail', '')}"
                )
    vacuum_plan = f"VACUUM ANALYZE {', '.join(plan.vacuum_tables)}"
    if plan.vacuum_tables and await allowed(
        rt, inc, "vacuum_analyze", vacuum_plan, report, target=target.describe()
    ):
        result = await attempt(rt, report, "vacuum", vacuum_tables(ctx, target, plan.vacuum_tables))
        if result is not None:
            report.done.append(f"vacuum: {result['status']}")
            acted = acted or result["status"] == "applied"
    return acted


async def edge_timeouts(rt: Runtime, inc: Incident, report: PhaseReport) -> bool:
    """Redeploy the last good version (the kept source of the version before) of each timing-out
    function, and check it answers."""
    supa = rt.systems.get("supabase")
    if supa is None:
        skip(rt, report, "supabase", "function redeploy")
        return False
    slow = sorted((inc.diagnosis or {}).get("findings", {}).get("function_timeouts") or {})
    fixed = 0
    for slug in slow:
        async with supa.get_client() as client:
            current = await attempt(
                rt, report, f"read {slug}", client.get_function(supa.project_ref, slug)
            )
        if current is None:
            continue
        snap = await asyncio.to_thread(
            rt.ledger.previous_function_snapshot, supa.project_ref, slug, current.version
        )
        if snap is None:
            report.found.append(
                f"{slug}: no kept source older than version {current.version}; redeploy by hand"
            )
            continue
        plan = f"redeploy {slug} with the source of version {snap.version} (now {current.version})"
        if not await allowed(
            rt, inc, "redeploy_function", plan, report, target=f"supabase:{supa.project_ref}:{slug}"
        ):
            continue
        result = await attempt(
            rt,
            report,
            f"redeploy {slug}",
            redeploy_function(
                ctx_for(rt, inc.id), supa, slug, snap.version, snap.body, snap.entrypoint_path
            ),
        )
        if result is None:
            continue
        report.done.append(
            f"{slug}: source of v{snap.version} redeployed as v{result['new_version']} "
            f"({result['status']}); direct call {'ok' if result['probe_ok'] else 'FAILING'}"
        )
        if result["status"] == "applied" and result["probe_ok"]:
            fixed += 1
    if fixed < len(slow) or not slow:
        steps = "; ".join(checklist("edge-timeouts"))
        await send_escalation(
            rt,
            inc,
            escalate(
                rt.policy,
                inc,
                "needs_human",
                f"edge-function timeouts not all fixed; by hand: {steps}",
            ),
            Phase.MITIGATE,
        )
    return bool(slow) and fixed == len(slow)


PLAYBOOKS = {
    "bad-deploy": bad_deploy,
    "high-error-rate": high_error_rate,
    "auth-failure": auth_failure,
    "db-degradation": db_degradation,
    "edge-timeouts": edge_timeouts,
}


async def healthy(rt: Runtime, report: PhaseReport, label: str) -> bool | None:
    """Health check and metrics under the alert thresholds; None when nothing can be measured."""
    app = rt.systems.get("app")
    if app is None:
        skip(rt, report, "app", f"{label} (health and metrics)")
        return None
    window = max(0.3, VERIFY_WINDOW_S / rt.speed)
    health, readings = await asyncio.gather(
        attempt(rt, report, label, check_app_health(app), escalate_on_4xx=False),
        attempt(rt, report, label, measure_metrics(app, window), escalate_on_4xx=False)
        if app.metrics_url
        else asyncio.sleep(0, result=None),
    )
    bad = breached(evaluate(rt.policy, readings)) if readings is not None else []
    ok = bool(health and health["ok"]) and not bad
    detail = ", ".join(f"{b.metric} {b.value:.3g}" for b in bad) or "all under alert thresholds"
    report.checked.append(
        f"{label}: health {'ok' if health and health['ok'] else 'FAILING'}; {detail}"
    )
    return ok


async def verify(rt: Runtime, report: PhaseReport) -> bool:
    """Health and metrics back under the thresholds; a system that needs a moment to settle (a pool
    reconnecting, a cache refilling) gets VERIFY_ATTEMPTS tries, SETTLE_S of clock time apart."""
    for attempt_no in range(1, VERIFY_ATTEMPTS + 1):
        if await healthy(rt, report, f"verify {attempt_no}/{VERIFY_ATTEMPTS}"):
            return True
        if attempt_no < VERIFY_ATTEMPTS:
            await asyncio.sleep(max(MIN_SETTLE_REAL_S, SETTLE_S / rt.speed))
    return False


MITIGATION_KINDS = frozenset(
    {
        "rollback_deployment",
        "terminate_backends",
        "vacuum_tables",
        "redeploy_function",
        "raise_auth_rate_limits",
    }
)


async def mark_unverified(rt: Runtime, incident_id: int, report: PhaseReport) -> list[str]:
    """Record this phase's applied mitigation actions as failed: they ran, but did not fix it (the
    circuit breaker counts these)."""
    failed = []
    for action in await asyncio.to_thread(rt.ledger.actions_for, incident_id):
        if (
            action.kind in MITIGATION_KINDS
            and action.status is ActionStatus.APPLIED
            and action.updated_at is not None
            and action.updated_at >= report.started_at
        ):
            result = {**action.result, "verification": "failed", "checked": report.checked[-1:]}
            await asyncio.to_thread(
                rt.ledger.finish_action, action.idempotency_key, ActionStatus.FAILED, result
            )
            failed.append(action.kind)
    return failed


async def watch_for_recurrence(rt: Runtime, inc: Incident, report: PhaseReport) -> bool:
    """Sample health and metrics across the policy's recurrence window; False if it came back."""
    window = compress(rt.policy.monitoring.recurrence_watch, rt.speed).total_seconds()
    pause = max(0.0, window / WATCH_SAMPLES - VERIFY_WINDOW_S / rt.speed)
    for i in range(WATCH_SAMPLES):
        await asyncio.sleep(pause)
        if await healthy(rt, report, f"watch {i + 1}/{WATCH_SAMPLES}") is False:
            return False
    return True


@flow(name="mitigate", flow_run_name="INC-{incident_id} mitigate")
async def mitigate(incident_id: int, options: Options | None = None) -> PhaseReport:
    """Mitigate & Stabilize: run the diagnosis's playbook, verify, watch for recurrence, update people.

    Args:
        incident_id: the ledger's incident id (its diagnosis picks the playbook).
        options: dry run, time compression, policy, ledger and block names.

    Returns:
        The phase report; ``data["mitigated"]`` and ``data["verified"]`` say how it ended. A verified
        mitigation moves the incident to monitoring and, when no recurrence is seen, to resolved.
    """
    options = options or Options()
    rt = await build_runtime(options)
    inc = await rt.incident(incident_id)
    deadline = rt.deadline(Phase.MITIGATE, inc)
    report = PhaseReport(
        incident_id=incident_id, phase=Phase.MITIGATE, started_at=rt.now(), deadline=deadline
    )
    scenario = inc.scenario
    playbook = PLAYBOOKS.get(scenario or "")
    mitigated = verified = False
    if playbook is None:
        steps = "; ".join(checklist(scenario))
        reason = (
            f"no automated playbook for {scenario or 'an undiagnosed incident'}; by hand: {steps}"
        )
        report.found.append(reason)
        await send_escalation(
            rt, inc, escalate(rt.policy, inc, "needs_human", reason), Phase.MITIGATE
        )
    else:
        report.checked.append(f"playbook: {scenario} ({AUTOMATED.get(scenario or '', '')})")
        await healthy(rt, report, "before")  # the state the actions start from, for the record
        mitigated = await playbook(rt, inc, report)
    if mitigated:
        verified = await verify(rt, report)
        if verified:
            inc = await asyncio.to_thread(
                rt.ledger.transition,
                incident_id,
                IncidentStatus.MONITORING,
                reason="mitigation verified",
            )
            if await watch_for_recurrence(rt, inc, report):
                await asyncio.to_thread(
                    rt.ledger.transition,
                    incident_id,
                    IncidentStatus.RESOLVED,
                    reason="no recurrence during the watch window",
                )
                report.done.append("resolved: no recurrence during the watch window")
            else:
                verified = False
                await asyncio.to_thread(
                    rt.ledger.transition,
                    incident_id,
                    IncidentStatus.MITIGATING,
                    reason="the problem came back while we watched",
                )
                await send_escalation(
                    rt,
                    inc,
                    escalate(
                        rt.policy,
                        inc,
                        "recurrence",
                        f"the problem recurred after mitigation ({report.checked[-1]})",
                    ),
                    Phase.MITIGATE,
                )
        else:
            failed = await mark_unverified(rt, incident_id, report)
            await send_escalation(
                rt,
                inc,
                escalate(
                    rt.policy,
                    inc,
                    "verify_failed",
                    f"mitigation applied but not verified ({', '.join(failed) or 'no action'} marked failed)",
                ),
                Phase.MITIGATE,
            )
    await update_stakeholders(rt, inc, report, mitigated, verified)
    report.data.update(mitigated=mitigated, verified=verified, scenario=scenario)
    report.ended_at = rt.now()
    await note_skips(rt, report)
    await publish(report)
    return report


async def update_stakeholders(
    rt: Runtime, inc: Incident, report: PhaseReport, mitigated: bool, verified: bool
) -> None:
    slack = rt.systems.get("slack")
    if slack is None:
        return
    if verified:
        text = f":large_green_circle: INC-{inc.id} mitigated and verified: " + "; ".join(
            report.done
        )
    elif mitigated:
        text = f":warning: INC-{inc.id} mitigation applied but not verified; a person is needed."
    else:
        text = f":warning: INC-{inc.id} not mitigated automatically: " + "; ".join(
            report.found[-1:]
        )
    result: dict[str, Any] | None = await attempt(
        rt,
        report,
        "stakeholder update",
        post_slack_message(ctx_for(rt, inc.id), slack, "mitigate-update", text),
    )
    if result:
        report.done.append("stakeholders updated in Slack")
