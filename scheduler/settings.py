from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.settings import CommonSettings


class SchedulerSettings(CommonSettings):
    max_parallel: int = Field(
        10, ge=1, description="Actions running at once overall (MAX_PARALLEL)."
    )
    per_vm_limit: int = Field(1, ge=1, description="Actions at once per VM (PER_VM_LIMIT).")
    per_host_limit: int = Field(
        0, ge=0, description="Actions at once per host, 0 = no limit (PER_HOST_LIMIT)."
    )
    prefetch: int = Field(1, ge=1, description="Heads held per event queue (PREFETCH).")
    scheduler_host: str = Field("127.0.0.1", description="Admin API bind address (SCHEDULER_HOST).")
    scheduler_port: int = Field(8001, description="Admin API port (SCHEDULER_PORT).")
    start_paused: bool = Field(False, description="Start with dispatching paused (START_PAUSED).")
    resync_interval: float = Field(
        30.0,
        gt=0,
        description="Seconds between checks that the "
        "mapping version has not moved unseen (RESYNC_INTERVAL).",
    )
    dispatch_log_size: int = Field(
        10000, ge=1, description="Dispatches kept for GET /dispatches (DISPATCH_LOG_SIZE)."
    )


class WorkerSettings(CommonSettings):
    driver: Literal["simulated", "webhook"] = Field(
        "simulated", description="How actions are executed (DRIVER)."
    )
    worker_concurrency: int = Field(
        4, ge=1, description="Processes per worker (WORKER_CONCURRENCY)."
    )
    worker_pool: Literal["prefork", "threads", "solo"] = Field(
        "prefork", description="Celery pool (WORKER_POOL)."
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
    webhook_timeout: float = Field(
        30.0, gt=0, description="Webhook timeout, seconds (WEBHOOK_TIMEOUT)."
    )


class FlowerSettings(CommonSettings):
    flower_port: int = Field(5555, description="Flower port (FLOWER_PORT).")
    flower_address: str = Field("127.0.0.1", description="Flower bind address (FLOWER_ADDRESS).")
    flower_basic_auth: str = Field(
        "admin:carousel", description="user:password for Flower (FLOWER_BASIC_AUTH)."
    )
