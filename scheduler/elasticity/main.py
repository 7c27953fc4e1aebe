"""Entry point: ``carousel-elasticity``."""

from __future__ import annotations

import math
import threading
from pathlib import Path

from scheduler.celery_app import create_celery
from scheduler.elasticity.admin import create_admin_app
from scheduler.elasticity.backlog import BacklogProbe
from scheduler.elasticity.control import CeleryControl
from scheduler.elasticity.engine import Engine
from scheduler.elasticity.kubernetes import KubernetesProvider
from scheduler.elasticity.model import PoolSettings, ProfileConfig
from scheduler.elasticity.providers import LocalProvider
from scheduler.elasticity.settings import ElasticitySettings
from scheduler.elasticity.tracker import WorkerTracker
from shared.service import configure_logging, serve
from shared.store import Store


def profile_configs(settings: ElasticitySettings) -> dict[str, ProfileConfig]:
    """One config per profile; no profile may grow past what MAX_PARALLEL lets run."""
    configs = {}
    for name in settings.profiles:
        given = settings.elasticity_profiles.get(name, PoolSettings())
        cap = max(given.min_workers, math.ceil(settings.max_parallel / given.concurrency))
        configs[name] = ProfileConfig(
            name=name, **{**given.model_dump(), "max_workers": min(given.max_workers, cap)}
        )
    unknown = set(settings.elasticity_profiles) - set(configs)
    if unknown:
        raise ValueError(
            f"ELASTICITY_PROFILES names profiles not in ACTION_PROFILES: {sorted(unknown)}"
        )
    return configs


def main() -> None:
    settings = ElasticitySettings()
    configure_logging(settings)
    store = Store.connect(settings.carousel_db_url, pool=settings.db_pool)
    app = create_celery(settings)
    tracker = WorkerTracker(app)
    provider: LocalProvider | KubernetesProvider
    if settings.elasticity_provider == "kubernetes":
        provider = KubernetesProvider.in_cluster(
            settings.kubernetes_deployment_prefix,
            settings.kubernetes_api,
            settings.kubernetes_namespace,
        )
    else:
        log_dir = Path(settings.worker_log_dir) if settings.worker_log_dir else None
        provider = LocalProvider(settings.worker_command, {}, log_dir)
    engine = Engine(
        configs=profile_configs(settings),
        budget=settings.elasticity_budget,
        provider=provider,
        tracker=tracker,
        control=CeleryControl(app),
        queue_of=lambda p: settings.topology.actions_queue_of(p).name,
        backlog_of=(probe := BacklogProbe(settings, store)),
        paused_of=probe.dispatcher_paused,
        heartbeat_timeout=settings.elasticity_heartbeat_timeout,
        slacker_threshold=settings.slacker_threshold,
        drain_timeout=settings.drain_timeout,
        dry_run=settings.elasticity_dry_run,
    )
    stop = threading.Event()
    threads = [
        threading.Thread(target=tracker.run, args=(stop,), name="events", daemon=True),
        threading.Thread(
            target=engine.launch,
            args=(settings.elasticity_interval, stop),
            name="control-loop",
            daemon=True,
        ),
    ]
    for t in threads:
        t.start()
    try:
        token = "" if settings.admin_views_open else settings.carousel_api_token
        admin = create_admin_app(engine, settings.elasticity_dry_run, token)
        serve(admin, settings.elasticity_host, settings.elasticity_port, settings)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        if isinstance(provider, LocalProvider):
            provider.close()


if __name__ == "__main__":
    main()
