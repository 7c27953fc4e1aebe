"""The stack under test: a private RabbitMQ node, producer, dispatcher and workers as real
processes with ``DRIVER=webhook`` pointed at the recording receiver, and a ledger —
SQLite, or a fresh PostgreSQL database that the dispatcher reaches through a cuttable
proxy (:mod:`.ledgerdb`) — all under one base directory (``logs/`` holds every
service's log).

A profile with :attr:`Profile.shards` starts that many dispatchers instead, each an
active shard (``DISPATCHER_PARTITIONS`` = :attr:`Profile.partitions`) on a port of its
own (:attr:`FaultStack.dispatchers`); the first stays "the dispatcher" of everything
that asks one (``/stats``, ``/pause``, the producer's ``DISPATCHER_URL``), the stack
is ready once every partition is served (:meth:`FaultStack.partitions_served`), and
:meth:`FaultStack.restart_dispatcher`, :meth:`FaultStack.kill_dispatcher`,
:meth:`FaultStack.add_dispatcher` and :meth:`FaultStack.stop_dispatcher` act on one
shard by its index.

Settings are the services' defaults but for a few that make recovery fit the suite's
bounds: a 4 s dispatcher lease (a killed dispatcher's successor waits that long),
``RESEND_AFTER`` 30 s (the sweeper re-sends a dispatched event's lost task within the
120 s the accounting waits), ``RECONCILE_INTERVAL`` 2 s, ``RESYNC_INTERVAL`` 10 s and
``UNKNOWN_EVENT_GRACE`` 15 s (a forged event message is parked that long before it is
dead-lettered: with the default 60 s, one forged late in the run could still be parked,
unacked, when the services stop, and count as a message left behind).
The limits an operator names are set for every run — :data:`ACTION_LIMITS` and
:data:`GROUP_BUDGETS`, on an action and a group the steady load never uses — and the
accounting judges every call against them (the ``named-limits`` fault puts them to work).
A profile may add settings of its own (:attr:`Profile.settings`).
Settings a service does not know are ignored by it."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import kombu

from harness.faults import pids
from harness.faults.ledgerdb import SQLITE, LedgerDb
from harness.private_broker import PrivateBroker
from harness.processes import Service, Stack, free_port, wait_until
from harness.recorder import Call, Receiver
from shared.topology import Topology

PREFIX = "faults"
#: the run's action limits and disruption budgets (see the module docstring)
ACTION_LIMITS = {"live_migrate": 2}
GROUP_BUDGETS = {"replicas": 1}


def _table(limits: dict[str, int]) -> str:
    return ",".join(f"{name}={n}" for name, n in limits.items())


@dataclass(frozen=True)
class Profile:
    """How big the stack and the load are."""

    name: str
    workers: int
    concurrency: int
    max_parallel: int
    rate: float  # events per second posted by the steady load
    hosts: int = 4
    vms: int = 4
    policies: int = 2
    per_vm: int = 1
    ledger: str = SQLITE  # or POSTGRESQL (see .ledgerdb)
    #: dispatcher shards started side by side (0: one dispatcher, as in production today)
    shards: int = 0
    #: their ``DISPATCHER_PARTITIONS`` (used only with ``shards``)
    partitions: int = 0
    #: settings of the services beyond the stack's own (see the module docstring)
    settings: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.shards and self.partitions < 1:
            raise ValueError(f"profile {self.name}: shards need partitions")

    def keys(self) -> list[tuple[str, str, str]]:
        return [
            (f"h{h}", f"vm{v}", f"p{p}")
            for h in range(self.hosts)
            for v in range(self.vms)
            for p in range(self.policies)
        ]


class FaultStack:
    def __init__(self, base: Path, profile: Profile) -> None:
        self.base = base
        self.profile = profile
        self.logs = base / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.ledger = LedgerDb(profile.ledger, base)
        self.broker = PrivateBroker(base / "rabbit")
        self.receiver = Receiver(on_kill=self.kill_caller)
        self.topology = Topology(PREFIX)
        self.killed_callers: list[tuple[str, int]] = []  # (event id, pid) killed on request
        #: when the harness killed a worker process (a pool child or a main process)
        self.kill_times: list[float] = []
        env = {
            "AMQP_URL": self.broker.url,
            "CAROUSEL_PREFIX": PREFIX,
            "CAROUSEL_DB_URL": self.ledger.url,  # set by start() on PostgreSQL
            "CAROUSEL_API_TOKEN": "",
            "PRODUCER_PORT": str(free_port()),
            "DISPATCHER_PORT": str(free_port()),
            "ELASTICITY_PORT": str(free_port()),
            "DRIVER": "webhook",
            "WEBHOOK_URL": self.receiver.url,
            "DRIVER_HTTP_TIMEOUT": "60",
            "MAX_PARALLEL": str(profile.max_parallel),
            "PER_VM_LIMIT": str(profile.per_vm),
            "WORKER_CONCURRENCY": str(profile.concurrency),
            "MAX_ATTEMPTS": "3",
            "PUBLISH_TIMEOUT": "5",
            "DISPATCHER_LEASE_SECONDS": "4",
            "RESYNC_INTERVAL": "10",
            "RECONCILE_INTERVAL": "2",
            "UNKNOWN_EVENT_GRACE": "15",
            "RESEND_AFTER": "30",
            "LOG_LEVEL": "INFO",
            "ACTION_LIMITS": _table(ACTION_LIMITS),
            "GROUP_BUDGETS": _table(GROUP_BUDGETS),
            **dict(profile.settings),
        }
        if profile.shards:
            env["DISPATCHER_PARTITIONS"] = str(profile.partitions)
        #: what the accounting judges the calls against
        self.action_limits = dict(ACTION_LIMITS)
        self.group_budgets = dict(GROUP_BUDGETS)
        self.stack = Stack(env, self.logs)
        self.producer: Service | None = None
        #: the dispatchers, by index: one, or a shard each (the first on the stack's
        #: ``DISPATCHER_PORT``, the others on ports of their own); a dispatcher killed
        #: keeps its place (and port) until :meth:`restart_dispatcher`, one stopped
        #: with :meth:`stop_dispatcher` leaves the list
        self.dispatchers: list[Service] = []
        #: settings a fault gives the dispatcher for its phase (kept across its restarts)
        self.dispatcher_env: dict[str, str] = {}
        #: queues a fault added (a worker profile's actions queue): they must drain too
        self.extra_queues: list[str] = []
        self.workers: list[Service] = []
        self._worker_seq = 0

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        self.ledger.open()
        self.stack.env["CAROUSEL_DB_URL"] = self.ledger.url
        self.broker.start()
        self.producer = self.stack.producer()
        self.restart_dispatcher()
        for _ in range(1, self.profile.shards):
            self.add_dispatcher(wait=False)
        self.wait_dispatchers()
        self.start_workers(*[("w", {})] * self.profile.workers)

    def start_worker(self, kind: str = "w", **extra: str) -> Service:
        """Start a worker (``extra``: settings of its own) and wait until it is ready."""
        [worker] = self.start_workers((kind, extra))
        return worker

    def start_workers(self, *specs: tuple[str, dict[str, str]]) -> list[Service]:
        """Start a worker per ``(kind, settings of its own)`` side by side, and wait
        until every one is ready."""
        started = []
        for kind, extra in specs:
            self._worker_seq += 1
            name = f"faults-{kind}{self._worker_seq}@%h"
            started.append(self.stack.worker(WORKER_NAME=name, **extra))
            self.workers.append(started[-1])
        for worker in started:
            wait_until(
                functools.partial(_ready, worker),
                90,
                what=f"worker {worker.env['WORKER_NAME']} ready ({worker.log_tail()})",
            )
        return started

    def worker_process(self, name: str, **extra: str) -> Service:
        """A worker of a fault's own (not among :attr:`workers`, which the worker faults
        pick from) named ``name`` with ``extra`` settings, once it is ready."""
        worker = self.stack.worker(WORKER_NAME=name, **extra)
        wait_until(functools.partial(_ready, worker), 90, what=f"worker {name} ready")
        return worker

    def stop_workers(self, workers: list[Service]) -> None:
        """Warm-stop ``workers`` at once: each finishes the actions it runs; the tasks
        it had prefetched go back to the queue."""
        procs = [w.proc for w in workers if w.proc is not None and w.proc.poll() is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(90)

    def stop_services(self) -> None:
        self.stack.stop()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stack.stop()
        with contextlib.suppress(Exception):
            self.broker.stop()
        self.receiver.close()
        self.ledger.close()

    def restart_producer(self) -> Service:
        self.producer = self.stack.producer()
        return self.producer

    # -- the dispatchers ---------------------------------------------------------------
    @property
    def sharded(self) -> bool:
        return self.profile.shards > 0

    @property
    def dispatcher(self) -> Service | None:
        """The first dispatcher (the only one but in a profile with shards)."""
        return self.dispatchers[0] if self.dispatchers else None

    def dispatcher_url(self, index: int = 0) -> str:
        return _url(self.dispatchers[index])

    def _dispatcher(self, port: str) -> Service:
        """A dispatcher on ``port`` (on PostgreSQL, through the ledger's proxy), with the
        settings :meth:`reconfigure_dispatcher` gave it; started, not waited for."""
        env = {
            **self.stack.env,
            "CAROUSEL_DB_URL": self.ledger.dispatcher_url,
            "DISPATCHER_PORT": port,
            **self.dispatcher_env,
        }
        service = Service("carousel-dispatcher", env, self.logs, f"http://127.0.0.1:{port}/readyz")
        self.stack.services.append(service)
        return service.start(wait=False)

    def restart_dispatcher(self, index: int = 0, wait: bool = True) -> Service:
        """Start dispatcher ``index`` (the first: the stack's; one past the last: a new
        one, see :meth:`add_dispatcher`) again on its port, with the settings
        :meth:`reconfigure_dispatcher` gave it; with ``wait``, once it is ready."""
        if index == len(self.dispatchers):
            port = self.stack.env["DISPATCHER_PORT"] if index == 0 else str(free_port())
            self.dispatchers.append(self._dispatcher(port))
        else:
            old = self.dispatchers[index]
            old.kill()  # a no-op unless it still runs
            self.dispatchers[index] = self._dispatcher(old.env["DISPATCHER_PORT"])
        if wait:
            self.wait_dispatchers([index])
        return self.dispatchers[index]

    def add_dispatcher(self, wait: bool = True) -> int:
        """Start one more dispatcher (a shard) on a port of its own; its index."""
        index = len(self.dispatchers)
        self.restart_dispatcher(index, wait)
        return index

    def kill_dispatcher(self, index: int = 0) -> Service:
        """kill -9 dispatcher ``index``; it keeps its place until restarted."""
        service = self.dispatchers[index]
        service.kill()
        return service

    def stop_dispatcher(self, index: int) -> Service:
        """Stop dispatcher ``index`` cleanly (SIGTERM: a shard releases its partitions
        and leaves) and drop it from :attr:`dispatchers`; not the first, which the
        producer and the harness ask."""
        if index == 0:
            raise ValueError("the first dispatcher is the stack's: restart it instead")
        service = self.dispatchers.pop(index)
        service.stop()
        return service

    def wait_dispatchers(self, indexes: list[int] | None = None, timeout: float = 60) -> None:
        """Wait until the dispatchers ``indexes`` (all: every one) answer ready — and, in a
        profile with shards, until every partition is served."""
        chosen = range(len(self.dispatchers)) if indexes is None else indexes
        for i in chosen:
            service = self.dispatchers[i]
            wait_until(
                functools.partial(_dispatcher_ready, service),
                timeout,
                what=f"dispatcher {i} ready ({service.log_tail()})",
            )
        if self.sharded:
            self.wait_partitions_served(timeout)

    def live_dispatchers(self) -> list[Service]:
        return [d for d in self.dispatchers if d.proc is not None and d.proc.poll() is None]

    def serving(self) -> dict[int, list[int]]:
        """Per live dispatcher's index, the partitions it serves (its ``/stats``)."""
        out: dict[int, list[int]] = {}
        for i, service in enumerate(self.dispatchers):
            if service.proc is not None and service.proc.poll() is None:
                shard = self.stats(_url(service)).get("shard") or {}
                out[i] = list(shard.get("serving") or [])
        return out

    def partitions_served(self, every_shard: bool = False) -> bool:
        """Every partition served by exactly one live shard (as their ``/stats`` say);
        with ``every_shard``, each live shard serving at least one (a joined or restarted
        shard has its share)."""
        serving = self.serving()
        flat = [p for ps in serving.values() for p in ps]
        whole = sorted(flat) == list(range(self.profile.partitions))
        return whole and (not every_shard or all(serving.values()))

    def wait_partitions_served(self, timeout: float = 60, every_shard: bool = False) -> float:
        """Wait until :meth:`partitions_served`; when it was seen so."""
        wait_until(
            lambda: self.partitions_served(every_shard),
            timeout,
            0.1,
            what=f"every partition served once{' and every shard serving' * every_shard} "
            f"(serving: {self._serving_said()})",
        )
        return time.time()

    def _serving_said(self) -> str:
        try:
            return repr(self.serving())
        except (httpx.HTTPError, OSError) as exc:
            return repr(exc)

    def reconfigure_dispatcher(self, **extra: str) -> Service:
        """Stop the dispatchers and start as many with ``extra`` settings, kept across
        their later restarts (none: back to the stack's own); the first, once every one
        is ready."""
        _stop_all(self.dispatchers)
        self.dispatcher_env = dict(extra)
        for i in range(len(self.dispatchers)):
            self.restart_dispatcher(i, wait=False)
        self.wait_dispatchers()
        first = self.dispatcher
        assert first is not None
        return first

    # -- workers and their processes -----------------------------------------------
    def live_workers(self) -> list[Service]:
        return [w for w in self.workers if w.proc is not None and w.proc.poll() is None]

    def worker_pids(self) -> list[int]:
        return [w.proc.pid for w in self.live_workers() if w.proc is not None]

    def caller(self, call: Call) -> int | None:
        """The worker process (a pool child) that made ``call``, if it still lives."""
        return pids.caller_pid(call.client_port, self.receiver.port, self.worker_pids())

    def kill_caller(self, call: Call) -> None:
        """kill -9 the pool child that made ``call`` (never a worker's main process)."""
        pid = self.caller(call)
        if pid is None or pid in self.worker_pids():
            call.notes.append(f"kill requested, no pool child found (pid {pid})")
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            self.kill_times.append(time.time())
            self.killed_callers.append((call.event_id, pid))
            call.notes.append(f"caller pid {pid} killed")

    def kill_worker_main(self, worker: Service) -> list[int]:
        """kill -9 a worker's main process alone (its pool children die with it, by the
        parent-death signal Celery gives them); returns the pids that were its tree."""
        assert worker.proc is not None
        tree = pids.descendants(worker.proc.pid)
        os.kill(worker.proc.pid, signal.SIGKILL)
        self.kill_times.append(time.time())
        worker.proc.wait(10)
        wait_until(lambda: not any(_alive(p) for p in tree[1:]), 30, what="pool children gone")
        return tree

    # -- the broker, seen from the harness -----------------------------------------
    @contextlib.contextmanager
    def amqp(self) -> Iterator[kombu.Connection]:
        with kombu.Connection(self.broker.url, connect_timeout=5) as conn:
            yield conn

    def depths(self, names: list[str]) -> dict[str, int | None]:
        """Messages ready in each queue (None: no such queue)."""
        out: dict[str, int | None] = {}
        with self.amqp() as conn:
            channel = conn.channel()
            for name in names:
                try:
                    _, ready, _ = channel.queue_declare(name, passive=True)
                except conn.channel_errors:
                    out[name] = None
                    channel = conn.channel()  # the error closed that one
                else:
                    out[name] = int(ready)
        return out

    def event_queue_names(self) -> list[str]:
        from shared.models import Key

        return [
            self.topology.event_queue_name(Key(host=h, vm=v, policy=p))
            for h, v, p in self.ledger.rows("SELECT host, vm, policy FROM keys ORDER BY seq")
        ]

    # -- the HTTP views --------------------------------------------------------------
    def stats(self, url: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(
            f"{url or self.stack.dispatcher_url}/stats", timeout=5
        ).json()
        return body

    def event(self, event_id: str) -> dict[str, Any] | None:
        r = httpx.get(f"{self.stack.producer_url}/events/{event_id}", timeout=10)
        if r.status_code == 404:
            return None
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body


def _stop_all(services: list[Service]) -> None:
    """Stop ``services`` at once (SIGTERM; kill -9 one still running 15 s later)."""
    running = [s for s in services if s.proc is not None and s.proc.poll() is None]
    for service in running:
        assert service.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.proc.pid, signal.SIGTERM)
    for service in running:
        assert service.proc is not None
        try:
            service.proc.wait(15)
        except subprocess.TimeoutExpired:
            service.kill()


def _url(dispatcher: Service) -> str:
    return f"http://127.0.0.1:{dispatcher.env['DISPATCHER_PORT']}"


def _dispatcher_ready(service: Service) -> bool:
    assert service.proc is not None
    if service.proc.poll() is not None:
        raise AssertionError(f"dispatcher exited {service.proc.returncode}:\n{service.log_tail()}")
    return httpx.get(f"{_url(service)}/readyz", timeout=2).status_code == 200


def _ready(worker: Service) -> bool:
    return " ready: " in worker.log_path.read_text(errors="replace")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        state = (pids.PROC / str(pid) / "stat").read_text().split(") ", 1)[1][:1]
        return state != "Z"
    return False
