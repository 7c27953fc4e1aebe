"""The yardstick: plain Celery with a no-op task on one queue, as a user would write it.

Module-level app on purpose (it is what `celery -A` loads); configured from BENCH_* env.
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery("rawbench", broker=os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@localhost//"))
app.conf.update(
    task_default_queue=os.environ.get("BENCH_QUEUE", "rawbench"),
    task_ignore_result=True,
    # "flower": as Celery's users run it under Flower (task events, late acks);
    # "bare": neither (acked on receipt, no events)
    worker_send_task_events=os.environ.get("BENCH_FLAVOUR", "flower") == "flower",
    task_acks_late=os.environ.get("BENCH_FLAVOUR", "flower") == "flower",
)


@app.task(name="rawbench.noop")  # type: ignore[untyped-decorator]
def noop(i: int) -> None:
    return None


@app.task(name="rawbench.sleep")  # type: ignore[untyped-decorator]
def sleep_ms(tag: str, ms: float) -> None:
    """Sleep; log when it started (BENCH_LOG), for waiting-time measurements."""
    import time

    started = time.time()
    if path := os.environ.get("BENCH_LOG"):
        with open(path, "a") as log:
            log.write(f"{tag} {started}\n")
    time.sleep(ms / 1000)
