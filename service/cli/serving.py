"""Serving: run the ASGI app under uvicorn until SIGTERM or SIGINT, then stop gracefully.

uvicorn shuts down gracefully on either signal and then raises the signal again, so the
process dies of it (exit 143 on SIGTERM, which container runtimes and systemd report as a
failure). Here an operator's stop is the normal end of `serve`: exit 0 after the app's
lifespan has finished. An entry point's helper; imports nothing from the package.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's handlers (graceful stop, a second signal forces it), without
        re-raising the signal afterwards."""
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


def run(app: Any, *, host: str, port: int, **options: Any) -> None:
    """Serve `app` until a stop signal; exits like uvicorn (3) when the app cannot start.
    `options` go to uvicorn's Config (proxy headers, for instance)."""
    # uvloop and httptools (uvicorn[standard]); the app writes the access log itself, so
    # feed requests answered in front of it cost no log line (see `web.accesslog`).
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        loop="uvloop",
        http="httptools",
        access_log=False,
        **options,
    )
    # Bind before the lifespan starts the scheduler: a port in use must fail before any
    # feed build or digest run (uvicorn binds only after its lifespan startup).
    sock = config.bind_socket()
    server = _Server(config)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)
