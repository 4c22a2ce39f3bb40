"""The daily summary by email (the runbook's "Email: Daily summaries"), deployed on a daily cron.

Incidents of the last day by severity, their SLA misses, every open action item (overdue first) and
MTTA/MTTR of the last day against the seven days before, sent to the policy's
``routing.team_email_to`` through the ``EmailServerCredentials`` block, published as a markdown
artifact and returned.

Each day's digest is emailed once. The day is the UTC calendar date of the summary's end (``until``,
default now), and the ledger's ``digest_sends`` row for that day is its idempotency key: before
sending, the run claims the day (``Ledger.claim_digest``). Only the run that claims it sends; it
records ``sent`` with the recipients, or ``failed`` with the error's type and message (never the
credentials) and fails. A re-run of the same day (a retry from the UI, the cron firing on two
servers, a re-run after a crash after the mail went out) sends nothing and says why in ``not_sent``
and the log: the day was already emailed (when, to whom), or another run is sending it (or one
crashed mid-send). A ``failed`` day is taken over and sent by the next run. ``resend=True`` sends
regardless and records ``sent`` again. The artifact is published on every run; when nothing would
be sent anyway (summary off, nobody to send to, no email block) no row is made.
"""

from __future__ import annotations

import asyncio
import html
from datetime import datetime, timedelta
from typing import Any

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact
from prefect.logging import get_run_logger
from prefect_email import EmailServerCredentials, email_send_message

from flows.runtime import Options, build_runtime
from runbook.ledger.digests import DigestSend, digest_day
from runbook.stats import collect, digest_markdown

ARTIFACT_KEY = "daily-digest"
RESEND_HINT = "run with resend=True to send it again"


def not_sent_reason(send: DigestSend) -> str:
    """Why a run that could not claim the day sends nothing, with the way to send anyway."""
    if send.state == "sent":
        return (
            f"already emailed for {send.day} at {send.updated_at:%Y-%m-%d %H:%M:%S} UTC "
            f"to {', '.join(send.sent_to) or 'nobody'}; {RESEND_HINT}"
        )
    return (
        f"another run is emailing the digest for {send.day} (claimed at "
        f"{send.updated_at:%Y-%m-%d %H:%M:%S} UTC), or one crashed while sending it; {RESEND_HINT}"
    )


def send_error(exc: BaseException, creds: EmailServerCredentials) -> str:
    """The failure as ``Type: message`` for the ledger, with the block's password cut out."""
    text = f"{type(exc).__name__}: {exc}"
    password = creds.password.get_secret_value() if creds.password else ""
    return text.replace(password, "***") if password else text


@flow(name="digest", flow_run_name="daily digest")
async def digest(
    options: Options | None = None, until: datetime | None = None, resend: bool = False
) -> dict[str, Any]:
    """Email the daily incident summary, once per UTC day, and return it.

    Args:
        options: ledger URL, policy file (its routing.team_email_to says who gets it) and the
            email block's name (systems.email).
        until: the end of the day summarized (default: now); its UTC date is the day that is
            emailed at most once.
        resend: email it even if this day's digest was already sent (or is being sent).

    Returns:
        ``markdown`` (the summary), ``summary`` (the numbers), ``trend`` and ``sent_to`` (empty when
        nothing was sent, with ``not_sent`` saying why).

    Raises:
        Exception: the email could not be sent (after the task's retries); the day is recorded
            ``failed`` and the next run sends it (a failed resend of a day that was ``sent`` or
            ``sending`` leaves that record as it was).
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

    utc_day = digest_day(now)
    send, claimed = await asyncio.to_thread(rt.ledger.claim_digest, utc_day)
    if not claimed and not resend:
        out["not_sent"] = not_sent_reason(send)
        log.warning("daily digest not emailed: %s", out["not_sent"])
        return out
    if not claimed:
        log.warning("daily digest for %s is %s; resending it (resend=True)", utc_day, send.state)
    subject = (
        f"Incidents {now:%Y-%m-%d}: {day.incidents} new, {len(day.sla_misses)} SLA miss(es), "
        f"{len(open_items)} open action item(s)"
    )
    sent_to = list(routing.team_email_to)
    try:
        await email_send_message.with_options(retries=2, retry_delay_seconds=5)(
            subject=subject,
            msg=f"<pre>{html.escape(text)}</pre>",
            msg_plain=text,
            email_server_credentials=creds,
            email_from=routing.email_sender,
            email_to=routing.team_email_to,
        )
    except Exception as exc:
        # a resend over a day sent (or being sent) by another run leaves that run's record alone
        if claimed:
            await asyncio.to_thread(
                rt.ledger.finish_digest, utc_day, "failed", error=send_error(exc, creds)
            )
        raise
    await asyncio.to_thread(rt.ledger.finish_digest, utc_day, "sent", sent_to)
    out["sent_to"] = sent_to
    log.info("daily digest for %s sent to %s", utc_day, ", ".join(sent_to))
    return out
