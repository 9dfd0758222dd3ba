"""The image built and run for real: a base image made from Debian packages, the project's
image on it from a wheelhouse, run with host networking against the PostgreSQL on
127.0.0.1:5432 and an aiosmtpd sink. Selected only by `make container-test`."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import jsonschema
import pytest
import yaml

from ..helpers import DEMO, POSTGRES_ADMIN_DSN, ROOT, free_port, wait_until_blocking

pytestmark = pytest.mark.container

BASE_IMAGE = "partnerpost-base:bookworm"
IMAGE = "partnerpost:container-test"
# What partnerpost adds to its base image; the virtualenv is about 120 MB.
MAX_ADDED_BYTES = 200 * 1024 * 1024


def _sh(*args: str, check: bool = True, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def docker(
    *args: str, check: bool = True, timeout: float = 600, **kw
) -> subprocess.CompletedProcess:
    # The legacy builder: Debian's engine has no buildx, and nothing is pulled.
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    return _sh("docker", *args, check=check, timeout=timeout, env=env, **kw)


def _inspect(kind: str, name: str) -> dict:
    return json.loads(docker(kind, "inspect", name).stdout)[0]


@pytest.fixture(scope="module")
def image() -> str:
    """Build (once per run) the base image from Debian packages, then the project's image
    on it from a wheelhouse made on this host."""
    if shutil.which("docker") is None or docker("info", check=False).returncode != 0:
        pytest.fail("no Docker engine answers: install docker.io and start dockerd")
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode != 0:
        _sh(
            "sh",
            "-c",
            "mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,"
            f"ca-certificates bookworm - | docker import - {BASE_IMAGE}",
        )
    wheelhouse = ROOT / "wheelhouse"
    for old in wheelhouse.glob("*.whl"):
        old.unlink()
    _sh(
        sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheelhouse),
        str(ROOT), "hatchling",
    )  # fmt: skip
    docker("build", "--quiet", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-t", IMAGE, str(ROOT))
    return IMAGE


def test_image_is_lean_and_runs_as_a_non_root_user(image):
    added = _inspect("image", image)["Size"] - _inspect("image", BASE_IMAGE)["Size"]
    print(f"\nimage {image}: {_inspect('image', image)['Size'] / 1e6:.0f} MB, "
          f"{added / 1e6:.0f} MB over the base image")  # fmt: skip
    assert _inspect("image", image)["Config"]["User"] == "partnerpost"
    probe = docker(
        "run", "--rm", "--entrypoint", "sh", image, "-c",
        "id -u; for t in gcc cc make pip pip3; do command -v $t; done; "
        # The project's own tests, a developer's virtualenv, .env or database, the build
        # backend: none of them belongs in the runtime image.
        "find / -xdev \\( -name .venv -o -name .env -o -name 'test_golden.py' "
        "-o -name '*.sqlite3' -o -name 'hatchling*' -o -name wheelhouse \\) "
        "-print 2>/dev/null; true",
    ).stdout.split()  # fmt: skip
    assert probe[0] != "0"
    assert probe[1:] == [], f"build tools or test files in the image: {probe[1:]}"
    assert added < MAX_ADDED_BYTES


def _postgres(sql: str) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(POSTGRES_ADMIN_DSN)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(run())


def _fetch(database: str, sql: str) -> list:
    async def run() -> list:
        server = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0]
        connection = await asyncpg.connect(f"{server}/{database}")
        try:
            return list(await connection.fetch(sql))
        finally:
            await connection.close()

    return asyncio.run(run())


@pytest.fixture
def database() -> Iterator[str]:
    name = f"pp_container_{uuid.uuid4().hex[:10]}"
    _postgres(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        _postgres(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class _Sink:
    """aiosmtpd in its own thread, recording what it accepts."""

    def __init__(self) -> None:
        self.received: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.received.append((list(envelope.rcpt_tos), bytes(envelope.original_content)))
        return "250 OK"


@pytest.fixture
def smtp_sink() -> Iterator[tuple[_Sink, int]]:
    from aiosmtpd.controller import Controller

    sink = _Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


def test_container_migrates_serves_healthy_feeds_sends_a_digest_and_stops_with_0(
    image, database, smtp_sink
):
    sink, smtp_port = smtp_sink
    port = free_port()
    tag = uuid.uuid4().hex[:8]
    app, worker, volume = f"pp-app-{tag}", f"pp-worker-{tag}", f"pp-feeds-{tag}"
    server = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    env = {
        "PARTNERPOST_DATABASE_URL": f"{server}/{database}",
        "PARTNERPOST_PORT": str(port),
        "PARTNERPOST_BASE_URL": "https://partnerpost.example.org",
        "PARTNERPOST_ENVIRONMENT": "production",
        "PARTNERPOST_SECRET_KEY": secrets.token_urlsafe(48),
        "PARTNERPOST_MAILER": "smtp",
        "PARTNERPOST_SMTP_HOST": "127.0.0.1",
        "PARTNERPOST_SMTP_PORT": str(smtp_port),
        "PARTNERPOST_MAIL_FROM": "Kommunalpartnerschaften Ukraine <news@partnerpost.example.org>",
        "PARTNERPOST_DIGEST_RETRY_SECONDS": "2",
        "PARTNERPOST_FEEDS_CHECK_SECONDS": "2",
        "PARTNERPOST_SHUTDOWN_GRACE_SECONDS": "20",
        "PARTNERPOST_FEEDS_DIR": "/app/feeds",  # the optional export, into the volume
    }
    flags = ["--network", "host", "-v", f"{volume}:/app/feeds"]
    for name, value in env.items():
        flags += ["-e", f"{name}={value}"]
    try:
        migrated = docker("run", "--rm", *flags, image, "partnerpost", "db", "upgrade")
        assert "database is up to date" in migrated.stdout
        assert _fetch(database, "SELECT version_num FROM alembic_version")

        added = docker(
            "run", "--rm", *flags, image, "partnerpost", "subscribers", "add",
            "Stadt Leipzig", "rathaus@leipzig.example", "--partner", "Kyjiw",
        )  # fmt: skip
        assert "subscribed" in added.stdout
        # Subscribed three weeks ago: the last weekly period is due for it now.
        _fetch(database, "UPDATE addresses SET confirmed_at = now() - interval '21 days'")
        imported = docker(
            "run", "--rm", "-i", *flags, image, "partnerpost", "ingest", "-",
            input=DEMO.read_text(encoding="utf-8"),
        )  # fmt: skip
        assert "10 new" in imported.stdout

        docker(
            "run", "-d", "--name", worker, "--no-healthcheck", *flags, image,
            "partnerpost", "worker",
        )  # fmt: skip
        wait_until_blocking(lambda: sink.received, 150, 1, "a digest from the worker container")
        (recipients, data), *_ = sink.received
        assert recipients == ["rathaus@leipzig.example"]
        assert b"Subject: " in data and b"https://partnerpost.example.org/abmelden/" in data

        docker("run", "-d", "--name", app, "--health-interval", "2s", *flags, image)
        wait_until_blocking(
            lambda: _inspect("container", app)["State"]["Health"]["Status"] == "healthy",
            150,
            1,
            "HEALTHCHECK healthy",
        )
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        assert docker("exec", app, "id", "-un").stdout.strip() == "partnerpost"
        assert "partnerpost" in docker("exec", app, "cat", "/proc/1/cmdline").stdout
        in_volume = docker(
            "run", "--rm", "-v", f"{volume}:/feeds", "--entrypoint", "ls", image, "/feeds"
        ).stdout.split()
        assert {"artikel.xml", "artikel.atom", "artikel.json"} <= set(in_volume)

        for container in (worker, app):
            docker("stop", "--time", "40", container)
            state = _inspect("container", container)["State"]
            # 137 would be the SIGKILL at the end of the grace period; 143 an unhandled TERM.
            assert state["ExitCode"] == 0, docker("logs", container).stderr[-3000:]
        assert len(sink.received) == 1
    finally:
        for container in (app, worker):
            docker("rm", "--force", container, check=False)
        docker("volume", "rm", "--force", volume, check=False)


def _compose_config(tmp_path: Path, *files: str, dotenv: str) -> dict:
    for name in ("docker-compose.yml", "docker-compose.dev.yml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "import").mkdir(exist_ok=True)
    (tmp_path / ".env").write_text(dotenv, encoding="utf-8")
    args = [arg for name in files for arg in ("-f", name)]
    result = _sh("docker-compose", *args, "config", cwd=tmp_path)
    return yaml.safe_load(result.stdout)


def _compose_spec() -> jsonschema.Draft201909Validator:
    """The Compose Spec schema as Debian's docker-compose ships it."""
    files = _sh("dpkg", "-L", "docker-compose").stdout.split()
    (path,) = [f for f in files if f.endswith("/compose_spec.json")]
    return jsonschema.Draft201909Validator(json.loads(Path(path).read_text(encoding="utf-8")))


def test_compose_v1_accepts_the_files_and_dotenv_decides_the_relay(tmp_path):
    dotenv = (ROOT / ".env.example").read_text(encoding="utf-8")
    production = _compose_config(tmp_path, "docker-compose.yml", dotenv=dotenv)
    development = _compose_config(
        tmp_path, "docker-compose.yml", "docker-compose.dev.yml", dotenv=dotenv
    )
    schema = _compose_spec()
    for name in ("docker-compose.yml", "docker-compose.dev.yml"):
        schema.validate(yaml.safe_load((ROOT / name).read_text(encoding="utf-8")))

    app = production["services"]["app"]
    assert app["environment"]["PARTNERPOST_SMTP_HOST"] == "relay.example.org"
    assert "mail" not in production["services"]
    assert all(str(p).startswith("127.0.0.1:") for p in app["ports"])
    assert development["services"]["app"]["environment"]["PARTNERPOST_SMTP_HOST"] == "mail"
    assert all(str(p).startswith("127.0.0.1:") for p in development["services"]["mail"]["ports"])
