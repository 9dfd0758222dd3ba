# syntax=docker/dockerfile:1
# partnerpost: build the wheel in one stage, run it from a slim image as a non-root user.

FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir build
COPY pyproject.toml README.md ./
COPY service ./service
COPY templates ./templates
RUN python -m build --wheel --outdir /dist

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PARTNERPOST_DATABASE_URL=sqlite+aiosqlite:////data/partnerpost.sqlite3 \
    PARTNERPOST_FEEDS_DIR=/app/feeds \
    PARTNERPOST_OUTBOX_DIR=/data/outbox
RUN groupadd --system partnerpost \
    && useradd --system --gid partnerpost --home-dir /app --no-create-home partnerpost \
    && mkdir -p /app/feeds /data \
    && chown partnerpost:partnerpost /app/feeds /data
COPY --from=build /dist/*.whl /tmp/
RUN pip install --no-cache-dir /tmp/*.whl && rm /tmp/*.whl
WORKDIR /app
USER partnerpost
VOLUME ["/app/feeds", "/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
# serve migrates on start; SIGTERM stops it gracefully within PARTNERPOST_SHUTDOWN_GRACE_SECONDS.
STOPSIGNAL SIGTERM
CMD ["partnerpost", "serve", "--host", "0.0.0.0", "--port", "8000"]
