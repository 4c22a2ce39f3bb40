"""The alert gateway: signed webhooks in, one incident per problem, nothing lost.

- ``app.create_app(ledger, config, launcher=...)``: the ASGI app (``/hooks/<sender>``, ``/healthz``,
  ``/metrics``).
- ``config.GatewayConfig``: secrets (from the environment), limits and batching.
- ``auth``: one authenticity check per sender; ``parsers``: one parser per sender.
- ``committer.GroupCommitter``: one ledger transaction for many concurrent requests.
- ``dispatcher.Dispatcher``: drains the outbox by launching ``incident-response/runbook``.
- ``server.run(...)``: what ``runbook gateway`` calls.
"""

from runbook.gateway.app import create_app
from runbook.gateway.config import GatewayConfig

__all__ = ["GatewayConfig", "create_app"]
