"""Settings of the Flower launcher (``carousel-flower``)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import CommonSettings


class FlowerSettings(CommonSettings):
    """What ``carousel-flower`` reads."""

    flower_port: int = Field(5555, description="Flower port (FLOWER_PORT).")
    flower_address: str = Field("127.0.0.1", description="Flower bind address (FLOWER_ADDRESS).")
    flower_basic_auth: str = Field(
        "",
        description="user:password for Flower, pairs separated by commas (FLOWER_BASIC_AUTH); "
        "empty = user admin with a password generated at each start and logged once (`make "
        "up` makes one per run instead, and its banner shows it); a placeholder password is "
        "refused.",
    )
    flower_purge_offline_workers: int = Field(
        60,
        ge=0,
        description="Seconds after which Flower stops listing a worker that went offline "
        "(a retired elastic worker); 0 = keep listing them (FLOWER_PURGE_OFFLINE_WORKERS).",
    )
