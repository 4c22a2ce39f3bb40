"""The daily summary by email (the runbook's "Email: Daily summaries"), deployed on a daily cron.

Incidents of the last day by severity, their SLA misses, every open action item (overdue first) and
MTTA/MTTR of the last day against the seven days before, sent to the policy's
``routing.team_email_to`` through the ``EmailServerCredentials`` block, published as a markdown
artifact and returned.
"""

from __future__ import annotations

import asyncio
import html
from datetime import datetime, timedelta
from typing import Any

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact
from prefect.logging import get_run_logger
from prefect_email import email_send_message

from flows.runtime import Options, build_runtime
from runbook.stats import collect, digest_markdown

ARTIFACT_KEY = "daily-digest"


@flow(name="digest", flow_run_name="daily digest")
async def digest(options: Options | None = None, until: datetime | None = None) -> dict[str, Any]:
    """Email the daily incident summary and return it.

    Args:
        options: ledger URL, policy file (its routing.team_email_to says who gets it) and the
            email block's name (systems.email).
        until: the end of the day summarized (default: now).

    Returns:
        ``markdown`` (the summary), ``summary`` (the numbers), ``trend`` and ``sent_to`` (empty when
        nothing was sent, with ``not_sent`` saying why).
    """
    options = options or Options()
    rt = await build_runtime(options)
    log = get_run_logger()
    now = until or rt.now()
    facts, _ = await asyncio.to_thread(collect, rt.ledger, now - timedelta(days=8), now)
    open_items = await asyncio.to_thread(rt.ledger.action_items, open_only=True)
    text, day, tr = digest_markdown(facts, open_items, now)
    out: dict[str, Any] = {
        "markdown": text,
        "summary": day.as_json(),
        "trend": tr.model_dump(),
        "sent_to": [],
    }
    await acreate_markdown_artifact(
        key=ARTIFACT_KEY, markdown=text, description=f"Daily incident summary {now:%Y-%m-%d}"
    )
    routing = rt.policy.routing
    creds = rt.systems.get("email")
    reason = None
    if not routing.email_daily_summary:
        reason = "the policy's routing.email_daily_summary is off"
    elif not routing.team_email_to:
        reason = "nobody to send it to: set routing.team_email_to in the policy"
    elif creds is None:
        reason = rt.systems.hint("email")
    if reason is not None:
        log.warning("daily digest not emailed: %s", reason)
        out["not_sent"] = reason
        return out
    subject = (
        f"Incidents {now:%Y-%m-%d}: {day.incidents} new, {len(day.sla_misses)} SLA miss(es), "
        f"{len(open_items)} open action item(s)"
    )
    await email_send_message.with_options(retries=2, retry_delay_seconds=5)(
        subject=subject,
        msg=f"<pre>{html.escape(text)}</pre>",
        msg_plain=text,
        email_server_credentials=creds,
        email_from=routing.email_sender,
        email_to=routing.team_email_to,
    )
    out["sent_to"] = list(routing.team_email_to)
    log.info("daily digest sent to %s", ", ".join(routing.team_email_to))
    return out
