"""Web: the HTTP face of partnerpost (pages, feed files, health, admin API).

Owns routes and HTTP concerns only: conditional requests, caching headers, auth of the
admin API. The app's lifespan creates and closes the engine and the scheduler.
Confirmation, unsubscribe and preference links show a page; only its button's POST (or an
RFC 8058 one-click POST) changes anything. An entry point: imports `config`, `store`,
`ingest`, `feeds`, `scheduler`, `templating`, `consent`, `accesslog`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import FileResponse
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import Scope

from service import (
    accesslog,
    confirmations,
    consent,
    digest,
    feeds,
    ingest,
    mailer,
    metrics,
    scheduler,
    store,
    subscribers,
    templating,
    web_sources,
    webguards,
)
from service.config import Settings
from service.errors import ArticleNotFoundError, DatabaseUnavailableError
from service.sources import poller as sources_poller

log = logging.getLogger(__name__)


class FeedFiles(StaticFiles):
    """The feeds folder with feed content types, caching headers and conditional GETs."""

    def __init__(self, directory: os.PathLike[str], max_age: int) -> None:
        super().__init__(directory=directory, check_dir=False)
        self._cache_control = f"public, max-age={max_age}"

    def file_response(
        self,
        full_path: os.PathLike[str] | str,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        media_type = feeds.FORMATS.get(os.path.splitext(str(full_path))[1])
        response = FileResponse(
            full_path, status_code=status_code, stat_result=stat_result, media_type=media_type
        )
        response.headers["cache-control"] = self._cache_control
        if self.is_not_modified(response.headers, Request(scope).headers):
            return NotModifiedResponse(response.headers)
        return response


@dataclass(frozen=True)
class _FeedLink:
    href: str
    type: str
    title: str
    label: str


class ArticleOut(BaseModel):
    """An article as the admin API returns it."""

    id: int
    key: str
    guid: str
    slug: str
    url: str
    title: str
    teaser: str
    body: str | None
    place: str
    published: datetime
    image_caption: str | None
    image_url: str | None
    source_url: str | None
    topics: list[str]
    created: datetime
    updated: datetime


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


Session = Annotated[AsyncSession, Depends(_session)]
_bearer = HTTPBearer(auto_error=False)


def _require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    expected = request.app.state.settings.admin_token.get_secret_value()
    token = credentials.credentials if credentials else ""
    if not expected or not secrets.compare_digest(token.encode(), expected.encode()):
        detail = (
            "admin API disabled: set PARTNERPOST_ADMIN_TOKEN"
            if not expected
            else "missing or wrong bearer token"
        )
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
        )


def create_app(settings: Settings) -> FastAPI:
    """The ASGI app for these settings; its lifespan migrates and starts the scheduler."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = store.create_engine(settings.database_url)
        transport = mailer.create_transport(settings)
        try:
            await store.upgrade(engine)
            sessions = store.session_factory(engine)
            app.state.engine = engine
            app.state.sessions = sessions
            app.state.transport = transport
            app.state.refresher = scheduler.FeedRefresher(settings, engine, sessions)
            app.state.runner = digest.DigestRunner(settings, sessions, transport)
            app.state.confirmations = confirmations.ConfirmationSender(
                settings, sessions, transport
            )
            app.state.poller = sources_poller.Poller(settings, sessions)
            app.state.scheduler = scheduler.create_scheduler(
                settings,
                app.state.refresher,
                app.state.runner,
                app.state.confirmations,
                app.state.poller,
            )
            app.state.scheduler.start()
            try:
                yield
            finally:
                app.state.scheduler.pause()  # no new runs; the one going may finish
                try:
                    await asyncio.wait_for(
                        asyncio.gather(
                            app.state.runner.stop(),
                            app.state.confirmations.stop(),
                            app.state.poller.stop(),
                        ),
                        settings.shutdown_grace_seconds,
                    )
                except TimeoutError:
                    log.error("digest run did not stop within the grace period")
                app.state.scheduler.shutdown(wait=False)
                await app.state.refresher.wait_idle()
        finally:
            await transport.close()
            await engine.dispose()

    # /docs and /redoc with their scripts served from the fastapi-offline package, not a CDN.
    app = FastAPIOffline(
        title="partnerpost",
        description="Feeds and digests of news about German–Ukrainian municipal partnerships.",
        lifespan=lifespan,
        max_body_size=settings.max_body_bytes,
    )
    app.add_middleware(GZipMiddleware, minimum_size=500)
    webguards.install(app)
    app.mount("/feeds", FeedFiles(settings.feeds_dir, settings.feed_max_age), name="feeds")
    app.state.settings = settings
    app.include_router(web_sources.create_router(_require_admin))
    templates = templating.environment()
    legal = consent.legal_links(settings)
    accesslog.install()

    def article_url(article: store.Article) -> str:
        return feeds.article_url(settings, article)

    async def page(
        db_session: AsyncSession, name: str, code: int = 200, **context: Any
    ) -> HTMLResponse:
        title = await feeds.site_title(settings, db_session)
        links = [
            _FeedLink(
                feeds.feed_url(settings, feeds.MAIN_FEED, ".xml"),
                "application/rss+xml",
                title,
                "RSS",
            ),
            _FeedLink(
                feeds.feed_url(settings, feeds.MAIN_FEED, ".atom"),
                "application/atom+xml",
                title,
                "Atom",
            ),
            _FeedLink(
                feeds.feed_url(settings, feeds.MAIN_FEED, ".json"),
                "application/feed+json",
                title,
                "JSON Feed",
            ),
        ]
        topic_slugs = await store.topic_slugs(db_session)

        def topic_url(topic: str) -> str:
            return settings.link(f"themen/{topic_slugs[topic]}")

        for topic in await store.all_topics(db_session):
            stem = f"{feeds.TOPICS_DIR}/{topic_slugs[topic]}"
            links.append(
                _FeedLink(
                    feeds.feed_url(settings, stem, ".atom"),
                    "application/atom+xml",
                    f"{title} – Thema: {topic}",
                    f"Thema {topic}",
                )
            )
        body = templates.get_template(f"web/{name}.html.j2").render(
            site_title=title,
            home_url=settings.link(""),
            feeds=links,
            article_url=article_url,
            topic_url=topic_url,
            privacy_url=legal.privacy_url,
            imprint_url=legal.imprint_url,
            **context,
        )
        return HTMLResponse(body, status_code=code)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index(db_session: Session) -> HTMLResponse:
        articles = await store.newest_articles(db_session, settings.feed_size)
        return await page(db_session, "index", articles=articles, heading=None)

    @app.get("/themen/{slug}", response_class=HTMLResponse, include_in_schema=False)
    async def topic_page(slug: str, db_session: Session) -> HTMLResponse:
        topics = {s: t for t, s in (await store.topic_slugs(db_session)).items()}
        if slug not in topics:
            return await page(db_session, "not_found", code=404)
        articles = await store.newest_articles(db_session, settings.feed_size, topics[slug])
        return await page(db_session, "index", articles=articles, heading=f"Thema: {topics[slug]}")

    @app.get("/artikel/{slug}", response_class=HTMLResponse, include_in_schema=False)
    async def article_page(slug: str, db_session: Session) -> HTMLResponse:
        try:
            article = await store.article_by_slug(db_session, slug)
        except ArticleNotFoundError:
            return await page(db_session, "not_found", code=404)
        return await page(db_session, "article", article=article)

    @app.get("/healthz", tags=["operations"])
    async def healthz(request: Request) -> JSONResponse:
        """200 when the database answers and the scheduler runs, else 503 with the reason;
        failing sources are listed, and do not make it fail."""
        problems = []
        try:
            await store.check_connection(request.app.state.engine)
        except DatabaseUnavailableError as exc:
            problems.append(str(exc))
        if not request.app.state.scheduler.running:
            problems.append("scheduler is not running")
        last_build = request.app.state.refresher.last_build
        last_run = request.app.state.runner.last_run
        failing_sources = []
        if not problems:
            async with request.app.state.sessions() as session:
                failing_sources = await web_sources.failing(session)
        body = {
            "status": "fail" if problems else "ok",
            "problems": problems,
            "last_feed_build": last_build.isoformat() if last_build else None,
            "last_digest_run": last_run.isoformat() if last_run else None,
            "failing_sources": failing_sources,
        }
        return JSONResponse(body, status_code=503 if problems else 200)

    # --- subscriptions -----------------------------------------------------------------

    frequencies = [("daily", "täglich"), ("weekly", "wöchentlich"), ("monthly", "monatlich")]

    async def message(
        db_session: AsyncSession, heading: str, *paragraphs: str, code: int = 200
    ) -> HTMLResponse:
        return await page(db_session, "message", code=code, heading=heading, paragraphs=paragraphs)

    def client_of(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    async def subscribe_form(
        db_session: AsyncSession, form: dict[str, Any], errors: list[str], code: int = 200
    ) -> HTMLResponse:
        return await page(
            db_session,
            "subscribe",
            code=code,
            form=form,
            errors=errors,
            action=settings.link("abonnieren"),
            frequencies=frequencies,
            bundeslaender=sorted(subscribers.BUNDESLAENDER.values()),
            topics=await store.all_topics(db_session),
            notice=consent.FORM_NOTICE,
        )

    async def subscribe(
        request: Request, data: subscribers.SubscriberIn, source: str = consent.Source.FORM
    ) -> None:
        await subscribers.request_subscription(
            settings,
            request.app.state.sessions,
            data,
            client_of(request),
            store.utcnow(),
            source=source,
        )
        # Whether or not a mail was queued, so the answer takes as long either way.
        request.app.state.confirmations.wake()

    check_mail = (
        "Bitte prüfen Sie Ihr Postfach",
        "Falls die Adresse noch nicht bestätigt ist, haben wir eine E-Mail mit einem "
        "Bestätigungslink geschickt. Erst nach der Bestätigung erhalten Sie den Newsletter.",
    )
    too_many = (
        "Zu viele Anfragen",
        "Von Ihrem Anschluss kamen in der letzten Stunde zu viele Anmeldungen. "
        "Bitte versuchen Sie es später noch einmal.",
    )

    @app.get("/abonnieren", response_class=HTMLResponse, include_in_schema=False)
    async def subscribe_page(db_session: Session) -> HTMLResponse:
        return await subscribe_form(db_session, {}, [])

    @app.post("/abonnieren", response_class=HTMLResponse, include_in_schema=False)
    async def subscribe_post(request: Request, db_session: Session) -> HTMLResponse:
        form = await request.form()
        raw: dict[str, Any] = {k: v for k, v in form.items() if k != "topics"}
        raw["topics"] = form.getlist("topics")
        try:
            data = subscribers.SubscriberIn.model_validate(raw)
        except ValidationError as exc:
            errors = [subscribers.german_error(e) for e in exc.errors()]
            return await subscribe_form(db_session, raw, errors, code=422)
        try:
            await subscribe(request, data)
        except subscribers.RateLimitedError:
            return await message(db_session, *too_many, code=429)
        return await message(db_session, *check_mail)

    @app.post("/api/abonnements", status_code=202, tags=["subscriptions"])
    async def subscribe_api(request: Request, data: subscribers.SubscriberIn) -> dict[str, str]:
        """Start double opt-in; the answer is the same whether the address is known or not."""
        try:
            await subscribe(request, data, consent.Source.API)
        except subscribers.RateLimitedError as exc:
            raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, too_many[1]) from exc
        return {"status": "pending", "detail": check_mail[1]}

    invalid_link = (
        "Dieser Link ist ungültig oder abgelaufen",
        "Bitte verwenden Sie den Link aus der neuesten E-Mail oder melden Sie sich erneut an.",
    )

    @app.get("/bestaetigen/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def confirm_page(token: str, db_session: Session) -> HTMLResponse:
        """Only shows a button: link scanners that open every link confirm nothing."""
        try:
            address = await subscribers.pending_confirmation(settings, db_session, token)
        except subscribers.InvalidTokenError:
            return await message(db_session, *invalid_link, code=400)
        return await page(
            db_session,
            "confirm",
            address=address,
            action=settings.link(f"bestaetigen/{token}"),
        )

    @app.post("/bestaetigen/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def confirm(token: str, request: Request, db_session: Session) -> HTMLResponse:
        try:
            address = await subscribers.confirm(
                settings, request.app.state.sessions, token, client_of(request), store.utcnow()
            )
        except subscribers.InvalidTokenError:
            return await message(db_session, *invalid_link, code=400)
        return await message(
            db_session,
            "Abonnement bestätigt",
            f"{address.email} erhält ab jetzt den Newsletter für {address.subscriber.name}.",
        )

    @app.get("/abmelden/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def unsubscribe_page(token: str, request: Request, db_session: Session) -> HTMLResponse:
        tokens = subscribers.Tokens(settings)
        try:
            address = await tokens.address(db_session, "unsubscribe", token)
        except subscribers.InvalidTokenError:
            return await message(db_session, *invalid_link, code=400)
        return await page(
            db_session,
            "unsubscribe",
            address=address,
            action=settings.link(f"abmelden/{token}"),
            preferences_url=tokens.preferences_url(address),
        )

    @app.post("/abmelden/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def unsubscribe(token: str, request: Request, db_session: Session) -> HTMLResponse:
        """The page's button and RFC 8058 one-click (List-Unsubscribe=One-Click) alike."""
        try:
            address = await subscribers.unsubscribe(
                settings, request.app.state.sessions, token, store.utcnow()
            )
        except subscribers.InvalidTokenError:
            return await message(db_session, *invalid_link, code=400)
        return await message(
            db_session,
            "Sie sind abgemeldet",
            f"{address.email} erhält keinen Newsletter mehr für {address.subscriber.name}.",
        )

    async def preferences_page(
        db_session: AsyncSession, token: str, saved: bool = False
    ) -> HTMLResponse:
        tokens = subscribers.Tokens(settings)
        try:
            address = await tokens.address(db_session, "preferences", token)
        except subscribers.InvalidTokenError:
            return await message(db_session, *invalid_link, code=400)
        return await page(
            db_session,
            "preferences",
            subscriber=address.subscriber,
            saved=saved,
            action=settings.link(f"einstellungen/{token}"),
            unsubscribe_url=tokens.unsubscribe_url(address),
            frequencies=frequencies,
            topics=await store.all_topics(db_session),
        )

    @app.get("/einstellungen/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def preferences(token: str, db_session: Session) -> HTMLResponse:
        return await preferences_page(db_session, token)

    @app.post("/einstellungen/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def save_preferences(token: str, request: Request, db_session: Session) -> HTMLResponse:
        form = await request.form()
        try:
            choice = subscribers.PreferencesIn(
                frequency=form.get("frequency"), topics=form.getlist("topics")
            )
            await subscribers.update_preferences(
                settings, request.app.state.sessions, token, choice
            )
        except ValidationError:
            return await preferences_page(db_session, token)
        except subscribers.InvalidTokenError:
            return await message(db_session, *invalid_link, code=400)
        return await preferences_page(db_session, token, saved=True)

    # --- privacy notice and imprint ---------------------------------------------------

    @app.get("/datenschutz", response_class=HTMLResponse, include_in_schema=False)
    async def privacy_page(db_session: Session) -> Response:
        if settings.privacy_url:
            return RedirectResponse(settings.privacy_url, status_code=307)
        return await message(
            db_session, "Datenschutzerklärung", *consent.paragraphs(settings.privacy_text)
        )

    @app.get("/impressum", response_class=HTMLResponse, include_in_schema=False)
    async def imprint_page(db_session: Session) -> Response:
        if settings.imprint_url:
            return RedirectResponse(settings.imprint_url, status_code=307)
        return await message(db_session, "Impressum", *consent.paragraphs(settings.imprint_text))

    # --- operations ----------------------------------------------------------------------

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics_endpoint(request: Request, db_session: Session) -> Response:
        """Prometheus text format; behind the admin token if so configured."""
        if settings.metrics_require_token:
            _require_admin(request, await _bearer(request))
        metrics.ARTICLES.set(await store.count_articles(db_session))
        for gauge, model, statuses in (
            (metrics.SUBSCRIBERS, store.Address, store.AddressStatus),
            (metrics.DELIVERIES, store.Delivery, store.DeliveryStatus),
        ):
            counts = await store.counts_by_status(db_session, model)
            for status_name in statuses:
                gauge.labels(str(status_name)).set(counts.get(str(status_name), 0))
        await web_sources.fill_metrics(db_session)
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    # --- admin API ---------------------------------------------------------------------

    admin = [Depends(_require_admin)]

    def out(article: store.Article) -> ArticleOut:
        return ArticleOut(
            id=article.id,
            key=article.key,
            guid=article.guid,
            slug=article.slug,
            url=article_url(article),
            title=article.title,
            teaser=article.teaser,
            body=article.body,
            place=article.place,
            published=article.published_at,
            image_caption=article.image_caption,
            image_url=article.image_url,
            source_url=article.source_url,
            topics=article.topics,
            created=article.created_at,
            updated=article.updated_at,
        )

    def articles_changed(request: Request) -> None:
        scheduler.request_feed_refresh(request.app.state.scheduler)

    @app.get("/api/articles", dependencies=admin, tags=["admin"])
    async def list_articles(
        db_session: Session, limit: Annotated[int, Query(ge=1, le=1000)] = 50
    ) -> Sequence[ArticleOut]:
        return [out(a) for a in await store.newest_articles(db_session, limit)]

    @app.get("/api/articles/{slug}", dependencies=admin, tags=["admin"])
    async def get_article(slug: str, db_session: Session) -> ArticleOut:
        try:
            return out(await store.article_by_slug(db_session, slug))
        except ArticleNotFoundError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc

    @app.post("/api/articles", dependencies=admin, tags=["admin"], status_code=201)
    async def create_article(
        body: ingest.ArticleIn, request: Request, response: Response, db_session: Session
    ) -> ArticleOut:
        """Create an article; one that is already stored (same key) is updated (200)."""
        async with db_session.begin():
            outcome, article = await store.save_article(db_session, body.to_data())
        if outcome is not store.SaveOutcome.CREATED:
            response.status_code = status.HTTP_200_OK
        if outcome is not store.SaveOutcome.UNCHANGED:
            articles_changed(request)
        return out(article)

    @app.put("/api/articles/{slug}", dependencies=admin, tags=["admin"])
    async def update_article(
        slug: str, body: ingest.ArticleIn, request: Request, db_session: Session
    ) -> ArticleOut:
        """Replace an article's fields; its key, slug and feed id stay."""
        async with db_session.begin():
            try:
                existing = await store.article_by_slug(db_session, slug)
            except ArticleNotFoundError as exc:
                raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
            data = body.model_copy(update={"key": existing.key}).to_data()
            outcome, article = await store.save_article(db_session, data)
        if outcome is not store.SaveOutcome.UNCHANGED:
            articles_changed(request)
        return out(article)

    return app
