"""Crash consistency: SIGKILL `partnerpost digest run` at random moments, rerun, count mail.

    .venv/bin/python bench/crash_consistency.py [--kills 50] [--addresses 500] [--pool 2]
                                                 [--seed N] [--database-url URL]

Each round imports one new article, starts `partnerpost digest run` for the next daily
period in a subprocess against an aiosmtpd sink (a process of its own that logs every
accepted message before it answers 250), kills the run with SIGKILL at a random moment
(during start-up and planning, or after a random number of accepted messages plus a few
milliseconds), then runs it again to the end. The promise checked per round: every
address got that period's digest, and at most one duplicate per pooled SMTP connection
came from the kill (the message that was being handed over). Prints one JSON line; exits
1 when the promise broke. The default store is a fresh SQLite file; `--database-url`
takes an empty database (e.g. a fresh PostgreSQL one) instead.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PARTNERPOST = str(Path(sys.executable).parent / "partnerpost")
BERLIN = ZoneInfo("Europe/Berlin")
PER_SUBSCRIBER = 10


def _sink(log_path: str, port_out: multiprocessing.connection.Connection) -> None:
    """An SMTP server that accepts everything and logs `recipient<TAB>peer` per message
    before it answers, so the log holds every message the relay took responsibility for."""
    from aiosmtpd.smtp import SMTP

    log = Path(log_path).open("a", encoding="utf-8")

    class Accept:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            peer = getattr(session, "peer", ("?", 0))
            for recipient in getattr(envelope, "rcpt_tos", []):
                log.write(f"{recipient}\t{peer[1]}\n")
            log.flush()
            return "250 OK"

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(
            lambda: SMTP(Accept(), hostname="sink"), "127.0.0.1", 0
        )
        port_out.send(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


def _received(log_path: Path) -> list[tuple[str, str]]:
    lines = log_path.read_text(encoding="utf-8").splitlines()
    return [(line.split("\t")[0], line.split("\t")[1]) for line in lines if "\t" in line]


async def _prepare(database_url: str, addresses: int) -> list[str]:
    from service import store

    engine = store.create_engine(database_url)
    try:
        await store.upgrade(engine)
        sessions = store.session_factory(engine)
        emails = [
            f"stelle{i:04d}@gemeinde{i // PER_SUBSCRIBER:03d}.example" for i in range(addresses)
        ]
        async with sessions() as session, session.begin():
            for start in range(0, addresses, PER_SUBSCRIBER):
                subscriber = await store.create_subscriber(
                    session,
                    name=f"Gemeinde {start // PER_SUBSCRIBER:03d}",
                    frequency=store.Frequency.DAILY,
                )
                for email in emails[start : start + PER_SUBSCRIBER]:
                    await store.add_address(session, subscriber, email, store.AddressStatus.ACTIVE)
        return emails
    finally:
        await engine.dispose()


async def _new_article(database_url: str, number: int) -> None:
    from service import ingest, store

    engine = store.create_engine(database_url)
    try:
        line = json.dumps(
            {
                "key": f"runde-{number}",
                "title": f"Nachricht der Runde {number}",
                "teaser": f"Was in Runde {number} geschah.",
                "place": "Leipzig",
                "published": "2026-11-20",
            }
        )
        await ingest.save(store.session_factory(engine), ingest.parse_ndjson(line))
    finally:
        await engine.dispose()


def _env(database_url: str, port: int, pool: int, workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARTNERPOST_")}
    env.update(
        PARTNERPOST_DATABASE_URL=database_url,
        PARTNERPOST_MAILER="smtp",
        PARTNERPOST_SMTP_HOST="127.0.0.1",
        PARTNERPOST_SMTP_PORT=str(port),
        PARTNERPOST_SMTP_POOL_SIZE=str(pool),
        PARTNERPOST_FEEDS_DIR=str(workdir / "feeds"),
        PARTNERPOST_LOG_LEVEL="WARNING",
        PARTNERPOST_DIGEST_RETRY_BASE_SECONDS="0",
    )
    return env


def _kill_at_random(
    process: subprocess.Popen[bytes],
    log_path: Path,
    before: int,
    addresses: int,
    rng: random.Random,
) -> str:
    """Kill during start-up or after a random number of accepted messages; returns the
    phase the kill fell into, or "finished" when the run ended first."""
    if rng.random() < 0.2:
        phase, deadline = "startup", time.monotonic() + rng.uniform(0.0, 2.0)
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.005)
    else:
        phase, target = "sending", before + rng.randrange(0, addresses)
        while process.poll() is None and len(_received(log_path)) < target:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.01))  # land anywhere between two messages
    if process.poll() is not None:
        return "finished"
    process.send_signal(signal.SIGKILL)
    process.wait()
    return phase


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--addresses", type=int, default=500)
    parser.add_argument("--pool", type=int, default=2, help="PARTNERPOST_SMTP_POOL_SIZE")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--database-url", default=None, help="an empty database")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    started = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        database_url = args.database_url or f"sqlite+aiosqlite:///{workdir / 'store.sqlite3'}"
        log_path = workdir / "sink.log"
        log_path.touch()
        parent, child = multiprocessing.Pipe()
        sink = multiprocessing.Process(target=_sink, args=(str(log_path), child), daemon=True)
        sink.start()
        port = parent.recv()
        env = _env(database_url, port, args.pool, workdir)
        emails = asyncio.run(_prepare(database_url, args.addresses))
        first_day = (datetime.now(BERLIN) + timedelta(days=1)).replace(
            hour=8, minute=0, second=0, microsecond=0
        )

        phases: collections.Counter[str] = collections.Counter()
        duplicates_per_kill: list[int] = []
        missing_total, rerun_failures, messages, number = 0, 0, 0, 0
        # A round whose run ended before its kill came counts, but is no kill: go on.
        while phases["startup"] + phases["sending"] < args.kills and number < 3 * args.kills:
            asyncio.run(_new_article(database_url, number))
            at = (first_day + timedelta(days=number)).isoformat()
            before = len(_received(log_path))
            command = [PARTNERPOST, "digest", "run", "--at", at]
            process = subprocess.Popen(
                command, env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            phases[_kill_at_random(process, log_path, before, args.addresses, rng)] += 1
            rerun = subprocess.run(command, env=env, cwd=workdir, capture_output=True)
            if rerun.returncode != 0:
                rerun_failures += 1
                print(rerun.stdout.decode() + rerun.stderr.decode(), file=sys.stderr)
            received = _received(log_path)[before:]
            messages += len(received)
            per_address = collections.Counter(recipient for recipient, _peer in received)
            missing_total += sum(1 for email in emails if per_address[email] == 0)
            duplicates_per_kill.append(sum(n - 1 for n in per_address.values() if n > 1))
            number += 1
        sink.terminate()

    max_duplicates = max(duplicates_per_kill, default=0)
    result = {
        "kills": phases["startup"] + phases["sending"],
        "rounds": number,
        "kill_phases": dict(phases),
        "addresses": args.addresses,
        "pool": args.pool,
        "messages": messages,
        "missing": missing_total,
        "duplicates": sum(duplicates_per_kill),
        "max_duplicates_per_kill": max_duplicates,
        "kills_with_a_duplicate": sum(1 for n in duplicates_per_kill if n),
        "rerun_failures": rerun_failures,
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 1),
    }
    result["ok"] = (
        result["kills"] == args.kills
        and missing_total == 0
        and rerun_failures == 0
        and max_duplicates <= args.pool
    )
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
