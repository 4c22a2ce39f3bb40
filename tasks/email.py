"""Email through prefect-email's EmailServerCredentials: customer communication, sent once per key."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from typing import Any

from prefect import task
from prefect_email import EmailServerCredentials

from tasks._retry import VENDOR_TASK
from tasks.context import ActionContext


def _send(creds: EmailServerCredentials, message: EmailMessage) -> None:
    with creds.get_server() as server:
        server.send_message(message)


@task(name="send-email", **VENDOR_TASK)
async def send_email(
    ctx: ActionContext,
    creds: EmailServerCredentials,
    purpose: str,
    sender: str,
    to: list[str],
    subject: str,
    body: str,
) -> dict[str, Any]:
    """Send one email for this incident and ``purpose`` ("customer-resolved" ...), at most once."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, ", ".join(to), subject
    message.set_content(body)

    async def apply() -> dict[str, Any]:
        try:
            await asyncio.to_thread(_send, creds, message)
        except (
            OSError
        ) as exc:  # connection refused, timeouts, SMTP errors (SMTPException is an OSError)
            from runbook.errors import TransientError

            raise TransientError(f"email could not be sent: {type(exc).__name__}: {exc}") from exc
        return {"to": to, "subject": subject}

    outcome = await ctx.act(
        "send_email",
        f"email:{purpose}",
        {"to": to, "subject": subject},
        apply,
        key=ctx.key("email", purpose),
    )
    return {"status": outcome.status.value, "already_done": outcome.already_done}
