"""WebSub: telling the hub which feeds changed, so subscribed readers fetch them at once.

A publish ping is a form POST (`hub.mode=publish`, `hub.url=<feed URL>`) per changed feed
(the convention hubs such as Google's and Superfeedr's accept). A refused or failed ping is
retried with growing pauses; one that never succeeds is logged and counted, never raised:
feeds are correct without the hub, readers just learn of them later. Imports `metrics`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from service import metrics

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

ATTEMPTS = 6
FIRST_PAUSE = 0.5  # seconds; doubled after each failed attempt
CONCURRENT = 4


async def _ping(client: httpx.AsyncClient, hub: str, url: str, pause: float) -> bool:
    import httpx

    for attempt in range(1, ATTEMPTS + 1):
        try:
            response = await client.post(hub, data={"hub.mode": "publish", "hub.url": url})
            if response.is_success:
                metrics.WEBSUB_PINGS.labels("sent").inc()
                return True
            problem = f"HTTP {response.status_code}"
        except httpx.HTTPError as error:
            problem = f"{type(error).__name__}: {error}"
        if attempt == ATTEMPTS:
            break
        metrics.WEBSUB_PINGS.labels("retried").inc()
        log.info("WebSub hub %s refused %s (%s); retrying", hub, url, problem)
        await asyncio.sleep(pause * 2 ** (attempt - 1))
    metrics.WEBSUB_PINGS.labels("failed").inc()
    log.warning("WebSub hub %s never took %s (%s); giving up", hub, url, problem)
    return False


async def publish(hub: str, urls: Iterable[str], *, pause: float = FIRST_PAUSE) -> int:
    """Ping `hub` for each feed URL (a few at a time); how many it took. Never raises
    for a failed ping."""
    # Imported here: every command that builds feeds loads this module, few ping a hub.
    import httpx

    limit = asyncio.Semaphore(CONCURRENT)
    async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client:

        async def one(url: str) -> bool:
            async with limit:
                return await _ping(client, hub, url, pause)

        results = await asyncio.gather(*(one(url) for url in urls))
    return sum(results)
