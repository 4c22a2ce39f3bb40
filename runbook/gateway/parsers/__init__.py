"""One parser per sender: ``PARSERS[source](body, headers) -> list[Alert]`` (raises ParseError)."""

from runbook.gateway.parsers import alertmanager, datadog, generic, grafana, pagerduty, sentry
from runbook.gateway.parsers._common import ParseError, Parser

PARSERS: dict[str, Parser] = {
    "alertmanager": alertmanager.parse,
    "grafana": grafana.parse,
    "pagerduty": pagerduty.parse,
    "datadog": datadog.parse,
    "sentry": sentry.parse,
    "generic": generic.parse,
}

__all__ = ["PARSERS", "ParseError", "Parser"]
