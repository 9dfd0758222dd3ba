"""Admin API for sources: `/api/sources`, behind the admin bearer token, in OpenAPI.

The same operations as `partnerpost sources`; also what `/healthz` and `/metrics` show of
sources. Imports `metrics`, `store`, `sources` and the web package's `dependencies`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from service import metrics, store
from service.sources import manage
from service.sources.poller import Poller, SourcePoll
from service.store import sources as records
from service.web.dependencies import AppSettings, Sessions, require_admin

router = APIRouter(prefix="/api/sources", tags=["sources"], dependencies=[Depends(require_admin)])


@router.get("")
async def list_sources(sessions: Sessions) -> list[manage.SourceView]:
    """Every source and how its polling went."""
    return await manage.views(sessions)


@router.post("", status_code=status.HTTP_201_CREATED)
async def add_source(body: manage.SourceIn, sessions: Sessions) -> manage.SourceView:
    """Register a source; it is fetched at the scheduler's next tick, as a backfill."""
    try:
        return await manage.add(sessions, body, store.utcnow())
    except records.SourceExistsError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc


@router.get("/{name}")
async def show_source(name: str, sessions: Sessions) -> manage.SourceView:
    try:
        (view,) = await manage.views(sessions, [name])
    except records.SourceNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return view


async def _change(sessions: Sessions, name: str, to: records.SourceStatus) -> manage.SourceView:
    try:
        return await manage.set_status(sessions, name, to, store.utcnow())
    except records.SourceNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc


@router.post("/{name}/pause")
async def pause_source(name: str, sessions: Sessions) -> manage.SourceView:
    return await _change(sessions, name, records.SourceStatus.PAUSED)


@router.post("/{name}/resume")
async def resume_source(name: str, sessions: Sessions) -> manage.SourceView:
    """Poll a paused or gone source again, from the next tick on."""
    return await _change(sessions, name, records.SourceStatus.ACTIVE)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_source(name: str, sessions: Sessions) -> Response:
    """Remove a source; the articles it brought stay."""
    try:
        await manage.remove(sessions, name)
    except records.SourceNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{name}/poll")
async def poll_source(name: str, sessions: Sessions, settings: AppSettings) -> list[SourcePoll]:
    """Fetch the source now, once; empty when another process is polling it."""
    await show_source(name, sessions)
    poller = Poller(settings, sessions)
    return (await poller.run([name])).polls


async def failing(session: AsyncSession) -> list[dict[str, Any]]:
    """The failing and gone sources, as `/healthz` lists them."""
    return [
        {
            "name": s.name,
            "status": s.status,
            "failures": s.failures,
            "http_status": s.last_status,
            "last_error": s.last_error,
            "last_success": s.last_success_at.isoformat() if s.last_success_at else None,
        }
        for s in await records.failing_sources(session)
    ]


async def fill_metrics(session: AsyncSession) -> None:
    """Set each source's last-success gauge from the store (any replica may have polled)."""
    for source in await records.all_sources(session):
        if source.last_success_at is not None:
            metrics.SOURCE_LAST_SUCCESS.labels(source.name).set(source.last_success_at.timestamp())
