"""Whose claims a worker may hand back at once: only those of dead processes it can see.
A process elsewhere (another machine, or a container with its own process ids that shares
the host name, as containers on host networking do) keeps its claims until their lease."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from service import digest, mailer, processes, store

from .helpers import subscribe


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


async def test_only_claims_of_dead_processes_in_this_process_space_are_released(settings, sessions):
    now = datetime.now(UTC)
    period = store.Period(store.Frequency.WEEKLY, now - timedelta(days=7), now)
    await subscribe(sessions, "a@x.de", "b@x.de", name="Gemeinde", now=now - timedelta(days=1))
    dead = _dead_pid()
    # The same host name and a dead pid, but another process space: the old rule's victim.
    elsewhere = f"{socket.gethostname()}:{dead}:feedbeef"
    here = f"{processes.local_host()}:{dead}:deadbeef"
    async with sessions() as session, session.begin():
        await store.plan_period(session, period, now)
        later = now + timedelta(seconds=1)
        lease = timedelta(minutes=10)
        assert len(await store.claim_deliveries(session, elsewhere, later, 1, lease)) == 1
        assert len(await store.claim_deliveries(session, here, later, 1, lease)) == 1

    runner = digest.DigestRunner(settings, sessions, mailer.create_transport(settings))
    released = await runner.release_dead_local_claims()

    assert released == 1
    async with sessions() as session:
        holders = set(await session.scalars(store.select(store.Delivery.claimed_by)))
    assert holders == {elsewhere, None}


def test_the_local_host_tells_process_spaces_apart():
    host = processes.local_host()
    assert host.startswith(socket.gethostname().replace(":", "_"))
    assert ":" not in host
    if sys.platform == "linux":
        assert host.endswith("/" + str(os.stat("/proc/self/ns/pid").st_ino))
