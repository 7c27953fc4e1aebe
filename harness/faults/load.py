"""The load generator: posts events as an at-least-once client does.

Every batch is retried WITH THE SAME IDS after any error or timeout until the producer
answers 202; an id counts as accepted only then (:attr:`LoadGenerator.accepted`). A
refusal that a retry cannot change (4xx) is kept in :attr:`refused` — none is expected:
the load posts only valid events and re-posts only identical ones. At :meth:`stop` the
batches being retried get a bounded grace; those still without a 202 then are in
:attr:`abandoned`. Both are anomalies of their own in the accounting.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

ACTIONS = ["heal", "scale_out", "scale_in", "migrate", "resize", "pause", "update"]
#: statuses a retry cannot change: the request itself is wrong
FINAL_REFUSALS = {400, 401, 404, 409, 413, 422}


@dataclass(frozen=True)
class Refusal:
    ids: list[str]
    status: int
    text: str
    at: float


@dataclass(frozen=True)
class Accepted:
    id: str
    host: str
    vm: str
    policy: str
    kind: str  # "load", or the fault that posted it ("poison-fail", "poison-kill", ...)
    first_try: float  # when it was first posted
    accepted_at: float  # when it got its first 202


class LoadGenerator:
    def __init__(
        self,
        producer_url: str,
        rate: float,
        keys: list[tuple[str, str, str]],
        seed: int = 0,
        threads: int = 2,
    ) -> None:
        self.url = f"{producer_url}/events"
        self.rate = rate
        self.keys = keys
        self.threads = threads
        self.rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._give_up_at = float("inf")
        self._workers: list[threading.Thread] = []
        self._pool = ThreadPoolExecutor(8, thread_name_prefix="post")
        self.accepted: dict[str, Accepted] = {}
        self.sent: dict[str, dict[str, Any]] = {}  # id -> the event as posted
        #: id -> when a post carrying it was first sent (by any thread): its event cannot
        #: have been stored, let alone queued, before then
        self.first_sent: dict[str, float] = {}
        self.errors: Counter[str] = Counter()
        self.refused: list[Refusal] = []
        self.abandoned: list[tuple[str, float]] = []  # (id, first try)
        self.posts = 0
        self.last_accept = 0.0

    # -- events --------------------------------------------------------------------
    def make(
        self, n: int, payload: dict[str, Any] | None = None, key: tuple[str, str, str] | None = None
    ) -> list[dict[str, Any]]:
        """``n`` new events with fresh ids on random keys (or ``key``); each holds its
        action at the receiver 0.05-0.2 s unless ``payload`` says otherwise."""
        out = []
        with self._rng_lock:
            for _ in range(n):
                host, vm, policy = key or self.rng.choice(self.keys)
                out.append(
                    {
                        "id": f"ev-{next(self._ids):06d}",
                        "host": host,
                        "vm": vm,
                        "policy": policy,
                        "action": self.rng.choice(ACTIONS),
                        "payload": payload or {"hold": round(self.rng.uniform(0.05, 0.2), 3)},
                    }
                )
        return out

    # -- posting -------------------------------------------------------------------
    def post(self, events: list[dict[str, Any]], kind: str = "load") -> list[str]:
        """Post until 202 (same ids every time); returns the ids accepted."""
        first_try = time.time()
        with self._lock:
            for e in events:
                self.sent.setdefault(e["id"], e)
                self.first_sent.setdefault(e["id"], first_try)
        with self._rng_lock:
            single = len(events) == 1 and self.rng.random() < 0.5
        body: Any = events[0] if single else {"events": events}
        backoff = 0.2
        while True:
            with self._lock:
                self.posts += 1
            try:
                r = httpx.post(self.url, json=body, timeout=30)
            except httpx.HTTPError as exc:
                self._error(type(exc).__name__)
            else:
                if r.status_code == 202:
                    self._accepted(events, kind, first_try)
                    return [e["id"] for e in events]
                self._error(f"HTTP {r.status_code}")
                if r.status_code in FINAL_REFUSALS:
                    refusal = Refusal([e["id"] for e in events], r.status_code, r.text, time.time())
                    with self._lock:
                        self.refused.append(refusal)
                    return []
            if time.time() > self._give_up_at:
                with self._lock:
                    self.abandoned.extend((e["id"], first_try) for e in events)
                return []
            time.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    def post_async(self, events: list[dict[str, Any]], kind: str = "load") -> Future[list[str]]:
        return self._pool.submit(self.post, events, kind)

    def _error(self, what: str) -> None:
        with self._lock:
            self.errors[what] += 1

    def _accepted(self, events: list[dict[str, Any]], kind: str, first_try: float) -> None:
        now = time.time()
        with self._lock:
            self.last_accept = now
            for e in events:
                if e["id"] not in self.accepted:
                    self.accepted[e["id"]] = Accepted(
                        e["id"], e["host"], e["vm"], e["policy"], kind, first_try, now
                    )

    def adopt(self, rows: list[tuple[Any, ...]], kind: str) -> None:
        """Events accepted by someone else (``(id, host, vm, policy, accepted_at)``: the
        monitoring's), accounted as the load's own."""
        with self._lock:
            for eid, host, vm, policy, at in rows:
                if eid not in self.accepted:
                    self.sent[eid] = {"id": eid, "host": host, "vm": vm, "policy": policy}
                    self.accepted[eid] = Accepted(eid, host, vm, policy, kind, at, at)

    # -- the steady load -----------------------------------------------------------
    def start(self) -> None:
        for i in range(self.threads):
            t = threading.Thread(target=self._run, name=f"load-{i}", daemon=True)
            t.start()
            self._workers.append(t)

    def _run(self) -> None:
        per_thread = self.rate / self.threads
        while not self._stop.is_set():
            with self._rng_lock:
                n = self.rng.randint(1, 6)
            began = time.monotonic()
            self.post(self.make(n))
            pause = n / per_thread - (time.monotonic() - began)
            if pause > 0:
                self._stop.wait(pause)  # pacing, not synchronisation

    def stop(self, grace: float = 90.0) -> None:
        """No new batches; batches being retried get ``grace`` seconds to get a 202."""
        self._stop.set()
        self._give_up_at = time.time() + grace
        for t in self._workers:
            t.join(grace + 35)
        self._pool.shutdown(wait=True)

    def accepted_after(self, t: float) -> bool:
        return self.last_accept >= t
