"""Feeds: RSS 2.0, Atom 1.0 and JSON Feed 1.1 built from the store.

Files: `artikel.{xml,atom,json}` (the newest articles) and
`themen/<topic>.{xml,atom,json}` (one set per topic) and `kommunen/<municipality>.{...}`
(the articles that mention a subscribed municipality or its partner); `.xml` is RSS,
`.atom` Atom. `render` turns a spec into bytes, `specs` decides the specs from the store,
`fragments` renders each article's entry once and assembles feeds from the entries,
`mentions` finds every municipality an article mentions in one pass, `files` publishes the
feeds (store, optional export folder), `build` runs one build under the feeds lock, `websub`
tells the hub what changed.
"""

from service.feeds import websub as websub
from service.feeds.build import BASE_URL_FACT, FINGERPRINT_FACT, build_feeds, settings_parts
from service.feeds.files import BuildReport, export_feeds, write_feeds, write_if_changed
from service.feeds.fragments import render_all
from service.feeds.render import (
    DEFAULT_TITLE,
    FORMATS,
    MAIN_FEED,
    MUNICIPALITIES_DIR,
    MUNICIPALITY_SCAN,
    RENDERERS,
    TOPICS_DIR,
    FeedItem,
    FeedSpec,
    article_url,
    feed_url,
    render_atom,
    render_json,
    render_rss,
    source_host,
    xml_safe,
)
from service.feeds.specs import feed_specs, site_title

__all__ = [
    "BASE_URL_FACT",
    "DEFAULT_TITLE",
    "FINGERPRINT_FACT",
    "FORMATS",
    "MAIN_FEED",
    "MUNICIPALITIES_DIR",
    "MUNICIPALITY_SCAN",
    "RENDERERS",
    "TOPICS_DIR",
    "BuildReport",
    "FeedItem",
    "FeedSpec",
    "article_url",
    "build_feeds",
    "export_feeds",
    "feed_specs",
    "feed_url",
    "render_all",
    "render_atom",
    "render_json",
    "render_rss",
    "settings_parts",
    "site_title",
    "source_host",
    "write_feeds",
    "write_if_changed",
    "xml_safe",
]
