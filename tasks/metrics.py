"""Read the monitoring metrics over a window: two scrapes of the app's Prometheus endpoint."""

from __future__ import annotations

import asyncio

from prefect import task

from blocks import AppEndpoint
from runbook.metrics import Readings, readings_between
from tasks._retry import VENDOR_TASK


@task(name="measure-metrics", **VENDOR_TASK)
async def measure_metrics(app: AppEndpoint, window_s: float) -> Readings:
    """Scrape, wait ``window_s`` real seconds, scrape again; return error rate, p95, throughput ...

    Raises:
        AppPermanentError: the block has no metrics URL, or the page is not Prometheus text.
    """
    async with app.get_client() as client:
        before = await client.scrape()
        await asyncio.sleep(window_s)
        after = await client.scrape()
    return readings_between(before, after)
