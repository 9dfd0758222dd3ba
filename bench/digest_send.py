"""Benchmark: `partnerpost digest run` over one SMTP connection against aiosmtplib alone.

    .venv/bin/python bench/digest_send.py [--tiny] [--addresses 2000] [--rounds 3]
                                          [--database-url postgresql+asyncpg://.../test]

Both sides send to postfix's `smtp-sink` (it accepts and discards every message) on a free
loopback port, over one connection. The floor is aiosmtplib sending ready-made messages of
the digest's size (the bytes of one real digest of the run, measured first); the measured
side is `partnerpost digest run` in a subprocess (plan, claim, render, send, record) on a
fresh store with N subscribed addresses. Rounds alternate floor and run.

Three rates of the run are printed: over the whole command (wall clock of the subprocess),
over the run as the command reports it (`seconds` of its `digest run` log line: planning,
claiming, rendering, sending, recording), and over its send phase (`send_seconds`). The
goal applies to the whole command minus its fixed start-up: the wall clock of the same
command on a store with no address (interpreter start, imports, settings, migration check,
an empty plan) is subtracted, so the rest is what the N messages cost (never taken as less
than the run the command timed itself).

With `--database-url` (an empty PostgreSQL database that the script may drop and fill per
round, such as the admin DB `test` on 127.0.0.1) the store is PostgreSQL instead of a
SQLite file. The last stdout line is the JSON summary (bench convention, see README).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PARTNERPOST = str(Path(sys.executable).parent / "partnerpost")
SMTP_SINK = "/usr/sbin/smtp-sink"
WORK = "digest run, 2,000 addresses, 25 KB, 1 connection"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_sink() -> tuple[subprocess.Popen[bytes], int]:
    """smtp-sink on a free loopback port; returns once it accepts connections."""
    port = _free_port()
    command = [SMTP_SINK, f"127.0.0.1:{port}", "1000"]
    if os.geteuid() == 0:  # it refuses to run as root without a user to switch to
        command[1:1] = ["-u", "root"]
    sink = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return sink, port
        except OSError as exc:
            if sink.poll() is not None:
                reason = sink.stderr.read().decode() if sink.stderr else ""
                raise SystemExit(f"smtp-sink exited: {reason}") from exc
            time.sleep(0.05)
    sink.kill()
    raise SystemExit("smtp-sink did not start listening in 10 s")


async def _floor(port: int, count: int, size: int) -> float:
    """Messages per second aiosmtplib alone manages over one connection."""
    import aiosmtplib

    line = b"x" * 76 + b"\r\n"
    body = b"Subject: floor\r\n\r\n" + line * (size // len(line))
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
    await client.connect()
    started = time.perf_counter()
    for i in range(count):
        await client.sendmail("a@b.example", [f"r{i}@c.example"], body)
    seconds = time.perf_counter() - started
    await client.quit()
    return count / seconds


def _environment(database_url: str, port: int, workdir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PARTNERPOST_DATABASE_URL": database_url,
        "PARTNERPOST_MAILER": "smtp",
        "PARTNERPOST_SMTP_HOST": "127.0.0.1",
        "PARTNERPOST_SMTP_PORT": str(port),
        "PARTNERPOST_SMTP_POOL_SIZE": "1",
        "PARTNERPOST_FEEDS_DIR": str(workdir / "feeds"),
        "PARTNERPOST_OUTBOX_DIR": str(workdir / "outbox"),
        "PARTNERPOST_LOG_LEVEL": "INFO",
        "PARTNERPOST_LOG_FORMAT": "json",
    }


async def _reset(database_url: str) -> None:
    """An empty PostgreSQL database: drop what an earlier round left."""
    from sqlalchemy import text

    from service import store

    engine = store.create_engine(database_url)
    async with engine.begin() as connection:
        await connection.execute(text("DROP SCHEMA public CASCADE"))
        await connection.execute(text("CREATE SCHEMA public"))
    await engine.dispose()


async def _prepare(database_url: str, count: int) -> None:
    """A migrated store with the demo articles and `count` confirmed weekly addresses."""
    from service import ingest, store

    engine = store.create_engine(database_url)
    await store.upgrade(engine)
    sessions = store.session_factory(engine)
    demo = (ROOT / "service/demo/kommunalpartnerschaften-ukraine.txt").read_text("utf-8")
    await ingest.save(sessions, ingest.parse_listing_text(demo))
    confirmed = datetime.now(UTC) - timedelta(days=3)
    async with sessions() as session, session.begin():
        subscriber = await store.create_subscriber(
            session, name="Gemeinde Vielfach", frequency=store.Frequency.WEEKLY
        )
        session.add_all(
            store.Address(
                subscriber_id=subscriber.id,
                email=f"stelle{i}@gemeinde.example",
                status="active",
                consecutive_failures=0,
                created_at=confirmed,
                confirmed_at=confirmed,
            )
            for i in range(count)
        )
    await engine.dispose()


async def _digest_size(database_url: str, at: datetime) -> int:
    """The bytes of the digest the first address gets (all of them get the same articles)."""
    from service import digest, store
    from service.config import Settings

    engine = store.create_engine(database_url)
    settings = Settings(_env_file=None, database_url=database_url)
    try:
        preview = await digest.preview(
            settings, store.session_factory(engine), "stelle0@gemeinde.example", at
        )
    finally:
        await engine.dispose()
    assert preview is not None, "the benchmark's store has no digest to send"
    return len(preview[1].data)


def _run(database_url: str, port: int, workdir: Path, at: datetime) -> dict[str, float]:
    """One `partnerpost digest run`: its wall clock and the seconds its report names."""
    started = time.perf_counter()
    result = subprocess.run(
        [PARTNERPOST, "digest", "run", "--at", at.isoformat()],
        env=_environment(database_url, port, workdir),
        cwd=workdir,
        capture_output=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"digest run failed: {result.stdout.decode()}{result.stderr.decode()}")
    report: dict[str, float] = {}
    for line in result.stderr.decode().splitlines():
        if '"digest_run"' in line:
            report = json.loads(line)["digest_run"]
    return {
        "wall": wall,
        "sent": float(report.get("sent", 0)),
        "run": float(report.get("seconds", 0.0)),
        "send": float(report.get("send_seconds", report.get("seconds", 0.0))),
    }


def _round(args: argparse.Namespace, port: int, workdir: Path, at: datetime) -> dict[str, float]:
    """Floor, then a start-up run on a store without addresses, then the measured run."""
    workdir.mkdir()
    urls = {
        kind: args.database_url or f"sqlite+aiosqlite:///{workdir / f'{kind}.sqlite3'}"
        for kind in ("empty", "full")
    }
    figures: dict[str, float] = {}
    for kind, count in (("empty", 0), ("full", args.addresses)):
        if args.database_url:
            asyncio.run(_reset(args.database_url))
        asyncio.run(_prepare(urls[kind], count))
        if kind == "full":
            figures["size"] = asyncio.run(_digest_size(urls[kind], at))
            figures["floor"] = asyncio.run(_floor(port, args.addresses, int(figures["size"])))
        run = _run(urls[kind], port, workdir, at)
        if kind == "empty":
            figures["startup"] = run["wall"]
            continue
        if run["sent"] != args.addresses:
            raise SystemExit(f"the run sent {run['sent']:.0f} of {args.addresses} digests")
        figures["wall"] = args.addresses / run["wall"]
        figures["run"] = args.addresses / run["run"]
        figures["send"] = args.addresses / run["send"]
        # What the N messages cost is never less than the run the command timed itself
        # (at a tiny size the start-up's own noise can exceed the difference).
        figures["value"] = args.addresses / max(run["wall"] - figures["startup"], run["run"])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="50 addresses, one round")
    parser.add_argument("--addresses", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="an empty PostgreSQL database")
    args = parser.parse_args()
    if args.tiny:
        args.addresses, args.rounds = 50, 1
    if not shutil.which(SMTP_SINK):
        raise SystemExit(f"{SMTP_SINK} is missing (Debian package postfix)")
    at = datetime.now(UTC) + timedelta(days=7)
    sink, port = _start_sink()
    rounds: list[dict[str, float]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for number in range(args.rounds):
                figures = _round(args, port, Path(tmp) / f"round{number}", at)
                rounds.append(figures)
                print(
                    f"round {number + 1}: floor {figures['floor']:.0f}/s; partnerpost "
                    f"{figures['value']:.0f}/s without start-up ({figures['startup']:.2f} s), "
                    f"{figures['wall']:.0f}/s whole command, {figures['run']:.0f}/s run, "
                    f"{figures['send']:.0f}/s send phase; {figures['size']:.0f} bytes",
                    flush=True,
                )
    finally:
        sink.terminate()
        sink.wait(10)
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    ratio = median["value"] / median["floor"]
    store_kind = "PostgreSQL" if args.database_url else "SQLite"
    summary = {
        "bench": "digest_send",
        "work": WORK,
        "value": round(median["value"], 1),
        "unit": "msg/s",
        "floor": round(median["floor"], 1),
        "floor_name": "aiosmtplib alone, same size, 1 connection, smtp-sink",
        "ratio": float(f"{ratio:.3g}"),
        "goal": "ratio >= 0.6",
        "met": ratio >= 0.6,
        "rounds": args.rounds,
        "size": f"{args.addresses} addresses, {median['size'] / 1000:.1f} KB, {store_kind}",
        "whole_command": round(median["wall"], 1),
        "run": round(median["run"], 1),
        "send_phase": round(median["send"], 1),
        "startup_seconds": round(median["startup"], 3),
        # The floor drifts with the machine's load between rounds: each round's own ratio.
        "round_ratios": [round(r["value"] / r["floor"], 3) for r in rounds],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
