"""Worker states and action times from Celery's event stream (what Flower reads).

Heartbeats (every 2 s) carry each worker's count of running tasks; task-started and
task-succeeded/failed events make that exact between heartbeats. Counting *running*
tasks, not queue depth, is what keeps a busy worker from ever looking idle.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from typing import Any

from celery import Celery

from scheduler.elasticity.model import NodeInfo
from scheduler.elasticity.providers import profile_of
from shared.backoff import Backoff

log = logging.getLogger(__name__)

FINISHING = {"task-succeeded", "task-failed", "task-retried", "task-revoked", "task-rejected"}


class WorkerTracker:
    def __init__(self, app: Celery, ewma_alpha: float = 0.2, stale_after: float = 5.0) -> None:
        self.app = app
        self.alpha = ewma_alpha
        #: a started task the heartbeats no longer count is taken as finished after this
        #: long (its finishing event was lost, e.g. while the stream reconnected)
        self.stale_after = stale_after
        self._lock = threading.Lock()
        self._nodes: dict[str, dict[str, Any]] = {}
        self._running: defaultdict[str, dict[str, float]] = defaultdict(dict)  # uuid -> start
        self._mean: dict[str, float] = {}
        self._stream_since: float | None = None  # our own stream's, not a worker's

    # -- reading -------------------------------------------------------------------
    def nodes(self) -> dict[str, NodeInfo]:
        with self._lock:
            return {
                name: NodeInfo(
                    first_seen=n["first_seen"],
                    last_seen=n["last_seen"],
                    active=self._busy(name),
                    idle_since=n["idle_since"],
                    offline=n["offline"],
                )
                for name, n in self._nodes.items()
            }

    def stream_since(self) -> float | None:
        """Since when our own event stream has been up without a break (None: down)."""
        with self._lock:
            return self._stream_since

    def stream_up(self, now: float) -> None:
        with self._lock:
            if self._stream_since is None:
                self._stream_since = now

    def stream_down(self) -> None:
        with self._lock:
            self._stream_since = None

    def touch(self, name: str, now: float) -> None:
        """The worker answered us another way (a ping): it lives, whatever its
        heartbeats said."""
        with self._lock:
            if name in self._nodes:
                self._nodes[name]["last_seen"] = now

    def mean_action_seconds(self, profile: str) -> float | None:
        with self._lock:
            return self._mean.get(profile)

    # -- the event stream ----------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Follow the event stream until ``stop``, reconnecting with backoff (0.5 s
        doubling to 10 s, from 0.5 s again once connected)."""
        backoff = Backoff(first=0.5, cap=10.0)
        while not stop.is_set():
            try:
                with self.app.connection_for_read() as conn:
                    receiver = self.app.events.Receiver(conn, handlers={"*": self.on_event})
                    halt = threading.Thread(target=_halt_on, args=(stop, receiver), daemon=True)
                    halt.start()
                    backoff.reset()
                    self.stream_up(time.time())
                    # one long-lived consumer; it checks should_stop every second
                    receiver.capture(limit=None, timeout=None, wakeup=True)
                delay = backoff.next()
            except Exception as exc:
                delay = backoff.next()
                log.warning("event stream lost: %r; reconnecting in %.1f s", exc, delay)
            finally:
                self.stream_down()  # a gap in our stream is nobody's death
            stop.wait(delay)

    def on_event(self, event: dict[str, Any], now: float | None = None) -> None:
        kind = str(event.get("type", ""))
        name = str(event.get("hostname", ""))
        if not name:
            return
        now = time.time() if now is None else now
        self.stream_up(now)  # an event came: the stream is up (if nothing said so yet)
        with self._lock:
            node = self._nodes.setdefault(
                name,
                {
                    "first_seen": now,
                    "last_seen": now,
                    "active": 0,
                    "idle_since": now,
                    "offline": False,
                },
            )
            running = self._running[name]
            was_busy = self._busy(name)
            node["last_seen"] = now
            if kind in ("worker-online", "worker-heartbeat"):
                node["offline"] = False
                if kind == "worker-heartbeat":
                    node["active"] = int(event.get("active") or 0)
                    if node["active"] < len(running):  # a finishing event went missing
                        for uuid, started in list(running.items()):
                            if now - started > self.stale_after:
                                del running[uuid]
            elif kind == "worker-offline":
                node["offline"] = True
            elif kind == "task-started":
                running[str(event.get("uuid"))] = now
            elif kind in FINISHING:
                running.pop(str(event.get("uuid")), None)
                node["active"] = max(0, node["active"] - 1)
                self._learn(name, kind, event.get("runtime"))
            if was_busy and not self._busy(name):
                node["idle_since"] = now

    def _busy(self, name: str) -> int:
        return max(int(self._nodes[name]["active"]), len(self._running[name]))

    def _learn(self, name: str, kind: str, runtime: object) -> None:
        profile = profile_of(name)
        if kind == "task-succeeded" and profile and isinstance(runtime, int | float):
            old = self._mean.get(profile)
            new = float(runtime)
            self._mean[profile] = new if old is None else old + self.alpha * (new - old)

    def forget(self, name: str) -> None:
        with self._lock:
            self._nodes.pop(name, None)
            self._running.pop(name, None)


def _halt_on(stop: threading.Event, receiver: Any) -> None:
    stop.wait()
    receiver.should_stop = True
