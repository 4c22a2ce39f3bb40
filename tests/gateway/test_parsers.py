"""Each sender's parser on its documented payload, and on what it must refuse."""

from __future__ import annotations

import json

import pytest

from runbook.gateway.parsers import PARSERS, ParseError
from runbook.gateway.parsers._common import sanitize
from runbook.models import AlertStatus, Severity
from tests.gateway import payloads as p


def test_alertmanager_group_is_the_dedup_key_and_delivery_includes_status() -> None:
    """Alerts of one group share a dedup key; firing and resolved of one alert are different deliveries."""
    body = p.alertmanager(p.am_alert(fp="a"), p.am_alert(fp="b"))
    first, second = PARSERS["alertmanager"](body, {})
    resolved = PARSERS["alertmanager"](p.alertmanager(p.am_alert(status="resolved", fp="a")), {})[0]
    assert first.dedup_key == second.dedup_key == 'alertmanager:{}:{alertname="HighErrorRate"}'
    assert first.delivery_id != second.delivery_id
    assert resolved.delivery_id != first.delivery_id and resolved.status == AlertStatus.RESOLVED
    assert first.ended_at is None  # Go's zero time means "still firing"
    assert first.severity_hint == Severity.P1 and first.service == "checkout"
    assert first.summary == "HighErrorRate on checkout"


