"""Command line: `partnerpost serve | worker | db | ingest | feeds | articles |
subscribers | digest | deliveries | sources | operators`.

An entry point: builds the settings, opens and closes the engine for each command, and
turns errors into a message and an exit code (0 fine, 1 some input rejected, 2 failure).
This module assembles the typer `app` from one module per command group: `operating`
(serve, worker, db), `articles` (ingest, feeds, articles), `subscribers`, `digest`,
`deliveries`, `sources`, `operators` (console accounts); `common` holds what they share.
Imports every module it drives.
"""

from __future__ import annotations

from typing import Annotated

import typer

from service.cli import (
    articles,
    deliveries,
    digest,
    operating,
    operators,
    sources,
    subscribers,
)
from service.cli.common import configure_logging, options

__all__ = ["app", "configure_logging", "main"]

app = typer.Typer(
    help="partnerpost: feeds and digests of German–Ukrainian municipal partnership news.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# The help lists commands, then groups, each in the order they are added here.
app.command()(operating.serve)
app.command("ingest")(articles.ingest_command)
app.command()(operating.worker)
app.add_typer(operating.db_app, name="db")
app.add_typer(articles.feeds_app, name="feeds")
app.add_typer(articles.articles_app, name="articles")
app.add_typer(subscribers.subscribers_app, name="subscribers")
app.add_typer(digest.digest_app, name="digest")
app.add_typer(deliveries.deliveries_app, name="deliveries")
app.add_typer(sources.sources_app, name="sources")
app.add_typer(operators.operators_app, name="operators")


@app.callback()
def _options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False,
) -> None:
    """Options of every command; `--verbose` is kept for the logging."""
    options.verbose = verbose


def main() -> None:
    """The console script `partnerpost`."""
    app()
