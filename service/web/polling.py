"""Polling: keeping an in-memory copy in step with the store while the app serves.

Owns the loop both memory caches share (the feeds in `web.feeds`, the pages in
`web.pagecache`): load once before serving, then refresh every few seconds until the app
stops, logging a run of failures once. Imports nothing from the package.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def following(
    what: str,
    refresh: Callable[[], Awaitable[object]],
    seconds: float,
    on_failure: Callable[[], None] = lambda: None,
) -> AsyncIterator[None]:
    """Run `refresh` once, then every `seconds` until the block ends. A failed refresh
    calls `on_failure`, is logged once per run of failures and tried again at the next
    tick."""
    await refresh()

    async def follow() -> None:
        failing = False
        while True:
            await asyncio.sleep(seconds)
            try:
                await refresh()
            except Exception:
                on_failure()
                if not failing:
                    log.exception("%s: refreshing from the store failed; retrying", what)
                failing = True
            else:
                failing = False

    task = asyncio.create_task(follow(), name=f"{what}-follow")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
