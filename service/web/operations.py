"""Operations: `/healthz` for orchestrators and `/metrics` for Prometheus.

Owns what the app reports about itself: whether the database answers and the scheduler
runs, when feeds were last built and digests last run, and the metrics' gauges, filled
from the store on each scrape, sources included. Imports `store`, `metrics` and the web
package's `dependencies` and `sources`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service import metrics, store
from service.errors import DatabaseUnavailableError
from service.web import sources
from service.web.dependencies import AppRuntime, AppSettings, Session, bearer, require_admin

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz(request: Request, runtime: AppRuntime) -> JSONResponse:
    """200 when the database answers and the scheduler runs, else 503 with the reason;
    failing sources are listed, and do not make it fail."""
    problems = []
    try:
        await store.check_connection(request.app.state.engine)
    except DatabaseUnavailableError as exc:
        problems.append(str(exc))
    if not runtime.scheduler.running:
        problems.append("scheduler is not running")
    last_build = runtime.refresher.last_build
    last_run = runtime.runner.last_run
    failing: list[dict[str, Any]] = []
    if not problems:
        async with request.app.state.sessions() as session:
            failing = await sources.failing(session)
    body = {
        "status": "fail" if problems else "ok",
        "problems": problems,
        "last_feed_build": last_build.isoformat() if last_build else None,
        "last_digest_run": last_run.isoformat() if last_run else None,
        "failing_sources": failing,
    }
    return JSONResponse(body, status_code=503 if problems else 200)


@router.get("/metrics", response_class=Response)
async def metrics_endpoint(
    request: Request, db_session: Session, settings: AppSettings
) -> Response:
    """Prometheus text format; behind the admin token if so configured."""
    if settings.metrics_require_token:
        require_admin(request, await bearer(request))
    metrics.ARTICLES.set(await store.count_articles(db_session))
    for gauge, model, statuses in (
        (metrics.SUBSCRIBERS, store.Address, store.AddressStatus),
        (metrics.DELIVERIES, store.Delivery, store.DeliveryStatus),
    ):
        counts = await store.counts_by_status(db_session, model)
        for status_name in statuses:
            gauge.labels(str(status_name)).set(counts.get(str(status_name), 0))
    await sources.fill_metrics(db_session)
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)