def test_alertmanager_repeat_notification_is_the_same_delivery() -> None:
    """A repeat notification of a still-firing alert has the same delivery id (a redelivery)."""
    one = PARSERS["alertmanager"](p.alertmanager(), {})[0]
    two = PARSERS["alertmanager"](p.alertmanager(), {})[0]
    assert one.delivery_id == two.delivery_id


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid UTF-8 JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"alerts": []}', "non-empty list"),
        (b'{"alerts": [{"labels": {"a": "b"}, "status": "burning"}]}', "status must be"),
        (b'{"alerts": [{"labels": {"a": {"x": 1}}, "status": "firing"}]}', "alerts[0].labels.a"),
        (b'{"alerts": [{"status": "firing"}]}', "must name the alert"),
        (b'{"alerts": [{"labels": {"a": "b"}, "status": "firing", "startsAt": "yesterday"}]}',
         "RFC 3339"),
    ],
)  # fmt: skip
def test_alertmanager_refuses_malformed_bodies_with_the_reason(body: bytes, reason: str) -> None:
    """A malformed Alertmanager body raises ParseError naming what is wrong."""
    with pytest.raises(ParseError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        PARSERS["alertmanager"](body, {})


def test_grafana_keys_by_org_and_fingerprint() -> None:
    """Grafana alerts are keyed by org and fingerprint and keep the dashboard link."""
    alert = PARSERS["grafana"](p.grafana(fp="xyz"), {})[0]
    assert alert.dedup_key == "grafana:1:xyz"
    assert "https://grafana.example.com/d/abc" in alert.links


def test_pagerduty_event_uses_webhook_id_and_incident() -> None:
    """A PagerDuty event is keyed by the PD incident; its delivery id is X-Webhook-Id."""
    alert = PARSERS["pagerduty"](p.pagerduty(), {"X-Webhook-Id": "wh-9"})[0]
    resolved = PARSERS["pagerduty"](p.pagerduty("incident.resolved"), {"x-webhook-id": "wh-10"})[0]
    assert (alert.dedup_key, alert.delivery_id, alert.service) == (
        "pagerduty:PGR0VU2",
        "wh-9",
        "API Service",
    )
    assert alert.severity_hint == Severity.P1 and alert.status == AlertStatus.FIRING
    assert resolved.status == AlertStatus.RESOLVED and resolved.dedup_key == alert.dedup_key


def test_pagerduty_ping_carries_no_alert_and_missing_type_is_refused() -> None:
    """A non-incident event yields no alert; an event without event_type is refused."""
    ping = json.dumps({"event": {"id": "x", "event_type": "pagey.ping", "data": {}}}).encode()
    assert PARSERS["pagerduty"](ping, {}) == []
    with pytest.raises(ParseError, match="event_type"):
        PARSERS["pagerduty"](b'{"event": {"id": "x"}}', {})


def test_sentry_metric_alert_and_issue_resources() -> None:
    """Sentry metric alerts key on the alert incident, issues on the issue; Request-ID is the delivery."""
    headers = {"sentry-hook-resource": "metric_alert", "request-id": "r-1"}
    alert = PARSERS["sentry"](p.sentry_metric_alert(), headers)[0]
    resolved = PARSERS["sentry"](p.sentry_metric_alert("resolved"), headers)[0]
    issue_body = json.dumps({"action": "created", "data": {"issue": {
        "id": "42", "title": "ZeroDivisionError", "shortId": "API-1", "level": "error",
        "web_url": "https://sentry.io/issues/42/", "project": {"slug": "api"}}}}).encode()  # fmt: skip
    issue = PARSERS["sentry"](issue_body, {"sentry-hook-resource": "issue", "request-id": "r-2"})[0]
    assert (alert.dedup_key, alert.delivery_id) == ("sentry:metric_alert:6", "r-1")
    assert resolved.status == AlertStatus.RESOLVED
    assert (issue.dedup_key, issue.service, issue.severity_hint) == (
        "sentry:issue:42",
        "api",
        Severity.P2,
    )
    installation = PARSERS["sentry"](
        b'{"action": "created", "data": {}}', {"sentry-hook-resource": "installation"}
    )
    assert installation == []
    with pytest.raises(ParseError, match="Sentry-Hook-Resource"):
        PARSERS["sentry"](p.sentry_metric_alert(), {})


def test_datadog_recommended_template_and_recovery() -> None:
    """Datadog keys on the alert cycle, takes tags as labels and 'Recovered' as resolved."""
    alert = PARSERS["datadog"](p.datadog(), {})[0]
    recovered = PARSERS["datadog"](p.datadog("Recovered", event_id="ev-2"), {})[0]
    assert (alert.dedup_key, alert.delivery_id, alert.service) == ("datadog:cycle-1", "ev-1", "api")
    assert alert.labels["env"] == "prod" and alert.started_at is not None
    assert recovered.status == AlertStatus.RESOLVED
    with pytest.raises(ParseError, match="identifies the alert"):
        PARSERS["datadog"](b'{"body": "hello"}', {})


def test_generic_schema_batches_and_strictness() -> None:
    """The generic schema accepts one alert or a batch and refuses unknown fields and bad types."""
    (one,) = PARSERS["generic"](p.generic(), {})
    batch = PARSERS["generic"](json.dumps({"alerts": [{"key": "a"}, {"key": "b"}]}).encode(),
                               {"idempotency-key": "k"})  # fmt: skip
    assert one.dedup_key == "generic:checkout-5xx" and one.severity_hint == Severity.P1
    assert [a.delivery_id for a in batch] == ["k:0", "k:1"]
    for bad, reason in [({"key": ""}, "key is required"), ({"key": "a", "colour": 1}, "unknown field"),
                        ({"key": "a", "severity": "meh"}, "severity"), ({"key": "a", "links": "x"}, "links")]:  # fmt: skip
        with pytest.raises(ParseError, match=reason):
            PARSERS["generic"](json.dumps(bad).encode(), {})


def test_sanitize_fits_the_ledger_columns() -> None:
    """NUL characters are removed and over-long identifiers are cut but stay distinct."""
    a = PARSERS["generic"](p.generic(key="k" * 600 + "1", summary="x\x00y"), {})[0]
    b = PARSERS["generic"](p.generic(key="k" * 600 + "2"), {})[0]
    sanitize(a), sanitize(b)
    assert len(a.dedup_key) <= 512 and a.dedup_key != b.dedup_key
    assert a.summary == "xy"


def test_sanitize_cleans_maps_and_links_and_leaves_fitting_alerts_alone() -> None:
    """NULs and over-long label keys/values and links are fixed, at most 20 links are kept, an
    empty delivery id gets one from the key; an alert that fits comes back unchanged."""
    alert = PARSERS["generic"](
        p.generic(key="k", labels={"a\x00": "v" * 5000}, annotations={"n": "x\x00"},
                  links=[f"https://x/{i}" for i in range(25)]), {},
    )[0]  # fmt: skip
    alert.delivery_id = "\x00"
    sanitize(alert)
    assert list(alert.labels) == ["a"] and len(alert.labels["a"]) <= 4096
    assert alert.annotations == {"n": "x"} and len(alert.links) == 20
    assert alert.delivery_id and alert.delivery_id != "\x00"
    fitting = PARSERS["generic"](p.generic(key="ok", labels={"a": "b"}), {})[0]
    before = fitting.model_dump()
    assert sanitize(fitting).model_dump() == before
