"""Tests for scheduler.dispatcher.mapping.MappingFollower: removing a VM (fakes for the
broker's consumer and channels; the ledger is not touched by a delta)."""

from __future__ import annotations

from typing import Any, cast

from scheduler.dispatcher.dispatcher import Dispatcher, Limits
from scheduler.dispatcher.mapping import MappingFollower
from scheduler.dispatcher.settings import DispatcherSettings
from scheduler.dispatcher.state import DispatcherState
from shared.models import Action, Key, MappingDelta, VmEventMessage
from shared.topology import Topology
from tests.unit.mapping_doubles import stub_queues


class FakeChannel:
    def __init__(self, log: list[tuple[str, str]]) -> None:
        self.log = log

    def queue_delete(self, name: str, if_empty: bool = False) -> None:
        assert if_empty
        self.log.append(("delete", name))

    def close(self) -> None:
        pass


class FakeClient:
    channel_errors: tuple[type[BaseException], ...] = (RuntimeError,)
    connection_errors: tuple[type[BaseException], ...] = (ConnectionError,)

    def __init__(self, log: list[tuple[str, str]]) -> None:
        self.log = log

    def channel(self) -> FakeChannel:
        return FakeChannel(self.log)


class FakeConsumer:
    def __init__(self, log: list[tuple[str, str]]) -> None:
        self.log = log
        client = FakeClient(log)
        self.channel = type("Ch", (), {"connection": type("Conn", (), {"client": client})()})()

    def add_queue(self, bound: Any) -> None:
        self.log.append(("consume", bound.name))

    def consume(self) -> None:
        pass

    def cancel_by_queue(self, name: str) -> None:
        self.log.append(("cancel", name))


class FakeMessage:
    def __init__(self, log: list[tuple[str, str]], name: str) -> None:
        self.log, self.name = log, name

    def requeue(self) -> None:
        self.log.append(("requeue", self.name))


def test_a_removed_vms_queue_whose_head_was_given_back_is_not_deleted(monkeypatch: Any) -> None:
    """The head may be an event posted after the VM was re-added: the give-back and a
    delete on another channel are not ordered, so deleting could drop it."""
    stub_queues(monkeypatch)
    log: list[tuple[str, str]] = []
    state: DispatcherState[Any] = DispatcherState(Dispatcher(Limits(10, 1, 0)))
    follower = MappingFollower(DispatcherSettings(), cast(Any, None), state)
    follower.attach(cast(Any, FakeConsumer(log)))
    for version, policy in enumerate(["held", "empty"], start=1):
        follower.apply(
            MappingDelta(version=version, op="key_added", host="h", vm="v", policy=policy)
        )
    event = VmEventMessage(
        id="e", host="h", vm="v", policy="held", action=Action.HEAL, accepted_at=0
    )
    assert state.offer(event, FakeMessage(log, "e"))
    log.clear()

    follower.apply(MappingDelta(version=3, op="vm_removed", host="h", vm="v"))

    topology = Topology()
    held_q = topology.event_queue_name(Key(host="h", vm="v", policy="held"))
    empty_q = topology.event_queue_name(Key(host="h", vm="v", policy="empty"))
    assert log == [
        ("cancel", held_q),
        ("cancel", empty_q),
        ("requeue", "e"),
        ("delete", empty_q),
    ]
    assert follower.queue_count == 0


class FakeStore:
    """The ledger's mapping as a follower reads it: a version, and a snapshot of keys."""

    def __init__(self, keys: list[tuple[str, str, str]], version: int) -> None:
        from shared.models import HostView, MappingSnapshot, PolicyView, VmView

        self.version = version
        hosts: dict[str, HostView] = {}
        for h, v, p in keys:
            vms = hosts.setdefault(h, HostView(available=True, vms={})).vms
            vms.setdefault(v, VmView(available=True, policies={})).policies[p] = PolicyView(
                queued=0
            )
        self._snapshot = MappingSnapshot(version=version, hosts=hosts)
        self.snapshots = 0

    def snapshot(self) -> Any:
        self.snapshots += 1
        return self._snapshot

    def mapping_version(self) -> int:
        return self.version


