"""The error hierarchy: one base class, data as attributes, a hint in the message.

Every module may import this one; it imports nothing from the package.
"""

from __future__ import annotations


class PartnerpostError(Exception):
    """Base of every error partnerpost raises on purpose."""


class ConfigurationError(PartnerpostError, ValueError):
    """A setting is missing or invalid; the message names the variable and its value."""


class DatabaseUnavailableError(PartnerpostError, ConnectionError):
    """The database could not be reached."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(
            f"cannot reach the database at {url!r}: {reason}. "
            "Check PARTNERPOST_DATABASE_URL and that the server is running."
        )


class ArticleNotFoundError(PartnerpostError, LookupError):
    """No article has the given slug."""

    def __init__(self, slug: str) -> None:
        self.slug = slug
        super().__init__(f"no article with slug {slug!r}")


class IngestInputError(PartnerpostError, ValueError):
    """The input as a whole cannot be read (not the format it claims, unreachable URL)."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"cannot read {source!r}: {reason}")


class FeedsBaseUrlChangedError(PartnerpostError, ValueError):
    """The feeds were built for another public URL than this build would write."""

    def __init__(self, recorded: str, current: str) -> None:
        self.recorded = recorded
        self.current = current
        super().__init__(
            f"the feeds were built for {recorded!r}, this build would link to {current!r}. "
            "Run it with the server's environment (PARTNERPOST_BASE_URL), or with --force "
            f"to rebuild every feed for {current!r}"
        )
