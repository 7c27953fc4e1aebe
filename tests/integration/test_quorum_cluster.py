"""Beyond one machine: a 3-node RabbitMQ cluster on loopback (private nodes), quorum
queues, the ledger on PostgreSQL, and the services spread over the nodes as they would
be over machines — each connects to its own node first (AMQP_URL lists all three). One
node is killed under load: every event a producer accepted runs exactly once, the
limits hold, and the producer and worker that were on the killed node carry on from
another node."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import private_broker
from harness.processes import Stack, free_port, wait_until
from harness.rabbit_cluster import RabbitCluster
from tests.conftest import IN_CI
from tests.effects import EffectRecorder
from tests.ledgers import fresh_ledger_url

EVENTS = 600
BATCH = 10
MAX_PARALLEL = 4


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RabbitCluster]:
    if not private_broker.available():
        reason = "no rabbitmq-server on this machine: no cluster of private nodes"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    nodes = RabbitCluster(tmp_path / "cluster", size=3)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


class Poster:
    """Posts its batches to one producer, each until it is accepted (202), retrying the
    same ids after any error, as an at-least-once client does."""

    def __init__(self, url: str, batches: list[list[dict[str, Any]]]) -> None:
        self.url = f"{url}/events"
        self.batches = batches
        self.accepted: list[str] = []
        self.refusals = 0
        self.last_refusal = ""
        self.accepted_after_kill = 0
        self.kill_time: float | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 150
        for batch in self.batches:
            while time.monotonic() < deadline:
                try:
                    r = httpx.post(self.url, json={"events": batch}, timeout=30)
                except httpx.HTTPError:
                    r = None
                if r is not None and r.status_code == 202:
                    self.accepted.extend(r.json()["ids"])
                    if self.kill_time is not None:
                        self.accepted_after_kill += len(batch)
                    break
                assert r is None or r.status_code == 503, r.text
                self.refusals += 1
                self.last_refusal = "no answer" if r is None else r.text
                time.sleep(0.3)


def test_a_node_killed_under_load_loses_nothing(
    cluster: RabbitCluster, tmp_path: Path, recorder: EffectRecorder
) -> None:
    events = [
        {
            "id": f"c{i:04d}",
            "host": f"h{i % 4}",
            "vm": f"vm{i % 10}",
            "policy": f"p{i % 2}",
            "action": "heal",
            "payload": {"delay": 0.02},
        }
        for i in range(EVENTS)
    ]
    batches = [events[i : i + BATCH] for i in range(0, EVENTS, BATCH)]
    with fresh_ledger_url("postgresql", tmp_path) as ledger:
        common = {
            "CAROUSEL_PREFIX": "cluster",
            "CAROUSEL_DB_URL": ledger,
            "QUEUE_TYPE": "quorum",
            "DRIVER": "webhook",
            "WEBHOOK_URL": recorder.url,
            "MAX_PARALLEL": str(MAX_PARALLEL),
            "WORKER_CONCURRENCY": "2",
            "PUBLISH_TIMEOUT": "5",
            "CLAIM_LEASE_SECONDS": "3",
            "SWEEP_INTERVAL": "1",
            "RECONCILE_INTERVAL": "2",
            "LOG_LEVEL": "INFO",
        }
        # one "machine" per node: its services connect to that node first
        machines = [
            Stack(
                {
                    **common,
                    "AMQP_URL": cluster.url_from(i),
                    "PRODUCER_PORT": str(free_port()),
                    "DISPATCHER_PORT": str(free_port()),
                    "ELASTICITY_PORT": str(free_port()),
                },
                tmp_path / f"machine{i}",
            )
            for i in range(3)
        ]
        for m in machines:
            m.log_dir.mkdir()
        try:
            machines[0].dispatcher()
            machines[0].producer()
            machines[1].producer()
            for m in machines[1:]:
                m.worker()
            posters = [
                Poster(machines[0].producer_url, batches[0::2]),
                Poster(machines[1].producer_url, batches[1::2]),
            ]
            for p in posters:
                p.thread.start()
            wait_until(
                lambda: sum(len(p.accepted) for p in posters) >= EVENTS // 3,
                120,
                what="a third of the events accepted",
            )
            cluster.nodes[1].kill()  # machine 1's producer and worker lose their node
            killed_at = time.time()
            for p in posters:
                p.kill_time = killed_at
            for p in posters:
                p.thread.join(300)
            accepted = sorted(i for p in posters for i in p.accepted)
            assert accepted == sorted(e["id"] for e in events), [p.last_refusal for p in posters]
            assert posters[1].accepted_after_kill > 0  # its producer moved to another node

            wait_until(
                lambda: all(recorder.calls[i] >= 1 for i in accepted),
                240,
                what=f"every accepted event executed ({machines[0].logs()})",
            )
            wait_until(
                lambda: _all_succeeded(machines[0], accepted),
                120,
                what="every event succeeded in the ledger",
            )
            assert [i for i in accepted if recorder.calls[i] != 1] == []
            assert recorder.max_per_vm == 1
            assert recorder.max_running <= MAX_PARALLEL
        finally:
            for m in machines:
                m.stop()


def _all_succeeded(stack: Stack, ids: list[str]) -> bool:
    for i in ids:
        r = httpx.get(f"{stack.producer_url}/events/{i}", timeout=10)
        if r.status_code != 200 or r.json()["status"] != "succeeded":
            return False
    return True
