"""Settings of the dispatcher (``carousel-dispatcher``)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import LimitSettings


class DispatcherSettings(LimitSettings):
    """What ``carousel-dispatcher`` reads."""

    per_vm_limit: int = Field(1, ge=1, description="Actions at once per VM (PER_VM_LIMIT).")
    per_host_limit: int = Field(
        0, ge=0, description="Actions at once per host, 0 = no limit (PER_HOST_LIMIT)."
    )
    prefetch: int = Field(1, ge=1, description="Heads held per event queue (PREFETCH).")
    dispatcher_host: str = Field(
        "127.0.0.1", description="Admin API bind address (DISPATCHER_HOST)."
    )
    dispatcher_port: int = Field(8001, description="Admin API port (DISPATCHER_PORT).")
    start_paused: bool = Field(False, description="Start with dispatching paused (START_PAUSED).")
    resync_interval: float = Field(
        30.0,
        gt=0,
        description="Seconds between checks that the "
        "mapping version has not moved unseen (RESYNC_INTERVAL).",
    )
    reconcile_interval: float = Field(
        5.0,
        gt=0,
        description="Seconds between checks of the "
        "in-flight events against the ledger, freeing slots "
        "whose completion was lost (RECONCILE_INTERVAL).",
    )
    sweep_interval: float = Field(
        5.0,
        gt=0,
        description="Seconds between sweeps for in-flight events whose task message was "
        "lost or whose worker's claim expired; their task is sent again (SWEEP_INTERVAL).",
    )
    resend_after: float = Field(
        120.0,
        gt=0,
        description="Seconds a dispatched event may wait unclaimed before the sweeper "
        "sends its task again (RESEND_AFTER).",
    )
    head_refresh_interval: float = Field(
        600.0,
        ge=0,
        description="Seconds between hand-backs of every held head to its queue (one "
        "basic.nack with requeue; the broker delivers each again at once, in its place): "
        "no delivery stays unacked longer, so the broker's consumer_timeout (30 min by "
        "default) never closes the session while heads wait for a busy VM, a paused "
        "dispatcher or their turn. Keep it below consumer_timeout; 0 = never "
        "(HEAD_REFRESH_INTERVAL).",
    )
    unknown_event_grace: float = Field(
        60.0,
        gt=0,
        description="Seconds an event message the ledger does not know is parked, "
        "waiting for its row, before it is moved to the dead-letter queue "
        "(UNKNOWN_EVENT_GRACE).",
    )
    dispatch_batch: int = Field(
        64,
        ge=1,
        description="Events dispatched per ledger "
        "transaction and per round of pipelined confirms "
        "(DISPATCH_BATCH).",
    )
    dispatcher_lease_seconds: float = Field(
        10.0,
        gt=0,
        description="Seconds the dispatcher lease lasts unless renewed: one dispatcher "
        "dispatches, others wait and take over this long after it dies "
        "(DISPATCHER_LEASE_SECONDS).",
    )
    task_sent_events: bool = Field(
        False,
        description="Publish Celery's task-sent event for each task, for Flower's "
        '"sent" state: one more message per event; Flower lists a task from its '
        "worker's task-received event anyway (TASK_SENT_EVENTS).",
    )
    dispatch_log_size: int = Field(
        10000, ge=1, description="Dispatches kept for GET /dispatches (DISPATCH_LOG_SIZE)."
    )
