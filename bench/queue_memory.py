"""What a key costs the broker: memory per per-key queue, classic on one node against
quorum on a 3-node cluster (private nodes on loopback, as the cluster test starts them),
and how fast each kind is declared. A key is one durable queue (a VM's policy on a
host), so this is the broker's cost per key."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import kombu

from bench.common import declare_queues
from bench.report import save
from harness.private_broker import PrivateBroker
from harness.rabbit_cluster import RabbitCluster


def _memory_mb(cluster: RabbitCluster, node: PrivateBroker) -> float:
    """The node's memory as the runtime counts it (``rabbitmqctl status``)."""
    out = node.ctl("status", "--formatter", "json")
    assert out is not None, f"no status from {node.name}"
    return float(json.loads(out)["memory"]["total"]["erlang"]) / 2**20


def _declare(url: str, names: list[str], arguments: dict[str, Any]) -> float:
    """Declare ``names`` durable, one message in each; returns the seconds it took."""
    started = time.perf_counter()
    with kombu.Connection(url) as conn:
        channel = conn.channel()
        declare_queues(channel, names, arguments)
        for name in names:
            channel.basic_publish(channel.prepare_message(b"{}"), exchange="", routing_key=name)
        channel.queue_declare(names[-1], passive=True)  # a round trip after the publishes
    return time.perf_counter() - started


def run(queues: int = 2_000) -> None:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="carousel-qmem-") as tmp:
        cluster = RabbitCluster(Path(tmp), size=3)
        try:
            cluster.start()
            url = cluster.nodes[0].url
            for kind, arguments in (
                ("classic", {}),
                ("quorum", {"x-queue-type": "quorum"}),
            ):
                time.sleep(5)  # let the nodes settle after the previous round
                before = [_memory_mb(cluster, n) for n in cluster.nodes]
                seconds = _declare(url, [f"{kind}-{i}" for i in range(queues)], arguments)
                time.sleep(5)
                after = [_memory_mb(cluster, n) for n in cluster.nodes]
                grown = [a - b for a, b in zip(after, before, strict=True)]
                rows.append(
                    {
                        "queue type": kind,
                        "queues": queues,
                        "declared + 1 message each, s": seconds,
                        "declares/s": queues / seconds,
                        "MB per 1,000 queues, node 1 / 2 / 3": " / ".join(
                            f"{g / queues * 1000:.1f}" for g in grown
                        ),
                        "KB per queue, cluster total": sum(grown) * 1024 / queues,
                    }
                )
        finally:
            cluster.stop()
    save(
        "queue_memory",
        f"Broker memory per per-key queue: classic (one node) vs quorum (3 replicas), "
        f"{queues:,} queues, one message each",
        rows,
    )


if __name__ == "__main__":
    run()
