# One image for every Carousel service; docker-compose.yml picks the console script
# (carousel-producer, carousel-scheduler, carousel-worker, carousel-elasticity,
# carousel-flower, and simcloud for the demo cloud) per service, and runs `python -m shared.preflight` (installed with
# shared/) as its one-shot check of the secrets before any of them starts.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CAROUSEL_DB_URL=sqlite:////data/carousel.db

# Build from a scratch directory: a regular (non-editable) install into site-packages,
# then drop the sources so only the installed copy can be imported.
WORKDIR /tmp/src
COPY pyproject.toml ./
COPY shared/ ./shared/
COPY producer/ ./producer/
COPY scheduler/ ./scheduler/
COPY simcloud/ ./simcloud/
RUN pip install . \
    && cd / && rm -rf /tmp/src

WORKDIR /app

# Unprivileged runtime user; /data holds the shared SQLite event ledger.
RUN groupadd --system --gid 10001 carousel \
    && useradd --system --uid 10001 --gid carousel --home-dir /app --no-create-home --shell /usr/sbin/nologin carousel \
    && mkdir -p /data \
    && chown carousel:carousel /data
VOLUME ["/data"]

USER carousel

EXPOSE 8000 8001 8002 5555 8100

# Defaults to the producer; compose sets `command:` per service.
CMD ["carousel-producer"]
