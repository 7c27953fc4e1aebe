"""A stand-in for the dispatcher's AMQP session, as the admin API sees it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class FakeSession:
    connected: threading.Event = field(default_factory=threading.Event)
    mapping_version: int = 7
    dead_lettered: int = 0
    active: bool = True
    parked: int = 0
    resent_total: int = 0
    live_keys: int = 1
    retired_total: int = 0
    ledger_ok: bool = True
    standby: bool = False
    #: what not_ready says while not connected
    reason: str = "not connected to the broker"
    #: a shard's view (None: a single dispatcher)
    shard_view: dict[str, object] | None = None

    @property
    def not_ready(self) -> str | None:
        return None if self.connected.is_set() else self.reason
