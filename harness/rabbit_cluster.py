"""A private RabbitMQ cluster on loopback: ``size`` private nodes
(:class:`harness.private_broker.PrivateBroker`, each with its own name, ports, data and
log directories) that find each other by a static peer list and share an Erlang cookie
kept under the cluster's own directory. Nodes are stopped by their own pids; the
machine's shared RabbitMQ is never touched.

``url`` names every node, ``;``-separated, in the order given (the form ``AMQP_URL``
takes); :meth:`url_from` rotates it so that a service connects to a chosen node first.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from harness.private_broker import PrivateBroker
from harness.processes import wait_until


class RabbitCluster:
    def __init__(self, base: Path, size: int = 3) -> None:
        tag = uuid.uuid4().hex[:6]
        self.home = base / "home"  # the nodes' shared Erlang cookie
        self.home.mkdir(parents=True, exist_ok=True)
        names = [f"carousel-c{tag}-{i}@localhost" for i in range(size)]
        peers = tuple(
            ["cluster_formation.peer_discovery_backend = classic_config"]
            + [f"cluster_formation.classic_config.nodes.{i + 1} = {n}" for i, n in enumerate(names)]
        )
        self.nodes = [
            PrivateBroker(base / f"node{i}", name=name, config=peers, home=self.home)
            for i, name in enumerate(names)
        ]

    @property
    def url(self) -> str:
        return self.url_from(0)

    def url_from(self, first: int) -> str:
        """Every node's URL, starting with node ``first``."""
        order = self.nodes[first:] + self.nodes[:first]
        return ";".join(node.url for node in order)

    def start(self) -> None:
        """Start the first node, then the others, which join it; return once every node
        sees all of them running."""
        for node in self.nodes:
            node.start()
        wait_until(
            lambda: all(self.running(n) == self.names for n in self.nodes),
            120,
            what=f"a cluster of {len(self.nodes)} nodes",
        )

    @property
    def names(self) -> list[str]:
        return sorted(node.name for node in self.nodes)

    def running(self, node: PrivateBroker) -> list[str]:
        """The cluster's running nodes as ``node`` sees them (empty if it cannot say)."""
        out = node.ctl("cluster_status", "--formatter", "json")
        if out is None:
            return []
        return sorted(json.loads(out).get("running_nodes", []))

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
