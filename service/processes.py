"""Processes: which machine and process space a worker runs in, so that a claim's holder
can be told apart from every other process and checked for life.

Owns `local_host` (the prefix of every worker name this process gives) and `pid_alive`.
Imports nothing from the package.
"""

from __future__ import annotations

import os
import socket
from functools import cache
from pathlib import Path


@cache
def local_host() -> str:
    """The host name, and on Linux the boot id and the PID namespace: processes that share
    this value see each other's process ids. The host name alone is not enough: containers
    on host networking share it while each has its own process ids (two PID 1s), and a
    replica that took the other's live claims for dead ones would send their mail again.
    Never contains ':' (worker names are `host:pid:...`)."""
    parts = [socket.gethostname()]
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8])
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:  # not Linux: the host name is what there is
        pass
    return "/".join(parts).replace(":", "_")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs in this process space."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
