"""Settings every service reads. Each service extends :class:`CommonSettings` with its own
and builds it in its entry point, never at import time."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.topology import PREFIX_PATTERN, Topology


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=True)

    amqp_url: str = Field(
        "amqp://guest:guest@localhost:5672//", description="RabbitMQ URL (AMQP_URL)."
    )
    carousel_prefix: str = Field(
        "carousel",
        pattern=PREFIX_PATTERN,
        description="Prefix of every queue and exchange name (CAROUSEL_PREFIX).",
    )
    carousel_db_url: str = Field(
        "sqlite:///data/carousel.db",
        description="SQLAlchemy URL of the event ledger shared by all services "
        "(CAROUSEL_DB_URL). SQLite for one machine, PostgreSQL for many.",
    )
    log_level: str = Field("INFO", description="Logging level (LOG_LEVEL).")

    @property
    def topology(self) -> Topology:
        return Topology(self.carousel_prefix)
