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

log = logging.getLogger(__name__)


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
    worst child's after an operator's stop (0), else the code of the first that ended.
    Each child is a replica of its own: its scheduler, senders and feed cache coordinate
    with the others through the store's locks and claims, as replicas on several hosts do.
    Forked rather than uvicorn's `--workers` (which spawns fresh interpreters and needs the
    app as an import string) so the app built from this command's settings and the
    stop-signal handling above stay as they are; the children start no loop before the
    fork, so nothing is shared that must not be.

    The workers live and die with this process: each leads a process group of its own
    (Ctrl-C at a terminal signals only this process, which passes it on once: a second
    SIGINT would make uvicorn cut the app's shutdown short), ends when this process dies
    (even of SIGKILL), and a worker that ends on its own stops the others, so serve exits
    with its failure for the supervisor to restart rather than limp on with fewer."""
    parent = os.getpid()
    children: list[int] = []
    # Stop signals wait until the forward handler is in place (and, in a child, until it
    # left the group and tied its life to this process's).
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # the child serves and never returns to the caller
            os._exit(_serve_child(config, sock, parent))
        children.append(pid)
    sock.close()
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    originals = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    worst = 0
    failure: int | None = None  # the exit code of the worker that ended on its own
    try:
        while children:
            pid, status = os.wait()
            children.remove(pid)
            code = _exit_code(status)
            worst = max(worst, code)
            if not stopping:
                log.error("serve: worker %d ended (exit %d); stopping the others", pid, code)
                failure = code or 1
                forward(signal.SIGTERM, None)
    finally:
        for sig, handler in originals.items():
            signal.signal(sig, handler)
    return worst if failure is None else failure


def _serve_child(config: uvicorn.Config, sock: socket.socket, parent: int) -> int:
    """A forked worker: serve until stopped; its exit code."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    os.setpgid(0, 0)
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before the tie above was made
        return 1
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    server = _Server(config)
    server.run(sockets=[sock])
    return 0 if server.started else STARTUP_FAILURE


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG); elsewhere
    nothing. By hand: no maintained package wraps this one call."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    if libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0) != 0:
        log.warning("serve: prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())


def _exit_code(status: int) -> int:
    """A wait status as a shell shows it: the exit code, or 128 + the signal's number."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code
