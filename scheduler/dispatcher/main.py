"""Entry point: ``carousel-dispatcher`` — the AMQP loop in a thread, the admin API in front."""

from __future__ import annotations

import logging
import threading
from typing import Any

from scheduler.celery_app import create_celery
from scheduler.dispatcher.admin import create_admin_app
from scheduler.dispatcher.deadletters import DeadLetters
from scheduler.dispatcher.dispatcher import Dispatcher, Limits
from scheduler.dispatcher.live import BacklogReader, Proxy
from scheduler.dispatcher.loop import DispatcherLoop
from scheduler.dispatcher.settings import DispatcherSettings
from scheduler.dispatcher.state import DispatcherState
from shared.service import configure_logging, serve
from shared.store import Store

log = logging.getLogger(__name__)


def main() -> None:
    settings = DispatcherSettings()
    configure_logging(settings)
    store = Store.connect(settings.carousel_db_url, pool=settings.db_pool)
    limits = Limits(
        max_parallel=settings.max_parallel,
        per_vm=settings.per_vm_limit,
        per_host=settings.per_host_limit,
    )
    state: DispatcherState[Any] = DispatcherState(
        Dispatcher(
            limits,
            paused=settings.start_paused,
            log_size=settings.dispatch_log_size,
            classes=settings.classes,
            weights=settings.weights,
            named=settings.named_limits,
        )
    )
    loop = DispatcherLoop(settings, store, state, create_celery(settings))
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), name="amqp-loop", daemon=True)
    thread.start()
    app = create_admin_app(
        state,
        loop,
        settings.carousel_api_token,
        DeadLetters(store, settings),
        views_open=settings.admin_views_open,
        backlog=BacklogReader(store.queued_by_key),
        proxy=Proxy(
            {
                "producer": settings.carousel_producer_url,
                "elasticity": settings.carousel_elasticity_url,
            }
        ),
    )

    def stop_loop() -> None:
        """End the session and give up the lease (a shard: its partitions) — a clean stop.
        At the app's shutdown, as uvicorn raises the signal that stopped it again once
        it returns, and SIGTERM's default action would end the process right there."""
        stop.set()
        thread.join(timeout=5)

    app.router.on_shutdown.append(stop_loop)
    try:
        serve(app, settings.dispatcher_host, settings.dispatcher_port, settings)
    finally:
        stop_loop()


if __name__ == "__main__":
    main()
