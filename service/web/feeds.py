"""Feed files over HTTP: `/feeds/...` served from the feeds folder.

Owns how a feed file is answered: its feed media type, a `Cache-Control` max-age, and
conditional GETs (ETag and Last-Modified, 304 when unchanged). Imports `config` and `feeds`.
"""

from __future__ import annotations

import os

from fastapi import FastAPI, Request, Response
from starlette.responses import FileResponse
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import Scope

from service import feeds
from service.config import Settings


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


def mount(app: FastAPI, settings: Settings) -> None:
    """Serve the settings' feeds folder under `/feeds`."""
    app.mount("/feeds", FeedFiles(settings.feeds_dir, settings.feed_max_age), name="feeds")
