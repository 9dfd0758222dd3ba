"""Benchmark: how long `POST /api/abonnements` takes for a new and for an active address
while the relay answers each message only after a delay.

    .venv/bin/python bench/subscribe_latency.py [--requests 30] [--relay-delay 0.5]

The real app under uvicorn on a fresh SQLite store, a slow aiosmtpd relay in the same
loop. Before the confirmation queue, a new address waited for the relay (the delay plus
the SMTP dialogue) and an active one did not, which told them apart. Goal (issue 8,
finding 4): both medians far below the relay's delay and within a few milliseconds of
each other.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class SlowRelay:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.received = 0
        self.wanted = 0
        self.all_received = asyncio.Event()

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        await asyncio.sleep(self.delay)
        self.received += 1
        if self.received >= self.wanted:
            self.all_received.set()
        return "250 OK"


async def main(requests: int, delay: float) -> None:
    from aiosmtpd.smtp import SMTP

    from service import store
    from service.config import Settings
    from tests.helpers import app_client

    relay = SlowRelay(delay)
    relay.wanted = requests
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(relay, hostname="relay"), "127.0.0.1", 0
    )
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            _env_file=None,
            database_url=f"sqlite+aiosqlite:///{Path(folder) / 'store.sqlite3'}",
            feeds_dir=Path(folder) / "feeds",
            mailer="smtp",
            smtp_host="127.0.0.1",
            smtp_port=server.sockets[0].getsockname()[1],
            confirmations_per_client=10 * requests,
        )
        engine = store.create_engine(settings.database_url)
        await store.upgrade(engine)
        async with store.session_factory(engine)() as session, session.begin():
            town = await store.create_subscriber(
                session, name="Stadt Aktiv", frequency=store.Frequency.WEEKLY
            )
            await store.add_address(session, town, "aktiv@stadt.de", store.AddressStatus.ACTIVE)
        await engine.dispose()
        timings: dict[str, list[float]] = {"new": [], "active": []}
        async with app_client(settings) as client:
            for n in range(requests):
                for kind, email in (("new", f"neu{n}@stadt.de"), ("active", "aktiv@stadt.de")):
                    started = time.perf_counter()
                    answer = await client.post(
                        "/api/abonnements", json={"name": "Stadt Test", "email": email}
                    )
                    timings[kind].append(time.perf_counter() - started)
                    assert answer.status_code == 202, answer.text
            await relay.all_received.wait()  # the queue still delivers every mail
    server.close()
    for kind, values in timings.items():
        print(
            f"{kind:>6}: median {statistics.median(values) * 1000:.1f} ms, "
            f"max {max(values) * 1000:.1f} ms over {len(values)} requests"
        )
    print(f"relay delay {delay * 1000:.0f} ms; confirmation mails delivered: {relay.received}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--relay-delay", type=float, default=0.5)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.requests, arguments.relay_delay))
