"""Metrics: the Prometheus metrics partnerpost exports, every name prefixed `partnerpost_`.

Owns the metric objects in one registry of its own. Modules that measure something record
into them; `web` fills the gauges from the store and serves `/metrics`. Imports nothing
from the package.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)

ARTICLES = Gauge("partnerpost_articles", "Articles in the store.", registry=REGISTRY)
SUBSCRIBERS = Gauge(
    "partnerpost_subscribers",
    "Subscriber addresses by status (pending, active, unsubscribed, bounced).",
    ["status"],
    registry=REGISTRY,
)
DELIVERIES = Gauge(
    "partnerpost_deliveries",
    "Digest deliveries in the ledger by status.",
    ["status"],
    registry=REGISTRY,
)
MESSAGES = Counter(
    "partnerpost_digest_messages",
    "Digest deliveries handled by this process, by outcome.",
    ["outcome"],
    registry=REGISTRY,
)
SMTP_SEND_SECONDS = Histogram(
    "partnerpost_smtp_send_seconds",
    "Time to hand one message to the SMTP relay.",
    buckets=_SECONDS,
    registry=REGISTRY,
)
WEBSUB_PINGS = Counter(
    "partnerpost_websub_pings_total",
    "Publish pings sent to the WebSub hub, by outcome (sent, retried, failed).",
    ["outcome"],
    registry=REGISTRY,
)
FEED_BUILD_SECONDS = Histogram(
    "partnerpost_feed_build_seconds",
    "Duration of a feed build.",
    buckets=_SECONDS,
    registry=REGISTRY,
)
FEED_RESPONSES = Counter(
    "partnerpost_feed_responses",
    "Feed requests this process answered from memory, by status (200, 304).",
    ["status"],
    registry=REGISTRY,
)
PAGE_RESPONSES = Counter(
    "partnerpost_page_responses",
    "Cacheable public pages this process answered, by source (cache, render).",
    ["source"],
    registry=REGISTRY,
)
DIGEST_RUN_SECONDS = Histogram(
    "partnerpost_digest_run_seconds",
    "Duration of a digest run (planning and sending).",
    buckets=_SECONDS,
    registry=REGISTRY,
)
SOURCE_FETCHES = Counter(
    "partnerpost_source_fetches",
    "Fetches of sources by this process, by source and outcome (ok, not_modified, failed, gone).",
    ["source", "outcome"],
    registry=REGISTRY,
)
SOURCE_LAST_SUCCESS = Gauge(
    "partnerpost_source_last_success_timestamp_seconds",
    "When each source was last fetched successfully (Unix time), from the store.",
    ["source"],
    registry=REGISTRY,
)
