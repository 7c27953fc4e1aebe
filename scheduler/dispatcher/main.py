"""Entry point: ``carousel-dispatcher`` — the AMQP loop in a thread, the admin API in front."""

from __future__ import annotations

import logging
import socket
import sys
import threading
from typing import Any

from scheduler.celery_app import create_celery
from scheduler.dispatcher.admin import create_admin_app
from scheduler.dispatcher.deadletters import DeadLetters
from scheduler.dispatcher.dispatcher import Dispatcher, Limits
from scheduler.dispatcher.forward import Owners, advertised_url
from scheduler.dispatcher.live import BacklogReader, Proxy
from scheduler.dispatcher.loop import DispatcherLoop
from scheduler.dispatcher.settings import DispatcherSettings
from scheduler.dispatcher.state import DispatcherState
from shared.addresses import dispatcher_ports
from shared.service import STARTUP_FAILURE, configure_logging, listen_first_free, serve
from shared.shard_view import cluster
from shared.store import Store

log = logging.getLogger(__name__)


def main() -> None:
    settings = DispatcherSettings()
    configure_logging(settings)
    # the port first (DISPATCHER_PORT_SPAN): none free, nothing else starts
    try:
        sock = admin_socket(settings)
    except OSError as exc:
        log.error("the admin API cannot start: %s", exc.strerror or exc)
        sys.exit(STARTUP_FAILURE)
    if sock is not None:  # the port it took: the one it advertises to the other shards
        settings = settings.model_copy(update={"dispatcher_port": sock.getsockname()[1]})
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

    def read_shards() -> dict[str, Any]:
        with store.engine.begin() as conn:
            return cluster(conn, settings.dispatcher_partitions)

    owners = None
    if loop.shard is not None:  # before its first round: where the others reach it
        loop.shard.coordinator.url = advertised_url(
            settings.dispatcher_advertise_url, settings.dispatcher_host, settings.dispatcher_port
        )
        owners = Owners(store, settings.dispatcher_partitions, loop.shard.name)

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
        shards=read_shards,
        controls=loop.controls,
        owners=owners,
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
        serve(app, settings.dispatcher_host, settings.dispatcher_port, settings, sock=sock)
    finally:
        stop_loop()


def admin_socket(settings: DispatcherSettings) -> socket.socket | None:
    """With ``DISPATCHER_PORT_SPAN`` above 1, the admin API's socket, listening at the
    first free port of :func:`~shared.addresses.dispatcher_ports`; else None: uvicorn
    binds ``DISPATCHER_PORT`` itself."""
    if settings.dispatcher_port_span == 1:
        return None
    ports = dispatcher_ports(settings.dispatcher_port, settings.dispatcher_port_span)
    return listen_first_free(settings.dispatcher_host, ports)


if __name__ == "__main__":
    main()
