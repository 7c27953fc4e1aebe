# One image for every Carousel service; docker-compose.yml builds it once and picks the
# console script per service (carousel-producer, carousel-dispatcher, carousel-worker,
# carousel-elasticity, carousel-flower, and simcloud for the demo cloud); it runs
# `python -m shared.preflight` as its one-shot check of the secrets before any of them
# starts, and `python -m shared.healthcheck` / `python -m scheduler.worker.ping` as the
# healthchecks. The `carousel` command-line client is installed too.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CAROUSEL_DB_URL=sqlite:////data/carousel.db \
    XDG_CACHE_HOME=/tmp/.cache

# Build from a scratch directory: a regular (non-editable) install into site-packages,
# then drop the sources so only the installed copy can be imported.
WORKDIR /tmp/src
COPY pyproject.toml ./
COPY shared/ ./shared/
COPY producer/ ./producer/
COPY scheduler/ ./scheduler/
COPY simcloud/ ./simcloud/
COPY carousel_cli/ ./carousel_cli/
# with the PostgreSQL driver: compose keeps the ledger in PostgreSQL
RUN pip install ".[postgres]" \
    && cd / && rm -rf /tmp/src

WORKDIR /app

# Unprivileged runtime user; /data holds the SQLite ledger of a container run on its own
# (compose sets CAROUSEL_DB_URL to its PostgreSQL). No VOLUME: a declared volume leaves an
# anonymous volume behind for every container that does not mount /data.
RUN groupadd --gid 10001 carousel \
    && useradd --uid 10001 --gid carousel --home-dir /app --no-create-home --shell /usr/sbin/nologin carousel \
    && mkdir -p /data \
    && chown carousel:carousel /data
USER carousel

EXPOSE 8000 8001 8002 5555 8100

# Defaults to the producer; compose sets `command:` per service.
CMD ["carousel-producer"]