class Clock:
    """The follower's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _follower(
    monkeypatch: Any, store: FakeStore, clock: Clock, keepalive: Any = None
) -> MappingFollower:
    import scheduler.dispatcher.mapping as mapping

    stub_queues(monkeypatch)
    monkeypatch.setattr(mapping.time, "monotonic", clock)
    state: DispatcherState[Any] = DispatcherState(Dispatcher(Limits(10, 1, 0)))
    follower = MappingFollower(
        DispatcherSettings(resync_interval=30), cast(Any, store), state, keepalive
    )
    follower.attach(cast(Any, FakeConsumer([])))
    return follower


def test_a_version_ahead_at_one_check_resyncs_only_if_still_missing_at_the_next(
    monkeypatch: Any,
) -> None:
    """A request commits its version before it publishes the delta: the ledger being
    ahead at one check is a delta on its way, not a lost one. Still behind that version
    at the next check: lost, and the follower resyncs."""
    store = FakeStore([("h", "v", "p")], version=1)
    clock = Clock()
    follower = _follower(monkeypatch, store, clock)
    follower.resync()
    assert store.snapshots == 1 and follower.version == 1
    store.version = 2  # committed, its delta not yet here
    clock.now += 31
    follower.maybe_resync()
    follower.apply(MappingDelta(version=2, op="key_added", host="h", vm="v2", policy="p"))
    clock.now += 31
    follower.maybe_resync()
    assert store.snapshots == 1  # it arrived: no resync
    store.version = 3  # and this one is lost
    for _ in range(2):
        clock.now += 31
        follower.maybe_resync()
    assert store.snapshots == 2


def test_a_resync_of_many_keys_keeps_the_lease_alive_between_its_rounds(
    monkeypatch: Any,
) -> None:
    import scheduler.dispatcher.mapping as mapping

    monkeypatch.setattr(mapping, "RESYNC_CHUNK", 10)
    calls: list[int] = []
    store = FakeStore([("h", f"v{i}", "p") for i in range(35)], version=1)
    follower = _follower(monkeypatch, store, Clock(), keepalive=lambda: calls.append(1))
    follower.resync()
    assert len(calls) == 3 and follower.queue_count == 35


def test_a_shard_consumes_only_the_keys_of_its_partitions(monkeypatch: Any) -> None:
    """Two shards with complementary partitions over one mapping and one delta stream:
    each key is consumed by exactly one, and both follow every version."""
    from shared.partition_leases import partition_of

    keys = [(f"h{h}", f"v{v}", "p") for h in range(12) for v in range(2)]
    store = FakeStore(keys, version=1)
    followers = []
    for mine in (0, 1):
        follower = _follower(monkeypatch, store, Clock())
        follower.owns = lambda host, mine=mine: partition_of(host, 2) == mine  # type: ignore[misc]
        follower.resync()
        followers.append(follower)
    added = [("h20", "v", "p"), ("h21", "v", "p"), ("h22", "v", "p")]
    for follower in followers:
        follower.apply(MappingDelta(version=2, op="keys_added", host="h20", keys=added))
        follower.apply(MappingDelta(version=3, op="key_added", host="h23", vm="v", policy="p"))
        follower.apply(MappingDelta(version=4, op="host_availability", host="h0", available=False))
    consumed = [set(f._queues.values()) for f in followers]
    assert not consumed[0] & consumed[1]
    assert consumed[0] | consumed[1] == {*keys, *added, ("h23", "v", "p")}
    assert [f.version for f in followers] == [4, 4]
    for follower, mine in zip(followers, consumed, strict=True):
        assert all(follower.owns is not None and follower.owns(h) for h, _, _ in mine)
