"""Settings of a Celery worker (``carousel-worker``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.settings import CommonSettings


class WorkerSettings(CommonSettings):
    """What ``carousel-worker`` reads."""

    driver: Literal["simulated", "webhook", "simcloud", "openstack"] = Field(
        "simulated",
        description="How actions are executed: simulated (sleeps), webhook (POSTs each "
        "event to WEBHOOK_URL), simcloud (simcloud's action API at SIMCLOUD_URL) or "
        "openstack (server actions through openstacksdk) (DRIVER).",
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
    simulated_duration: float = Field(
        0.0, ge=0, description="Seconds a simulated action takes (SIMULATED_DURATION)."
    )
    simulated_durations: dict[str, float] = Field(
        default_factory=dict,
        description='Per-action seconds, JSON, e.g. {"migrate": 2} (SIMULATED_DURATIONS).',
    )
    webhook_url: str = Field(
        "", description="URL the webhook driver POSTs each event to (WEBHOOK_URL)."
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
    webhook_timeout: float = Field(
        30.0, gt=0, description="Webhook timeout, seconds (WEBHOOK_TIMEOUT)."
    )
    simcloud_url: str = Field(
        "http://127.0.0.1:8100", description="simcloud's base URL (SIMCLOUD_URL)."
    )
    simcloud_token: str = Field(
        "", description="Bearer token simcloud requires; empty = none (SIMCLOUD_TOKEN)."
    )
    action_poll_interval: float = Field(
        0.2,
        gt=0,
        description="Seconds between checks of a cloud operation the simcloud or "
        "openstack driver waits for (ACTION_POLL_INTERVAL).",
    )
    openstack_cloud: str = Field(
        "",
        description="The clouds.yaml entry the openstack driver connects with "
        "(OPENSTACK_CLOUD); empty = OPENSTACK_COMPUTE_URL without Keystone.",
    )
    openstack_compute_url: str = Field(
        "",
        description="A Compute API endpoint used without Keystone, e.g. simcloud's "
        "http://127.0.0.1:8100/compute (OPENSTACK_COMPUTE_URL).",
    )
    openstack_token: str = Field(
        "", description="Token sent to OPENSTACK_COMPUTE_URL (OPENSTACK_TOKEN)."
    )
