"""Serving: run the ASGI app under uvicorn until SIGTERM or SIGINT, then stop gracefully.

uvicorn shuts down gracefully on either signal and then raises the signal again, so the
process dies of it (exit 143 on SIGTERM, which container runtimes and systemd report as a
failure). Here an operator's stop is the normal end of `serve`: exit 0 after the app's
lifespan has finished. An entry point's helper; imports nothing from the package.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
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


def run(app: Any, *, host: str, port: int, workers: int = 1, **options: Any) -> None:
    """Serve `app` until a stop signal; exits like uvicorn (3) when the app cannot start.
    `options` go to uvicorn's Config (proxy headers, for instance). With `workers` > 1 the
    socket is bound once and that many forked processes serve it (see `_serve_forked`)."""
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
    # `access_log=False` also cuts the access logger off from the root handlers; the app's
    # own access log (`web.accesslog`) writes to that logger, so reconnect it.
    logging.getLogger("uvicorn.access").propagate = True
    # Bind before the lifespan starts the scheduler: a port in use must fail before any
    # feed build or digest run (uvicorn binds only after its lifespan startup).
    sock = config.bind_socket()
    if workers > 1:
        sys.exit(_serve_forked(config, sock, workers))
    server = _Server(config)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def _serve_forked(config: uvicorn.Config, sock: socket.socket, workers: int) -> int:
    """Fork `workers` processes that serve the bound socket (the kernel spreads connections
    over them) and wait for them; a stop signal is passed on to each. The exit code is the
    worst child's. Each child is a replica of its own: its scheduler, senders and feed cache
    coordinate with the others through the store's locks and claims, as replicas on several
    hosts do. Forked rather than uvicorn's `--workers` (which spawns fresh interpreters and
    needs the app as an import string) so the app built from this command's settings and
    the stop-signal handling above stay as they are; the children start no loop before
    the fork, so nothing is shared that must not be."""
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # the child serves and never returns to the caller
            server = _Server(config)
            server.run(sockets=[sock])
            os._exit(0 if server.started else STARTUP_FAILURE)
        children.append(pid)
    sock.close()

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    originals = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
    worst = 0
    try:
        for child in children:
            _, status = os.waitpid(child, 0)
            worst = max(worst, os.waitstatus_to_exitcode(status) % 256)
    finally:
        for sig, handler in originals.items():
            signal.signal(sig, handler)
    return worst
