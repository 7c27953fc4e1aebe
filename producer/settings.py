"""Settings of the producer (``carousel-producer``)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import CommonSettings


class ProducerSettings(CommonSettings):
    """What ``carousel-producer`` reads."""

    producer_host: str = Field("127.0.0.1", description="Bind address (PRODUCER_HOST).")
    producer_port: int = Field(8000, description="Port of the REST API (PRODUCER_PORT).")
    max_body_bytes: int = Field(
        16 * 1024 * 1024, description="Largest request body accepted, else 413 (MAX_BODY_BYTES)."
    )
    publish_timeout: float = Field(
        10.0, description="Seconds to wait for broker confirms before 503 (PUBLISH_TIMEOUT)."
    )
