"""Hostile input: a fixed set of malformed requests to the two JSON APIs, counted by outcome.

    .venv/bin/python bench/malformed_requests.py [--count 400] [--seed 8]

Serves the real app (uvicorn, a fresh SQLite store in a temporary folder) on a free
loopback port and sends `--count` requests, half to the public `POST /api/abonnements`,
half to the admin API (`POST /api/articles`, `PUT /api/articles/{slug}`, with the token).
Each request combines a malformed body (non-standard JSON numbers, lone surrogates, bytes
that are no UTF-8, deep nesting, megabyte strings, wrong shapes) with a content type
(JSON, text/plain, a form, none). Prints how many answers were 2xx, 4xx, 413, 5xx and how
many connections were reset, and the bodies that drew a 5xx or a reset.
Goal (issue 8, finding 13): 0 answers 5xx, 0 resets.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOKEN = "bench-admin-token-0123456789"
ARTICLE = {
    "title": "Leipzig und Kyjiw vereinbaren Austausch",
    "teaser": "Die Partnerstädte wollen im Frühjahr Schulen verbinden.",
    "place": "Leipzig",
    "published": "2024-11-20",
}
SUBSCRIBER = {"name": "Stadt Borna", "email": "rathaus@borna.example.org"}


def _bodies(rng: random.Random, valid: dict[str, object]) -> list[tuple[str, bytes]]:
    """Malformed bodies, each with a label; some are valid shapes with one bad field."""
    big = "x" * 3_000_000
    fields = list(valid)
    bodies: list[tuple[str, bytes]] = [
        ("[Infinity]", b"[Infinity]"),
        ("NaN", b"NaN"),
        ("1e99999", b"1e99999"),
        ('"\\ud800"', b'"\\ud800"'),
        ("bytes ff fe 00", b"\xff\xfe\x00"),
        ("-Infinity", b"-Infinity"),
        ("empty", b""),
        ("null", b"null"),
        ("truncated object", json.dumps(valid).encode()[:-3]),
        ("nested 100000 deep", b"[" * 100_000),
        ("nested 1000 deep", b"[" * 1000 + b"]" * 1000),
        ("object nested 5000 deep", b'{"a":' * 5000 + b"1" + b"}" * 5000),
        ("3 MB string", json.dumps(big).encode()),
        ("3 MB field", json.dumps({**valid, fields[0]: big}).encode()),
        ("NUL bytes", b"\x00" * 64),
        ("latin-1 object", json.dumps(valid, ensure_ascii=False).encode("latin-1", "replace")),
        ("utf-16 object", json.dumps(valid).encode("utf-16")),
        ("BOM object", b"\xef\xbb\xbf" + json.dumps(valid).encode()),
        ("huge integer", b"9" * 5000),
        ("array of objects", json.dumps([valid, valid]).encode()),
    ]
    for name in fields:
        for label, value in (
            ("NaN", "NaN"),
            ("Infinity", "Infinity"),
            ("1e99999", "1e99999"),
            ("lone surrogate", '"\\udc80"'),
            ("surrogate pair", '"\\ud83c\\uddfa\\ud83c\\udde6"'),
            ("NUL", '"a\\u0000b"'),
            ("object", '{"x": [1, 2]}'),
            ("huge int", "9" * 5000),
            ("negative zero", "-0.0"),
        ):
            document = json.dumps({**valid, name: "@@"}).replace('"@@"', value)
            bodies.append((f"{name}={label}", document.encode()))
    for _ in range(20):
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        bodies.append(("random bytes", raw))
    return bodies


CONTENT_TYPES = [
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "application/json; charset=latin-1",
    None,
]


def requests(count: int, seed: int) -> Iterator[tuple[str, str, str, bytes, str | None]]:
    """(label, method, path, body, content type) of `count` requests, the same every run."""
    rng = random.Random(seed)
    public = _bodies(rng, SUBSCRIBER)
    admin = _bodies(rng, ARTICLE)
    for index in range(count):
        content_type = CONTENT_TYPES[index // 2 % len(CONTENT_TYPES)]
        if index % 2 == 0:
            label, body = public[index // 2 % len(public)]
            yield f"public {label}", "POST", "/api/abonnements", body, content_type
        else:
            label, body = admin[index // 2 % len(admin)]
            method, path = rng.choice(
                [("POST", "/api/articles"), ("PUT", "/api/articles/leipzig-und-kyjiw")]
            )
            yield f"admin {label}", method, path, body, content_type


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """The real app under uvicorn in a thread, on a free loopback port."""
    import uvicorn

    from service.config import Settings
    from service.web import create_app

    settings = Settings(
        _env_file=None,
        database_url=f"sqlite+aiosqlite:///{folder / 'store.sqlite3'}",
        feeds_dir=folder / "feeds",
        outbox_dir=folder / "outbox",
        admin_token=TOKEN,
        confirmations_per_client=1_000_000,
        confirmations_per_address=1_000_000,
        log_level="ERROR",
    )
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=0, log_config=None, log_level="critical"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    for _ in range(1000):
        if server.started:
            break
        threading.Event().wait(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def run(count: int, seed: int, report: Callable[[str], None] = print) -> dict[str, int]:
    outcomes: collections.Counter[str] = collections.Counter()
    bad: collections.Counter[str] = collections.Counter()
    with tempfile.TemporaryDirectory() as folder, serve(Path(folder)) as url:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=url, timeout=30) as client:
            client.post("/api/articles", json=ARTICLE, headers=headers)
            for label, method, path, body, content_type in requests(count, seed):
                sent = dict(headers) if path.startswith("/api/articles") else {}
                if content_type is not None:
                    sent["Content-Type"] = content_type
                try:
                    response = client.request(method, path, content=body, headers=sent)
                except httpx.TransportError as exc:
                    outcomes["reset"] += 1
                    bad[f"reset ({type(exc).__name__}): {label} as {content_type}"] += 1
                    continue
                code = response.status_code
                kind = "413" if code == 413 else f"{code // 100}xx"
                outcomes[kind] += 1
                if code >= 500:
                    bad[f"{code}: {label} as {content_type}"] += 1
    report(
        f"{count} requests: "
        + ", ".join(f"{outcomes[k]} {k}" for k in ("2xx", "4xx", "413", "5xx", "reset"))
    )
    for line, times in sorted(bad.items()):
        report(f"  {times} x {line}")
    return dict(outcomes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--seed", type=int, default=8)
    arguments = parser.parse_args()
    outcomes = run(arguments.count, arguments.seed)
    sys.exit(1 if outcomes.get("5xx") or outcomes.get("reset") else 0)


if __name__ == "__main__":
    main()
