"""The daily digest emails each UTC day's summary once: a re-run of a sent day (or one being sent)
emails nothing and says why, resend=True sends again, a failed send is recorded and the next run
sends it, and runs with nothing to send leave no record. Against the Prefect test server, the
ledger and a local SMTP server."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from flows.digest import digest, send_error
from flows.runtime import Options, get_ledger
from runbook.clock import utcnow
from tests.flows.conftest import TEST_POLICY, smtp_server

pytestmark = pytest.mark.timeout(90)
TEAM = "team@example.com"
REFUSING_BLOCK = "digest-refused"


class RefusingSink:
    """An SMTP server that refuses every message (a full mailbox, a spam filter)."""

    def __init__(self) -> None:
        self.attempts = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        self.attempts += 1
        return "554 5.7.1 digest refused"


@pytest.fixture(scope="module")
def refusing_smtp(flow_env: Any) -> Iterator[RefusingSink]:
    """The refusing SMTP server, saved as the EmailServerCredentials block ``digest-refused``."""
    from prefect_email import EmailServerCredentials

    sink = RefusingSink()
    with smtp_server(sink) as port:
        EmailServerCredentials(smtp_server="127.0.0.1", smtp_port=port, smtp_type="INSECURE").save(
            REFUSING_BLOCK, overwrite=True
        )
        yield sink


@pytest.fixture
def digest_options(options: Options, tmp_path: Path) -> Options:
    """The flow tests' options (a fresh ledger), with a policy that emails the team the digest."""
    policy = tmp_path / "digest-policy.toml"
    policy.write_text(TEST_POLICY + f'\n[routing]\nteam_email_to = ["{TEAM}"]\n')
    return options.model_copy(update={"policy_path": str(policy)})


@pytest.fixture
def until() -> datetime:
    """07:00 UTC today, when the daily cron fires; the digest's day is today's UTC date."""
    return utcnow().astimezone(UTC).replace(hour=7, minute=0, second=0, microsecond=0)


def _digest_mails(sink: Any, since: int) -> list[dict[str, Any]]:
    return [m for m in sink.messages[since:] if "Subject: Incidents" in m["data"]]


