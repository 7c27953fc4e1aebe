"""Settings of the elasticity worker (``carousel-elasticity``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from scheduler.elasticity.model import PoolSettings
from shared.settings import LimitSettings


class ElasticitySettings(LimitSettings):
    """What ``carousel-elasticity`` reads."""

    elasticity_host: str = Field(
        "127.0.0.1", description="Admin API bind address (ELASTICITY_HOST)."
    )
    elasticity_port: int = Field(8002, description="Admin API port (ELASTICITY_PORT).")
    elasticity_interval: float = Field(
        5.0, gt=0, description="Seconds between evaluations (ELASTICITY_INTERVAL)."
    )
    elasticity_budget: int = Field(
        8, ge=0, description="Workers all profiles may have together (ELASTICITY_BUDGET)."
    )
    elasticity_profiles: dict[str, PoolSettings] = Field(
        default_factory=lambda: {"default": PoolSettings()},
        description="Per-profile pool settings, JSON: {profile: {min_workers, max_workers, "
        "concurrency, target_latency, default_action_seconds, tolerance, scale_up_window, "
        "scale_down_window, scale_up_utilisation, scale_down_utilisation}} "
        "(ELASTICITY_PROFILES).",
    )
    elasticity_heartbeat_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds without a heartbeat before a worker counts as lost "
        "(ELASTICITY_HEARTBEAT_TIMEOUT).",
    )
    slacker_threshold: float = Field(
        60.0,
        gt=0,
        description="Seconds a spawned worker may "
        "take to register before it is killed and replaced "
        "(SLACKER_THRESHOLD).",
    )
    drain_timeout: float = Field(
        120.0,
        gt=0,
        description="Seconds a retiring worker may take "
        "to exit before it is killed (DRAIN_TIMEOUT).",
    )
    elasticity_dry_run: bool = Field(
        False, description="Decide and log, never spawn or retire (ELASTICITY_DRY_RUN)."
    )
    elasticity_provider: Literal["local", "kubernetes"] = Field(
        "local",
        description="How workers are started: local processes, or the replicas "
        "of one Kubernetes Deployment per profile (ELASTICITY_PROVIDER).",
    )
    kubernetes_api: str = Field(
        "", description="Kubernetes API URL; empty = in-cluster (KUBERNETES_API)."
    )
    kubernetes_namespace: str = Field(
        "",
        description="Namespace of the worker Deployments; "
        "empty = the pod's own (KUBERNETES_NAMESPACE).",
    )
    kubernetes_deployment_prefix: str = Field(
        "carousel-worker-",
        description="Worker Deployment of a profile = this prefix + the "
        "profile name (KUBERNETES_DEPLOYMENT_PREFIX).",
    )
    worker_command: str = Field(
        "carousel-worker",
        description="Command the local provider runs for a worker (WORKER_COMMAND).",
    )
    worker_log_dir: str = Field(
        "",
        description="Folder for spawned workers' logs, one file each; empty = into the "
        "elasticity worker's own output (WORKER_LOG_DIR).",
    )
    rabbitmq_management_url: str = Field(
        "",
        description="RabbitMQ management API, e.g. http://guest:guest@localhost:15672; "
        "when set, backlog = ready + unacked from it, else ready (AMQP) + running tasks "
        "(RABBITMQ_MANAGEMENT_URL).",
    )
