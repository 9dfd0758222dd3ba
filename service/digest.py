"""Digest: which articles each address gets for a period, the mail that carries them,
and the run that plans, claims, renders, sends and records.

Owns digest periods (cron ends in Europe/Berlin), the rendering of
`templates/email/digest.{html,txt}.j2`, and the send loop over the delivery ledger.
Imports `config`, `store`, `feeds` (links), `mailer`, `metrics`, `outcomes`, `places`,
`subscribers` (tokens), `templating`.
"""

from __future__ import annotations

import asyncio
import html as html_lib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from urllib.parse import quote

import css_inline
from apscheduler.triggers.cron import CronTrigger
from babel.dates import format_date
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import consent, feeds, mailer, metrics, outcomes, places, store, templating
from service.clock import BERLIN
from service.config import Settings
from service.subscribers import Tokens

log = logging.getLogger(__name__)

LIST_NAME = "Kommunalpartnerschaften Ukraine"
_LOOKBACK = timedelta(days=70)  # covers two period ends of any frequency
# Stand-ins for what differs per address, replaced after the shared part is rendered.
_NAME, _FEED = "@@PP-NAME@@", "@@PP-FEED@@"
_UNSUBSCRIBE, _PREFERENCES = "@@PP-UNSUBSCRIBE@@", "@@PP-PREFERENCES@@"


# --- periods --------------------------------------------------------------------------


def cron_of(settings: Settings, frequency: store.Frequency) -> str:
    return {
        store.Frequency.DAILY: settings.digest_cron_daily,
        store.Frequency.WEEKLY: settings.digest_cron_weekly,
        store.Frequency.MONTHLY: settings.digest_cron_monthly,
    }[frequency]


def latest_period(settings: Settings, frequency: store.Frequency, at: datetime) -> store.Period:
    """The newest period of this frequency that has ended at `at`."""
    trigger = CronTrigger.from_crontab(cron_of(settings, frequency), timezone=BERLIN)
    ends: list[datetime] = []
    moment = at - _LOOKBACK
    while True:
        fire = trigger.get_next_fire_time(ends[-1] if ends else None, moment)
        if fire is None or fire > at:
            break
        ends.append(fire)
        moment = fire + timedelta(seconds=1)
    if len(ends) < 2:
        raise ValueError(f"cron {cron_of(settings, frequency)!r} fires too rarely")
    return store.Period(frequency, ends[-2].astimezone(UTC), ends[-1].astimezone(UTC))


def _german_span(first: date, last: date) -> str:
    # Babel's German date intervals abbreviate the month ("16.–22. Nov. 2026").
    if first == last:
        return format_date(first, "d. MMMM y", locale="de")
    if (first.year, first.month) == (last.year, last.month):
        return f"{first.day}.–{format_date(last, 'd. MMMM y', locale='de')}"
    if first.year == last.year:
        return (
            f"{format_date(first, 'd. MMMM', locale='de')} – "
            f"{format_date(last, 'd. MMMM y', locale='de')}"
        )
    return (
        f"{format_date(first, 'd. MMMM y', locale='de')} – "
        f"{format_date(last, 'd. MMMM y', locale='de')}"
    )


def period_label(period: store.Period) -> str:
    """`Wochenüberblick 16.–22. November 2026`: the days the period covers."""
    first = period.start.astimezone(BERLIN).date()
    # A week from Monday 07:00 to Monday 07:00 is Monday to Sunday for a reader.
    last = max(first, (period.end.astimezone(BERLIN) - timedelta(days=1)).date())
    if period.frequency is store.Frequency.MONTHLY:
        return f"Monatsüberblick {format_date(first, 'MMMM y', locale='de')}"
    if period.frequency is store.Frequency.DAILY:
        return f"Tagesüberblick {_german_span(first, last)}"
    return f"Wochenüberblick {_german_span(first, last)}"


# --- rendering ------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedDigest:
    subject: str
    text: str
    html: str
    article_ids: tuple[int, ...]
    unsubscribe_token: str


