"""Benchmark: digest send rate against aiosmtplib alone, and peak memory of a run.

    .venv/bin/python bench/digest_send.py [--addresses 100000] [--rounds 3]

Both sides send to the same SMTP sink (aiosmtpd in a process of its own, accepting every
message) over the same number of pooled connections. The floor is aiosmtplib sending
ready-made messages of the digest's size (25 KB); the measured run is `partnerpost digest run` in
a subprocess (plan, claim, render, send, record) on a fresh SQLite store. Rounds alternate
floor and run; the medians are reported with their ratio and the run's peak RSS.
Goals (issue 4): rate ratio >= 0.60, peak RSS < 300 MB at 100,000 addresses.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

POOL = 2


def _sink(port_out: multiprocessing.connection.Connection) -> None:
    from aiosmtpd.smtp import SMTP

    class Accept:
        async def handle_DATA(self, server, session, envelope) -> str:
            return "250 OK"

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(
            lambda: SMTP(Accept(), hostname="sink"), "127.0.0.1", 0
        )
        port_out.send(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


async def _floor(port: int, count: int, size: int) -> float:
    """Messages per second aiosmtplib alone manages over POOL connections."""
    import aiosmtplib

    line = b"x" * 76 + b"\r\n"
    body = b"Subject: floor\r\n\r\n" + line * (size // len(line))
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
        await client.connect()
        while not queue.empty():
            i = queue.get_nowait()
            await client.sendmail("a@b.example", [f"r{i}@c.example"], body)
        await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(POOL)))
    return count / (time.perf_counter() - started)


async def _prepare(database: Path, count: int) -> None:
    from service import ingest, store

    engine = store.create_engine(f"sqlite+aiosqlite:///{database}")
    await store.upgrade(engine)
    sessions = store.session_factory(engine)
    demo = (ROOT / "service/demo/kommunalpartnerschaften-ukraine.txt").read_text("utf-8")
    await ingest.save(sessions, ingest.parse_listing_text(demo))
    confirmed = datetime.now(UTC) - timedelta(days=3)
    async with sessions() as session, session.begin():
        subscriber = await store.create_subscriber(
            session, name="Gemeinde Vielfach", frequency=store.Frequency.WEEKLY
        )
        for start in range(0, count, 5000):
            session.add_all(
                store.Address(
                    subscriber_id=subscriber.id,
                    email=f"stelle{i}@gemeinde.example",
                    status="active",
                    consecutive_failures=0,
                    created_at=confirmed,
                    confirmed_at=confirmed,
                )
                for i in range(start, min(count, start + 5000))
            )
            await session.flush()
    await engine.dispose()


def _run(database: Path, port: int, count: int, workdir: Path) -> tuple[float, float]:
    """(messages per second, peak RSS in MB) of one `partnerpost digest run`."""
    env = {
        **os.environ,
        "PARTNERPOST_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "PARTNERPOST_MAILER": "smtp",
        "PARTNERPOST_SMTP_HOST": "127.0.0.1",
        "PARTNERPOST_SMTP_PORT": str(port),
        "PARTNERPOST_SMTP_POOL_SIZE": str(POOL),
        "PARTNERPOST_FEEDS_DIR": str(workdir / "feeds"),
        "PARTNERPOST_LOG_LEVEL": "WARNING",
    }
    at = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run(
        [str(Path(sys.executable).parent / "partnerpost"), "digest", "run", "--at", at],
        env=env,
        cwd=workdir,
        check=True,
        capture_output=True,
    )
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak <= before:
        print("  (peak RSS not above an earlier child's; reported value is a lower bound)")
    return count / seconds, peak / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addresses", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    parent, child = multiprocessing.Pipe()
    sink = multiprocessing.Process(target=_sink, args=(child,), daemon=True)
    sink.start()
    port = parent.recv()
    floors, rates, peaks = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            workdir = Path(tmp) / f"round{round_}"
            workdir.mkdir()
            database = workdir / "bench.sqlite3"
            asyncio.run(_prepare(database, args.addresses))
            floors.append(asyncio.run(_floor(port, args.addresses, 25_000)))
            rate, peak = _run(database, port, args.addresses, workdir)
            rates.append(rate)
            peaks.append(peak)
            print(
                f"round {round_ + 1}: floor {floors[-1]:.0f}/s, partnerpost {rate:.0f}/s, "
                f"peak RSS {peak:.0f} MB"
            )
    sink.terminate()
    floor, rate = statistics.median(floors), statistics.median(rates)
    print(
        f"{args.addresses} addresses, {args.rounds} rounds (medians): aiosmtplib alone "
        f"{floor:.0f} msg/s, partnerpost {rate:.0f} msg/s, ratio {rate / floor:.2f}; "
        f"peak RSS {max(peaks):.0f} MB"
    )


if __name__ == "__main__":
    main()
