# partnerpost: install into a virtualenv in a build stage, copy only that virtualenv into
# the runtime stage, and run as a non-root user.
#
# BASE_IMAGE: any Debian-based image with Python 3.11 and its venv module
# (python:3.11-slim, or one made from Debian packages; see README "Operating").
# wheelhouse/: if it holds wheels (`pip wheel --wheel-dir wheelhouse . hatchling`), the
# image is built from them alone, without a package index (offline builds).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
COPY wheelhouse/ /wheelhouse/
COPY pyproject.toml README.md /src/
COPY service /src/service
COPY templates /src/templates
RUN set -eu; \
    python3 -m venv /opt/partnerpost; \
    if ls /wheelhouse/*.whl >/dev/null 2>&1; then index="--no-index --find-links /wheelhouse"; \
    else index=""; fi; \
    /opt/partnerpost/bin/pip install --no-cache-dir --no-compile $index /src; \
    /opt/partnerpost/bin/pip uninstall --yes --quiet setuptools pip; \
    find /opt/partnerpost -name '__pycache__' -prune -exec rm -rf {} +

FROM ${BASE_IMAGE} AS runtime
ENV PATH=/opt/partnerpost/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PARTNERPOST_HOST=0.0.0.0 \
    PARTNERPOST_PORT=8000 \
    PARTNERPOST_DATABASE_URL=sqlite+aiosqlite:////data/partnerpost.sqlite3 \
    PARTNERPOST_OUTBOX_DIR=/data/outbox
RUN groupadd --system --gid 10001 partnerpost \
    && useradd --system --uid 10001 --gid partnerpost --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin partnerpost \
    && mkdir -p /app/feeds /data /import \
    && chown partnerpost:partnerpost /app/feeds /data
COPY --from=build /opt/partnerpost /opt/partnerpost
WORKDIR /app
USER partnerpost
# The feeds live in the database; /app/feeds is there for PARTNERPOST_FEEDS_DIR=/app/feeds,
# an optional export of them as files (mount a volume there for a reverse proxy).
VOLUME ["/data"]
EXPOSE 8000
# The port follows PARTNERPOST_PORT (host networking may need another one).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('PARTNERPOST_PORT', '8000'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status != 200)"]
# serve migrates on start and, as PID 1, handles SIGTERM itself: it lets the message in
# flight finish within PARTNERPOST_SHUTDOWN_GRACE_SECONDS and exits 0.
STOPSIGNAL SIGTERM
CMD ["partnerpost", "serve"]