def order_for(
    subscriber: store.Subscriber, articles: Sequence[store.Article]
) -> tuple[list[store.Article], list[store.Article]]:
    """Split into (articles about the municipality or its partner, the rest): the first
    by how prominently they mention them, both newest first otherwise."""
    names = places.place_names(subscriber)
    scored = [(places.mention_score(a, names), a) for a in articles]
    own = [a for score, a in sorted(scored, key=lambda p: -p[0]) if score > 0]
    rest = [a for score, a in scored if score == 0]
    return own, rest


class DigestRenderer:
    """Renders digests; what addresses share (articles, layout, inlined CSS) is rendered
    once per distinct article selection and reused, only names and links differ."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._env = templating.environment()
        self._tokens = Tokens(settings)
        self._shared: dict[tuple[object, ...], tuple[str, str, str]] = {}
        self._inliner = css_inline.CSSInliner(keep_style_tags=False)

    def _shared_parts(
        self,
        period: store.Period,
        subscriber: store.Subscriber,
        own: list[store.Article],
        rest: list[store.Article],
    ) -> tuple[str, str, str]:
        # Without articles of its own a municipality's digest differs from others only in
        # the stand-ins, so all of them share one rendering.
        key: tuple[object, ...] = (period.key, tuple(a.id for a in rest))
        if own:
            key += (subscriber.name, subscriber.partner, tuple(a.id for a in own))
        cached = self._shared.get(key)
        if cached is not None:
            return cached
        settings = self._settings
        label = period_label(period)
        count = len(own) + len(rest)
        first = (own or rest)[0]
        context = {
            "list_name": LIST_NAME,
            "label": label,
            "preheader": f"{count} {'neuer Beitrag' if count == 1 else 'neue Beiträge'}: "
            f"{first.title}",
            "subscriber_name": _NAME,
            "own_heading": self._own_heading(subscriber),
            "own": own,
            "rest": rest,
            "article_url": lambda a: feeds.article_url(settings, a),
            "feeds": {
                "RSS": feeds.feed_url(settings, feeds.MAIN_FEED, ".xml"),
                "Atom": feeds.feed_url(settings, feeds.MAIN_FEED, ".atom"),
                "JSON Feed": feeds.feed_url(settings, feeds.MAIN_FEED, ".json"),
            },
            "municipality_feed": _FEED,
            "unsubscribe_url": _UNSUBSCRIBE,
            "preferences_url": _PREFERENCES,
            "imprint": settings.imprint,
            "site_url": settings.link(""),
            "privacy_url": consent.legal_links(settings).privacy_url,
            "imprint_url": consent.legal_links(settings).imprint_url,
        }
        html = self._inliner.inline(self._env.get_template("email/digest.html.j2").render(context))
        text = self._env.get_template("email/digest.txt.j2").render(context)
        parts = (f"{LIST_NAME} – {label}", text, html)
        if len(self._shared) >= 1024:  # bound memory over runs with many own selections
            self._shared.clear()
        self._shared[key] = parts
        return parts

    @staticmethod
    def _own_heading(subscriber: store.Subscriber) -> str:
        if subscriber.partner:
            return f"Aus Ihrer Partnerschaft: {subscriber.name} – {subscriber.partner}"
        return f"Aus {subscriber.name}"

    def render(
        self,
        period: store.Period,
        address: store.Address,
        articles: Sequence[store.Article],
    ) -> RenderedDigest:
        subscriber = address.subscriber
        own, rest = order_for(subscriber, articles)
        subject, text, html = self._shared_parts(period, subscriber, own, rest)
        token = self._tokens.unsubscribe(address)
        values = {
            _NAME: mailer.header_safe(subscriber.name),
            _FEED: feeds.feed_url(
                self._settings, f"{feeds.MUNICIPALITIES_DIR}/{subscriber.slug}", ".atom"
            ),
            _UNSUBSCRIBE: self._tokens.unsubscribe_link(token),
            _PREFERENCES: self._tokens.preferences_url(address),
        }
        for placeholder, value in values.items():
            text = text.replace(placeholder, value)
            html = html.replace(placeholder, html_lib.escape(value, quote=True))
        return RenderedDigest(subject, text, html, tuple(a.id for a in own + rest), token)

    def envelope(
        self,
        period: store.Period,
        delivery_id: int,
        address: store.Address,
        digest: RenderedDigest,
        now: datetime,
    ) -> mailer.Envelope:
        settings = self._settings
        message_id = mailer.message_id(
            settings, f"digest.{delivery_id}.{period.end.strftime('%Y%m%d%H%M')}"
        )
        token = digest.unsubscribe_token
        sender = mailer.envelope_sender(settings)  # for the mailto: unsubscribe
        headers = {
            "List-Id": f"{LIST_NAME} <digest.{settings.mail_domain}>",
            "List-Unsubscribe": (
                f"<{self._tokens.unsubscribe_link(token)}>, "
                f"<mailto:{sender}?subject={quote('Abmelden ' + token)}>"
            ),
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "List-Archive": f"<{settings.link('')}>",
        }
        message = mailer.compose(
            settings,
            to_name=address.subscriber.name,
            to_address=address.email,
            subject=digest.subject,
            text=digest.text,
            html=digest.html,
            message_id=message_id,
            date=now,
            extra_headers=headers,
        )
        return mailer.envelope(settings, message, address.email, message_id)


async def preview(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], email: str, at: datetime
) -> tuple[RenderedDigest, mailer.Envelope] | None:
    """The digest the address would get for the period ended at `at`; None when it
    would get none (nothing new). Sends and records nothing (it only numbers articles
    committed since the last numbering, as the next run would)."""
    async with sessions() as session, session.begin():
        await store.publish_committed(session)
    async with sessions() as session:
        address = await store.address_by_email(session, email)
        if address is None:
            raise LookupError(f"no subscribed address {email!r}")
        subscriber = address.subscriber
        period = latest_period(settings, store.Frequency(subscriber.frequency), at)
        after, upto = await store.next_window(session, address, period, store.utcnow())
        articles = await store.digest_articles(session, after, upto, subscriber.topics or ())
        if not articles:
            return None
        renderer = DigestRenderer(settings)
        rendered = renderer.render(period, address, articles)
        return rendered, renderer.envelope(period, 0, address, rendered, at)


# --- running --------------------------------------------------------------------------


@dataclass
class RunReport:
    """What a run did, counted in ledger rows: a row retried within the run counts once,
    by where it ended (sent, skipped, retrying later, failed); `attempts` counts sends."""

    periods: list[str] = field(default_factory=list)
    planned: int = 0
    sent: int = 0
    skipped: int = 0
    retrying: int = 0
    failed: int = 0
    uncertain: int = 0  # no reply to the end of the message, also after one retry
    attempts: int = 0
    released: int = 0
    seconds: float = 0.0
    _rows: dict[int, str] = field(default_factory=dict, repr=False)

    def record(self, delivery_id: int, outcome: str) -> None:
        """Count the row by its latest outcome in this run."""
        previous = self._rows.get(delivery_id)
        if previous is not None:
            setattr(self, previous, getattr(self, previous) - 1)
        self._rows[delivery_id] = outcome
        setattr(self, outcome, getattr(self, outcome) + 1)
        self.attempts += 1

    @property
    def nothing_delivered(self) -> bool:
        """Rows wait for a retry and none was sent: the relay is likely down."""
        return self.retrying > 0 and self.sent == 0

    def problem(self) -> str | None:
        """Why the run did not do its job, for the operator; None when it did."""
        problems = []
        if self.nothing_delivered:
            problems.append(
                f"nothing could be delivered, {self.retrying} digest(s) wait for a retry; "
                "is the SMTP relay reachable?"
            )
        if self.failed:
            problems.append(f"{self.failed} digest(s) failed permanently (see the ledger)")
        return "; ".join(problems) or None

    def as_dict(self) -> dict[str, object]:
        return {
            "periods": self.periods,
            "sent": self.sent,
            "skipped": self.skipped,
            "retrying": self.retrying,
            "failed": self.failed,
            "uncertain": self.uncertain,
            "attempts": self.attempts,
            "seconds": round(self.seconds, 3),
        }

    def summary(self) -> str:
        problem = self.problem()
        return (
            f"digest run: periods {', '.join(self.periods) or '-'}; sent {self.sent}, "
            f"skipped {self.skipped}, retrying {self.retrying}, failed {self.failed}, "
            f"uncertain {self.uncertain} ({self.attempts} attempts) in {self.seconds:.2f}s"
            + (f"; {problem}" if problem else "")
        )


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


Progress = Callable[[str], None]


class DigestRunner:
    """Plans due periods into the ledger and sends what is due, batch by batch."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        transport: mailer.Transport,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._transport = transport
        self.worker = worker_name()
        self._concurrency = settings.smtp_pool_size if settings.mailer == "smtp" else 1
        self.stopping = asyncio.Event()
        self.last_run: datetime | None = None
        self._lock = asyncio.Lock()

    async def stop(self) -> None:
        """Finish the message in flight, hand back unsent claims, and return when idle."""
        self.stopping.set()
        async with self._lock:  # held by a run until it has released its claims
            log.debug("digest runner %s stopped", self.worker)

    async def plan(self, at: datetime) -> tuple[list[str], int]:
        """Add ledger rows for the newest ended period of every frequency."""
        async with self._sessions() as session, session.begin():
            return await self._plan_in(session, at, store.utcnow())

    async def _plan_in(
        self, session: AsyncSession, at: datetime, now: datetime
    ) -> tuple[list[str], int]:
        keys, added = [], 0
        for frequency in store.Frequency:
            period = latest_period(self._settings, frequency, at)
            added += await store.plan_period(session, period, now)
            keys.append(period.key)
        return keys, added

    async def dry_run(self, at: datetime) -> list[tuple[str, str, int]]:
        """(address, period, articles) of every digest a run at `at` would send now;
        plans inside a transaction that is rolled back, so nothing changes."""
        due: list[tuple[str, str, int]] = []
        async with self._sessions() as session:
            transaction = await session.begin()
            try:
                now = store.utcnow()
                await self._plan_in(session, at, now)
                for delivery, address in await store.due_deliveries(session, now):
                    articles = await store.digest_articles(
                        session,
                        delivery.after_article_id,
                        delivery.upto_article_id,
                        address.subscriber.topics or (),
                    )
                    if articles and address.status == store.AddressStatus.ACTIVE:
                        due.append((address.email, delivery.period_key, len(articles)))
            finally:
                await transaction.rollback()
        return due

    async def release_dead_local_claims(self) -> int:
        """Claims of processes on this host that no longer run go back to the queue at once
        (a process elsewhere that died loses its claims when their lease runs out)."""
        host = socket.gethostname()
        async with self._sessions() as session, session.begin():
            dead = [
                worker
                for worker in await store.claiming_workers(session, f"{host}:")
                if worker != self.worker and not _pid_alive(int(worker.split(":")[1]))
            ]
            return await store.release_claims(session, dead)

    async def run(
        self,
        at: datetime | None = None,
        progress: Progress | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> RunReport:
        """Plan the periods ended at `at` (now by default) and send everything due;
        `on_start` learns how many deliveries are due, `progress` each outcome."""
        async with self._lock:
            started = time.perf_counter()
            report = RunReport()
            if self.stopping.is_set():
                return report
            report.released = await self.release_dead_local_claims()
            report.periods, report.planned = await self.plan(at or datetime.now(UTC))
            if on_start is not None:
                async with self._sessions() as session:
                    on_start(await store.count_due(session, store.utcnow()))
            await self.send_due(report, progress)
            report.seconds = time.perf_counter() - started
            self.last_run = datetime.now(UTC)
            metrics.DIGEST_RUN_SECONDS.observe(report.seconds)
            level = logging.WARNING if report.problem() else logging.INFO
            log.log(level, report.summary(), extra={"digest_run": report.as_dict()})
            return report

    async def send_due(self, report: RunReport, progress: Progress | None = None) -> None:
        renderer = DigestRenderer(self._settings)
        article_cache: dict[tuple[int, int, tuple[str, ...]], Sequence[store.Article]] = {}
        lease = timedelta(seconds=self._settings.digest_lease_seconds)
        while not self.stopping.is_set():
            async with self._sessions() as session, session.begin():
                claimed = await store.claim_deliveries(
                    session, self.worker, store.utcnow(), self._settings.digest_batch_size, lease
                )
            if not claimed:
                return
            try:
                async with self._sessions() as session:
                    rows = await store.deliveries_with_addresses(session, claimed)
                    work = []
                    for delivery, address in rows:
                        topics = tuple(address.subscriber.topics or ())
                        cache_key = (delivery.after_article_id, delivery.upto_article_id, topics)
                        if cache_key not in article_cache:
                            article_cache[cache_key] = await store.digest_articles(
                                session, *cache_key[:2], topics
                            )
                        work.append((delivery, address, article_cache[cache_key]))

                # One sender per pooled SMTP connection, so waiting on one reply overlaps
                # with rendering and recording the next message.
                await asyncio.gather(
                    *(
                        self._sender(work, renderer, report, progress)
                        for _ in range(self._concurrency)
                    )
                )
            finally:
                async with self._sessions() as session, session.begin():
                    report.released += await store.release_claims(session, [self.worker])

    async def _sender(
        self,
        work: list[tuple[store.Delivery, store.Address, Sequence[store.Article]]],
        renderer: DigestRenderer,
        report: RunReport,
        progress: Progress | None,
    ) -> None:
        while work and not self.stopping.is_set():
            delivery, address, articles = work.pop(0)
            try:
                outcome = await outcomes.finish_even_if_cancelled(
                    self._deliver(renderer, delivery, address, articles)
                )
            except Exception:
                # Recording the outcome failed: the row goes back to the queue with the
                # batch's claims; the other rows go on.
                log.exception("delivery %s to %r could not be recorded", delivery.id, address.email)
                outcome = "failed"
            report.record(delivery.id, outcome)
            metrics.MESSAGES.labels(outcome).inc()
            if progress:
                progress(outcome)

    async def _deliver(
        self,
        renderer: DigestRenderer,
        delivery: store.Delivery,
        address: store.Address,
        articles: Sequence[store.Article],
    ) -> str:
        settings = self._settings
        now = store.utcnow()
        period = store.Period.of(delivery)

        async def finish(outcome: store.Outcome) -> str:
            """Record the outcome, and the address's failure streak when it changes, in one
            transaction."""
            async with self._sessions() as session, session.begin():
                if outcome.permanent_failure or (
                    outcome.status is store.DeliveryStatus.SENT and address.consecutive_failures
                ):
                    await store.note_address_outcome(
                        session,
                        address.id,
                        permanent_failure=outcome.permanent_failure,
                        bounce_after=settings.bounce_after_failures,
                    )
                await store.finish_delivery(
                    session, delivery.id, self.worker, outcome, store.utcnow()
                )
            return outcome.label

        if address.status != store.AddressStatus.ACTIVE:
            superseded = store.DeliveryStatus.SUPERSEDED
            return await finish(outcomes.skipped(superseded, f"address {address.status}"))
        if not articles:
            return await finish(outcomes.skipped(store.DeliveryStatus.EMPTY, article_count=0))
        try:
            # Any error of this one row, composing or sending, fails this row alone.
            digest = renderer.render(period, address, articles)
            envelope = renderer.envelope(period, delivery.id, address, digest, now)
            reply = await self._transport.send(envelope)
        except Exception as exc:
            if not isinstance(exc, mailer.SendError):
                log.exception("digest %s to %r cannot be sent", delivery.id, address.email)
            outcome = outcomes.after_error(
                settings,
                exc,
                attempts=delivery.attempts,
                uncertain_attempts=delivery.uncertain_attempts,
                now=store.utcnow(),
            )
            return await finish(outcome)
        article_count = len(digest.article_ids)
        return await finish(outcomes.sent(reply, envelope.message_id, article_count=article_count))
