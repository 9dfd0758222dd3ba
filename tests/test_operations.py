"""Operations: container files, the installed wheel, health, metrics, logs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import venv
from pathlib import Path

import jsonschema
import pytest
import yaml

from service import store
from service.config import Settings
from service.web import create_app

from .helpers import (
    AUTH,
    DATA,
    DEMO,
    ROOT,
    app_client,
    cli,
    digest_run,
    http_client,
    subscribe,
)


def _variables() -> list[str]:
    return [f"PARTNERPOST_{name.upper()}" for name in Settings.model_fields]


def _compose(name: str = "docker-compose.yml") -> dict:
    return yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))


def _compose_schema() -> jsonschema.Draft201909Validator:
    schema = json.loads((DATA / "compose-spec.json").read_text(encoding="utf-8"))
    # The file names draft 2019-09 as `.../schema#`, which jsonschema does not look up.
    return jsonschema.Draft201909Validator(schema)


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.dev.yml"])
def test_compose_files_follow_the_compose_specification(name):
    _compose_schema().validate(_compose(name))


def test_production_compose_file_takes_partnerpost_settings_from_dotenv_only():
    """`environment:` overrides `.env`: SMTP set there must not be overridden (it once sent
    everything to the development mail catcher)."""
    services = _compose()["services"]
    assert set(services) == {"app", "worker", "db"}
    for name in ("app", "worker"):
        service = services[name]
        assert service["env_file"] == ".env"
        assert set(service["environment"]) == {"PARTNERPOST_DATABASE_URL"}
        assert "./import:/import:ro" in service["volumes"]
    assert services["app"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert services["worker"]["command"] == ["partnerpost", "worker"]
    assert "pg_isready" in " ".join(services["db"]["healthcheck"]["test"])
    assert "pgdata" in _compose()["volumes"]


def test_published_ports_are_bound_to_loopback():
    for name in ("docker-compose.yml", "docker-compose.dev.yml"):
        for service in _compose(name)["services"].values():
            for port in service.get("ports", []):
                assert port.startswith("127.0.0.1:"), f"{name}: {port}"


def test_mail_catcher_is_only_in_the_development_file():
    dev = _compose("docker-compose.dev.yml")["services"]
    assert dev["mail"]["image"].startswith("axllent/mailpit")
    assert dev["app"]["environment"]["PARTNERPOST_SMTP_HOST"] == "mail"
    assert "mailpit" not in (ROOT / "docker-compose.yml").read_text(encoding="utf-8")


def test_compose_file_with_an_error_is_caught_by_the_schema():
    compose = _compose()
    compose["services"]["app"]["depends_on"]["db"]["condition"] = "when_ready"
    with pytest.raises(jsonschema.ValidationError):
        _compose_schema().validate(compose)


def test_every_variable_the_app_reads_is_documented():
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^#? ?(PARTNERPOST_[A-Z_]+)=", example, re.MULTILINE))
    assert documented == set(_variables())
    missing = [v for v in _variables() if f"`{v}`" not in readme]
    assert missing == []
    compose = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    assert set(re.findall(r"PARTNERPOST_[A-Z_]+", compose)) <= set(_variables())


def test_dockerfile_takes_its_base_image_as_argument_and_runs_a_virtualenv_as_non_root():
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", dockerfile, re.MULTILINE)
    stages = re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)
    assert stages == ["${BASE_IMAGE}", "${BASE_IMAGE}"]
    assert "python3 -m venv /opt/partnerpost" in dockerfile
    assert "--no-index --find-links /wheelhouse" in dockerfile
    assert "COPY --from=build /opt/partnerpost /opt/partnerpost" in dockerfile
    assert re.search(r"^USER partnerpost$", dockerfile, re.MULTILINE)
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", dockerfile, re.MULTILINE)
    assert 'CMD ["partnerpost", "serve"]' in dockerfile
    assert 'VOLUME ["/data"]' in dockerfile  # the feeds live in the database


def test_build_context_leaves_out_secrets_the_database_and_the_virtualenv():
    """No .dockerignore sent .venv, var/partnerpost.sqlite3 and .env to the builder."""
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    rules = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert rules[0] == "*"  # everything is left out unless let in by name below
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "service", "templates", "wheelhouse"}


def test_built_wheel_installs_and_runs_in_a_fresh_environment(tmp_path: Path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("partnerpost-*.whl")
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python, partnerpost = environment / "bin" / "python", environment / "bin" / "partnerpost"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PARTNERPOST_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'data' / 'db.sqlite3'}",
        "PARTNERPOST_FEEDS_DIR": str(tmp_path / "feeds"),
    }
    run = {"cwd": tmp_path, "env": env, "capture_output": True, "timeout": 120}

    helped = subprocess.run([partnerpost, "--help"], **run)
    upgraded = subprocess.run([partnerpost, "db", "upgrade"], **run)
    imported = subprocess.run([partnerpost, "ingest", str(DEMO)], **run)

    assert helped.returncode == 0 and b"serve" in helped.stdout
    assert upgraded.returncode == 0, upgraded.stderr.decode()
    assert imported.returncode == 0 and b"10 new" in imported.stdout
    packaged = subprocess.run(
        [python, "-c", "import service.templating as t; print(t.templates_dir())"], **run
    )
    templates = Path(packaged.stdout.decode().strip())
    assert templates.is_relative_to(environment)
    assert (templates / "email" / "digest.html.j2").is_file()


async def test_healthz_turns_503_with_the_reason(settings, engine):
    app = create_app(settings)
    async with http_client(app) as client:
        healthy = await client.get("/healthz")
        working = app.state.engine
        app.state.engine = store.create_engine("postgresql+asyncpg://nobody@127.0.0.1:9/none")
        try:
            broken_db = await client.get("/healthz")
        finally:
            await app.state.engine.dispose()
            app.state.engine = working
        app.state.scheduler.shutdown(wait=False)
        stopped = await client.get("/healthz")

    assert healthy.status_code == 200
    assert broken_db.status_code == 503
    assert "cannot reach the database" in broken_db.json()["problems"][0]
    assert stopped.status_code == 503
    assert stopped.json()["problems"] == ["scheduler is not running"]


async def test_metrics_are_prometheus_text_with_prefixed_names(settings, engine, sessions):
    await subscribe(sessions, "a@leipzig.de", name="Stadt Leipzig")
    await subscribe(
        sessions, "b@leipzig.de", name="Stadt Leipzig", status=store.AddressStatus.PENDING
    )
    protected = settings.model_copy(update={"metrics_require_token": True})
    async with app_client(protected) as client:
        refused = await client.get("/metrics")
        response = await client.get("/metrics", headers=AUTH)

    assert refused.status_code == 401
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    body = response.text
    names = set(re.findall(r"^# TYPE (\S+)", body, re.MULTILINE))
    assert names and all(n.startswith("partnerpost_") for n in names)
    assert {
        "partnerpost_articles",
        "partnerpost_subscribers",
        "partnerpost_deliveries",
        "partnerpost_smtp_send_seconds",
        "partnerpost_feed_build_seconds",
        "partnerpost_digest_run_seconds",
    } <= names
    assert 'partnerpost_subscribers{status="active"} 1.0' in body
    assert 'partnerpost_subscribers{status="pending"} 1.0' in body
    assert "partnerpost_articles 0.0" in body


async def test_json_logs_and_one_summary_line_per_digest_run(mail_settings, smtp_server):
    assert (await cli(mail_settings, "ingest", str(DEMO)))[0] == 0
    await cli(mail_settings, "subscribers", "add", "Stadt Leipzig", "a@leipzig.de")

    code, _, err = await digest_run(
        mail_settings,
        PARTNERPOST_LOG_FORMAT="json",
    )

    assert code == 0
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert records and all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    (summary,) = [r for r in records if r["message"].startswith("digest run:")]
    assert summary["digest_run"]["sent"] == 1
    assert summary["digest_run"]["failed"] == 0
    assert "weekly:" in " ".join(summary["digest_run"]["periods"])
    assert isinstance(summary["digest_run"]["seconds"], float)
