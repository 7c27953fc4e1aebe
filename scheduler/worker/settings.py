"""Settings of a Celery worker (``carousel-worker``). Its driver's settings are the
driver's own (``config_model`` of each driver, :mod:`scheduler.worker.driver`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.settings import CommonSettings


class WorkerSettings(CommonSettings):
    """What ``carousel-worker`` reads."""

    driver: str = Field(
        "simulated",
        description="The name of the driver actions run through, one registered in the "
        "entry-point group carousel.drivers (checked at start): simulated (sleeps), "
        "webhook (POSTs each event to WEBHOOK_URL), simcloud (simcloud's action API at "
        "SIMCLOUD_URL), openstack (server actions through openstacksdk), or an installed "
        "plug-in's (docs/extending.md). Each driver reads its own settings (DRIVER).",
    )
    worker_concurrency: int = Field(
        4, ge=1, description="Processes per worker (WORKER_CONCURRENCY)."
    )
    worker_pool: Literal["prefork", "threads", "solo"] = Field(
        "prefork", description="Celery pool (WORKER_POOL)."
    )
    worker_profile: str = Field(
        "default", description="Profile whose actions this worker runs (WORKER_PROFILE)."
    )
    worker_name: str = Field(
        "", description="Celery node name; default carousel@<host>.<pid> (WORKER_NAME)."
    )
    max_attempts: int = Field(
        3,
        ge=1,
        description="Claims of one event (its worker dying mid-action counts) before it "
        "ends failed instead of running again (MAX_ATTEMPTS).",
    )
    action_time_limit: float = Field(
        1800.0,
        gt=0,
        description="Seconds an action may run before it is interrupted and its event ends "
        "failed and dead-lettered; its process is killed 30 s later if it has not "
        "stopped. Enforced by the prefork pool only. Also how long the simcloud and "
        "openstack drivers keep asking a cloud that cannot be asked how an operation "
        "ended before its outcome is called unknown (ACTION_TIME_LIMIT).",
    )