async def test_a_second_run_for_the_same_day_emails_nothing_and_says_why(
    world, digest_options, mail_sink, until, caplog
) -> None:
    """The first run of a day emails the team once and records the day 'sent'; a second run for the
    same UTC day (even three hours later) emails nothing, and its not_sent and a log warning say when
    and to whom the day was emailed and that resend=True sends it again. Its summary (up to its own
    end) is still returned."""
    sink, _ = mail_sink
    before = len(sink.messages)
    first = await digest(options=digest_options, until=until)
    assert first["sent_to"] == [TEAM] and "not_sent" not in first
    send = get_ledger(digest_options.ledger_url).digest_send(f"{until:%Y-%m-%d}")
    assert send is not None and send.state == "sent" and send.sent_to == [TEAM]

    with caplog.at_level(logging.WARNING):
        again = await digest(options=digest_options, until=until + timedelta(hours=3))
    assert len(_digest_mails(sink, before)) == 1
    assert again["sent_to"] == [] and "10:00 UTC" in again["markdown"]
    reason = again["not_sent"]
    assert reason.startswith(f"already emailed for {until:%Y-%m-%d} at ")
    assert f"{send.updated_at:%Y-%m-%d %H:%M:%S} UTC to {TEAM}" in reason
    assert reason.endswith("run with resend=True to send it again")
    assert any(reason in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


async def test_resend_emails_a_sent_day_again(world, digest_options, mail_sink, until) -> None:
    """resend=True emails a day already sent once more and records it 'sent' again, with the time of
    the new send."""
    sink, _ = mail_sink
    before = len(sink.messages)
    await digest(options=digest_options, until=until)
    ledger = get_ledger(digest_options.ledger_url)
    first = ledger.digest_send(f"{until:%Y-%m-%d}")
    out = await digest(options=digest_options, until=until, resend=True)
    assert out["sent_to"] == [TEAM] and "not_sent" not in out
    assert len(_digest_mails(sink, before)) == 2
    again = ledger.digest_send(f"{until:%Y-%m-%d}")
    assert first is not None and again is not None
    assert again.state == "sent" and again.updated_at > first.updated_at


async def test_a_day_being_sent_is_not_sent_again_unless_resend(
    world, digest_options, mail_sink, until
) -> None:
    """A day another run has claimed ('sending': in flight, or a run that crashed mid-send) is not
    emailed, and not_sent says so with the resend hint; resend=True emails it and records 'sent'."""
    sink, _ = mail_sink
    before = len(sink.messages)
    ledger = get_ledger(digest_options.ledger_url)
    _, claimed = ledger.claim_digest(f"{until:%Y-%m-%d}")
    assert claimed
    out = await digest(options=digest_options, until=until)
    assert out["sent_to"] == [] and _digest_mails(sink, before) == []
    assert out["not_sent"].startswith(f"another run is emailing the digest for {until:%Y-%m-%d}")
    assert "run with resend=True to send it again" in out["not_sent"]

    forced = await digest(options=digest_options, until=until, resend=True)
    assert forced["sent_to"] == [TEAM] and len(_digest_mails(sink, before)) == 1
    send = ledger.digest_send(f"{until:%Y-%m-%d}")
    assert send is not None and send.state == "sent"


async def test_a_failed_send_is_recorded_and_the_next_run_sends(
    world, digest_options, mail_sink, refusing_smtp, until
) -> None:
    """When the SMTP server refuses the digest (after the task's retries) the run fails and the day
    is recorded 'failed' with the error's type and the server's reason; the next run takes the day
    over and emails it, and the day is 'sent'."""
    sink, _ = mail_sink
    before = len(sink.messages)
    refused = digest_options.model_copy(
        update={"systems": digest_options.systems.model_copy(update={"email": REFUSING_BLOCK})}
    )
    attempts = refusing_smtp.attempts
    with pytest.raises(Exception, match="digest refused"):
        await digest(options=refused, until=until)
    assert (
        refusing_smtp.attempts == attempts + 3
    )  # the first try and email_send_message's 2 retries
    ledger = get_ledger(digest_options.ledger_url)
    failed = ledger.digest_send(f"{until:%Y-%m-%d}")
    assert failed is not None and failed.state == "failed" and failed.sent_to == []
    assert failed.error is not None and failed.error.startswith("SMTPDataError: ")
    assert "554" in failed.error and "digest refused" in failed.error

    out = await digest(options=digest_options, until=until)
    assert out["sent_to"] == [TEAM] and len(_digest_mails(sink, before)) == 1
    sent = ledger.digest_send(f"{until:%Y-%m-%d}")
    assert sent is not None and sent.state == "sent" and sent.error is None


async def test_nothing_to_send_leaves_no_record(world, options, until, tmp_path) -> None:
    """With the summary switched off, or nobody to send it to, the digest emails nothing, says why,
    and records no send for the day (so turning it on later the same day still sends)."""
    off = tmp_path / "off.toml"
    off.write_text(
        TEST_POLICY + '\n[routing]\nemail_daily_summary = false\nteam_email_to = ["x@y"]\n'
    )
    for policy, why in ((off, "email_daily_summary is off"), (None, "nobody to send it to")):
        run_options = options.model_copy(update={"policy_path": str(policy)}) if policy else options
        out = await digest(options=run_options, until=until)
        assert out["sent_to"] == [] and why in out["not_sent"]
    assert get_ledger(options.ledger_url).digest_send(f"{until:%Y-%m-%d}") is None


def test_send_error_names_the_failure_without_the_password() -> None:
    """The error recorded for a failed send is the exception's type and message, with the email
    block's password masked should the message ever contain it."""
    from prefect_email import EmailServerCredentials

    creds = EmailServerCredentials(username="digest", password=SecretStr("hunter2-secret"))
    text = send_error(OSError("login hunter2-secret refused"), creds)
    assert text == "OSError: login *** refused"
    plain = EmailServerCredentials()
    assert send_error(TimeoutError("timed out"), plain) == "TimeoutError: timed out"
