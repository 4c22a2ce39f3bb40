"""The runbook's phases as Prefect flows (see the README's "Flows" table)."""

from flows.prefect_tls import install as _share_prefect_tls

_share_prefect_tls()  # Prefect's API clients in this process share one TLS context (prefect_tls)
