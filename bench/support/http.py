"""Serving benchmarks' tools: `partnerpost serve` as an operator runs it, nginx serving the
same bytes (the floor), and wrk measuring both.

nginx and wrk are Debian packages (nginx-light, wrk); both run as this user on loopback.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent.parent
PARTNERPOST = str(Path(sys.executable).parent / "partnerpost")
NGINX = "/usr/sbin/nginx"
WRK = "wrk"
DEMO = ROOT / "service" / "demo" / "kommunalpartnerschaften-ukraine.txt"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment(folder: Path, **extra: str) -> dict[str, str]:
    """A `partnerpost` environment on a SQLite store in `folder`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARTNERPOST_")}
    env.update(
        {
            "PARTNERPOST_DATABASE_URL": f"sqlite+aiosqlite:///{folder / 'store.sqlite3'}",
            "PARTNERPOST_FEEDS_DIR": str(folder / "feeds"),
            "PARTNERPOST_BASE_URL": "https://partnerpost.example.org",
            **extra,
        }
    )
    return env


def articles_ndjson(count: int) -> str:
    """`count` plain articles as NDJSON (enough of them make a feed of a given size)."""
    lines = []
    for n in range(count):
        day = f"2024-{1 + n % 12:02d}-{1 + n % 28:02d}"
        lines.append(
            json.dumps(
                {
                    "title": f"Partnerschaftsnachricht Nummer {n}: Austausch und Wiederaufbau",
                    "teaser": "Die Partnerstädte vereinbaren einen Austausch von Fachleuten "
                    "für Wasserversorgung, Schulen und Verwaltung. " * 2,
                    "place": "Leipzig",
                    "published": day,
                    "topics": ["Wiederaufbau"],
                }
            )
        )
    return "\n".join(lines) + "\n"


def prepare_store(folder: Path, extra_articles: int) -> dict[str, str]:
    """A migrated store in `folder` with the demo listing and `extra_articles` more."""
    env = environment(folder)
    for args, stdin in (
        (["ingest", str(DEMO)], None),
        (["ingest", "-", "--format", "ndjson"], articles_ndjson(extra_articles)),
    ):
        if stdin == "":
            continue
        subprocess.run(
            [PARTNERPOST, *args],
            env=env,
            cwd=folder,
            input=stdin.encode() if stdin else None,
            check=True,
            capture_output=True,
            timeout=120,
        )
    return env


@contextmanager
def partnerpost_serve(env: dict[str, str], folder: Path) -> Iterator[str]:
    """`partnerpost serve` on a free port with its log in a file; its base URL. It forks one
    worker per core (`--workers`), as nginx's `worker_processes auto` does for the floor."""
    port = free_port()
    workers = ["--workers", str(os.cpu_count() or 1)]
    url = f"http://127.0.0.1:{port}"
    with (folder / f"serve-{port}.log").open("wb") as log:
        process = subprocess.Popen(
            [PARTNERPOST, "serve", "--host", "127.0.0.1", "--port", str(port), *workers],
            env=env,
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for(url + "/healthz", process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_ok(url: str, seconds: float = 30) -> httpx.Response:
    """GET `url` until it answers 200."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            response = httpx.get(url, timeout=5)
            if response.status_code == 200:
                return response
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer 200 within {seconds}s")
        time.sleep(0.1)


def _wait_for(url: str, process: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"partnerpost serve exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"partnerpost serve did not answer within {seconds}s")


_NGINX_CONF = """
daemon off;
worker_processes auto;
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    types {{
        application/rss+xml xml;
        application/atom+xml atom;
        application/feed+json json;
        text/html html;
    }}
    charset utf-8;
    charset_types application/rss+xml application/atom+xml application/feed+json;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        index index.html;
        add_header Cache-Control "public, max-age=300";
    }}
}}
"""


@contextmanager
def nginx(root: Path, folder: Path) -> Iterator[str]:
    """nginx (etag on, as by default) serving `root` on a free port; its base URL."""
    port = free_port()
    # Run as root, nginx's workers run as nobody: they must be able to read the files.
    for path in (folder, *root.parents, *root.rglob("*"), root):
        if folder in (path, *path.parents):
            path.chmod(path.stat().st_mode | 0o755 if path.is_dir() else 0o644)
    conf = folder / "nginx.conf"
    conf.write_text(_NGINX_CONF.format(folder=folder, port=port, root=root), encoding="utf-8")
    process = subprocess.Popen(
        [NGINX, "-c", str(conf), "-p", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(url + "/", process, 10)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")


def wrk(url: str, seconds: float, headers: dict[str, str] | None = None) -> float:
    """Requests per second wrk measures against `url` (32 connections, 2 threads); fails
    on any error or non-2xx/3xx answer, so a broken server cannot look fast."""
    args = [WRK, "-c32", "-t2", f"-d{seconds:g}s", "--latency"]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    result = subprocess.run(
        [*args, url], capture_output=True, text=True, check=True, timeout=seconds + 30
    )
    if _NON_2XX.search(result.stdout) or "Socket errors" in result.stdout:
        raise RuntimeError(f"wrk saw errors against {url}:\n{result.stdout}")
    found = _RATE.search(result.stdout)
    if found is None:
        raise RuntimeError(f"no rate in wrk's output:\n{result.stdout}")
    return float(found.group(1))


def row(
    bench: str,
    work: str,
    values: list[float],
    floors: list[float] | None,
    goal: str,
    met: bool,
    size: str,
) -> dict[str, object]:
    """One table row in the benchmark convention (medians; ratio value/floor)."""
    import statistics

    value = round(statistics.median(values), 1)
    floor = round(statistics.median(floors), 1) if floors else None
    return {
        "bench": bench,
        "work": work,
        "value": value,
        "unit": "req/s",
        "floor": floor,
        "floor_name": "nginx 1.22 static file" if floors else None,
        "ratio": float(f"{value / floor:.3g}") if floor else None,
        "goal": goal,
        "met": met,
        "rounds": len(values),
        "size": size,
    }
