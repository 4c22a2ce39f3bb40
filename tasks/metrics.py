"""Read the monitoring metrics over a window: two scrapes of the app's Prometheus endpoint."""

from __future__ import annotations

import asyncio

from prefect import task

from blocks import AppEndpoint
from runbook.metrics import Readings, readings_between
from tasks._retry import VENDOR_TASK

MIN_REQUESTS = 100
MAX_WIDEN = 8


@task(name="measure-metrics", **VENDOR_TASK)
async def measure_metrics(app: AppEndpoint, window_s: float) -> Readings:
    """Scrape, wait ``window_s`` real seconds, scrape again; return error rate, p95, throughput ...

    A window holding fewer than MIN_REQUESTS requests is widened, up to MAX_WIDEN times its length.

    Raises:
        AppPermanentError: the block has no metrics URL, or the page is not Prometheus text.
    """
    async with app.get_client() as client:
        before = await client.scrape()
        await asyncio.sleep(window_s)
        after = await client.scrape()
        readings = readings_between(before, after)
        # rates and a p95 over a handful of requests are noise: widen the window (bounded) until
        # it holds enough requests to judge by
        waited = window_s
        while readings.requests < MIN_REQUESTS and waited < window_s * MAX_WIDEN:
            await asyncio.sleep(window_s)
            waited += window_s
            after = await client.scrape()
            readings = readings_between(before, after)
    return readings
