"""Dispatcher shards (DISPATCHER_PARTITIONS > 0): two active dispatchers, each serving the
hosts of the partitions it holds, run every event once, in each key's order, within the
global MAX_PARALLEL and one action per VM — and when one is killed under load, the other
takes its partitions over and nothing is lost or run twice."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import kombu
import pytest

from harness.processes import Service, Stack, wait_until
from harness.recorder import COMPLETED, Receiver
from shared.partition_leases import partition_of
from shared.topology import Topology
from tests.effects import EffectRecorder
from tests.integration.test_e2e import all_finished, event, post

PARTITIONS = 8
LIMIT = 4


def _stats(url: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{url}/stats", timeout=5).json()
    return body


def _serving(url: str) -> set[int]:
    shard = _stats(url)["shard"]
    return set(shard["serving"]) if shard else set()


def _two_shards(
    stack_factory: Callable[..., Stack],
    recorder: EffectRecorder | Receiver,
    **env: Any,
) -> tuple[Stack, Service, Service, str]:
    stack = stack_factory(
        DRIVER="webhook",
        WEBHOOK_URL=recorder.url,
        MAX_PARALLEL=LIMIT,
        DISPATCHER_PARTITIONS=PARTITIONS,
        DISPATCHER_LEASE_SECONDS=3,
        **env,
    )
    stack.producer()
    first = stack.dispatcher()
    second, second_url = stack.another_dispatcher()
    stack.worker()

    def split() -> bool:
        a, b = _serving(stack.dispatcher_url), _serving(second_url)
        return bool(a) and bool(b) and not a & b and a | b == set(range(PARTITIONS))

    wait_until(split, 60, what="the two shards split the partitions")
    return stack, first, second, second_url


def _events(hosts: int, per_key: int, delay: float) -> list[dict[str, Any]]:
    return [
        {
            "host": f"h{h}",
            "vm": f"vm{v}",
            "policy": f"p{p}",
            "action": "heal",
            "id": f"h{h}-vm{v}-p{p}-{n}",
            "payload": {"delay": delay},
        }
        for n in range(per_key)
        for h in range(hosts)
        for v in range(2)
        for p in range(2)
    ]


def _check(stack: Stack, recorder: EffectRecorder, ids: list[str], ordered: bool = True) -> None:
    assert {event(stack, i)["status"] for i in ids} == {"succeeded"}
    assert sorted(recorder.calls) == sorted(ids) and set(recorder.calls.values()) == {1}
    assert recorder.max_per_vm == 1, "two actions of one VM ran at once"
    assert recorder.max_running <= LIMIT, "the shards together passed MAX_PARALLEL"
    started = {i: n for n, i in reversed(list(enumerate(recorder.order)))}
    for i in ids if ordered else ():  # each key's events ran in the order they were posted
        key, n = i.rsplit("-", 1)
        if int(n):
            assert started[f"{key}-{int(n) - 1}"] < started[i], f"{i} ran before its elder"


def test_two_shards_run_every_event_once_in_key_order(
    stack_factory: Callable[..., Stack], recorder: EffectRecorder
) -> None:
    stack, _, _, second_url = _two_shards(stack_factory, recorder)
    ids = post(stack, _events(hosts=8, per_key=3, delay=0.05))
    wait_until(lambda: all_finished(stack, ids), 180, what="every event finished")
    _check(stack, recorder, ids)
    assert _stats(stack.dispatcher_url)["dispatched_total"] > 0
    assert _stats(second_url)["dispatched_total"] > 0
    # each shard has every task event on a queue of its own; none piles up in the shared one
    with kombu.Connection(stack.env["AMQP_URL"]) as conn:
        shared = Topology(stack.env["CAROUSEL_PREFIX"]).completions_queue.name
        assert conn.default_channel.queue_declare(shared, passive=True).message_count == 0
    seen = httpx.get(f"{second_url}/shards", timeout=5).json()  # any shard answers for all
    names = {_stats(url)["shard"]["name"] for url in (stack.dispatcher_url, second_url)}
    assert {s["shard"] for s in seen["shards"]} == names
    assert {p["holder"] for p in seen["partition_leases"]} == names
    assert seen["marker"]["holder"] == "shards"


def test_a_pause_and_a_weight_told_to_one_shard_reach_every_shard(
    stack_factory: Callable[..., Stack], recorder: EffectRecorder
) -> None:
    stack, _, _, second_url = _two_shards(stack_factory, recorder)
    assert httpx.post(f"{stack.dispatcher_url}/pause", timeout=5).status_code == 200
    wait_until(lambda: _stats(second_url)["paused"] is True, 30, what="the other shard paused")
    ids = post(stack, _events(hosts=8, per_key=1, delay=0))
    wait_until(lambda: _stats(second_url)["held"] + _stats(stack.dispatcher_url)["held"] > 0, 30)
    assert not recorder.calls, "a paused shard dispatched"
    told = httpx.put(f"{stack.dispatcher_url}/weights", json={"hosts": {"h3": 2}}, timeout=5)
    assert told.status_code == 200
    wait_until(
        lambda: httpx.get(f"{second_url}/weights", timeout=5).json()["hosts"] == {"h3": 2},
        30,
        what="a weight told to one shard reached the other",
    )
    assert httpx.post(f"{second_url}/resume", timeout=5).status_code == 200
    wait_until(lambda: all_finished(stack, ids), 120, what="every event finished once resumed")
    _check(stack, recorder, ids)


def test_a_killed_shards_partitions_are_taken_over_and_nothing_is_lost(
    stack_factory: Callable[..., Stack], recorder: EffectRecorder
) -> None:
    stack, _, second, second_url = _two_shards(stack_factory, recorder)
    ids = post(stack, _events(hosts=8, per_key=3, delay=0.1))
    wait_until(lambda: _stats(second_url)["dispatched_total"] > 0, 60, what="both dispatching")
    second.kill()  # kill -9: its leases run out, the survivor takes them
    wait_until(
        lambda: _serving(stack.dispatcher_url) == set(range(PARTITIONS)),
        60,
        what="the survivor serves every partition",
    )
    wait_until(lambda: all_finished(stack, ids), 180, what="every event finished")
    _check(stack, recorder, ids)


def test_any_shard_says_what_holds_an_event_the_other_serves(
    stack_factory: Callable[..., Stack], recorder: EffectRecorder
) -> None:
    """The producer asks one shard (DISPATCHER_URL) what holds a head: a shard that does
    not serve the event's host passes the question on to the one that does."""
    stack, _, _, second_url = _two_shards(stack_factory, recorder)
    first = [
        {"host": f"h{h}", "vm": "vm0", "policy": "p0", "action": "heal", "id": f"long-{h}"}
        | {"payload": {"delay": 3}}
        for h in range(8)
    ]
    then = [
        {"host": f"h{h}", "vm": "vm0", "policy": "p1", "action": "heal", "id": f"next-{h}"}
        for h in range(8)
    ]
    ids = post(stack, first)
    wait_until(lambda: len(recorder.calls) >= LIMIT, 30, what="the long actions running")
    ids += post(stack, then)
    served_by_second = _serving(second_url)
    elsewhere = [h for h in range(8) if partition_of(f"h{h}", PARTITIONS) in served_by_second]
    assert elsewhere
    said_held: set[int] = set()

    def said_by_the_first_shard() -> bool:
        for h in elsewhere:
            said = httpx.get(f"{stack.dispatcher_url}/waiting/next-{h}", timeout=5).json()
            if said["known"] == "held":
                assert said["waiting"] is not None
                said_held.add(h)
        return bool(said_held)

    wait_until(said_by_the_first_shard, 30, what="the first shard tells of the other's heads")
    wait_until(lambda: all_finished(stack, ids), 120, what="every event finished")
    _check(stack, recorder, ids, ordered=False)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.close()


def test_two_shards_keep_an_action_limit_and_a_group_budget_together(
    stack_factory: Callable[..., Stack], receiver: Receiver, ledger_url: str
) -> None:
    """ACTION_LIMITS and GROUP_BUDGETS hold across the shards, not per shard: live
    migrations and a group's upgrades on the hosts of both shards never run more at once
    than the one limit allows, as the receiver counts the calls in progress — and the
    limit is reached, by both shards' work. On SQLite and on PostgreSQL, whose row locks
    the shards' marks wait on (shared/named_budget.py)."""
    stack, _, _, second_url = _two_shards(
        stack_factory,
        receiver,
        ACTION_LIMITS="live_migrate=1",
        GROUP_BUDGETS="web=1",
        CAROUSEL_DB_URL=ledger_url,
    )
    hosts = [f"h{i}" for i in range(8)]
    moves = [
        {
            "host": h,
            "vm": f"app-{v}",
            "policy": "ops",
            "action": "live_migrate",
            "id": f"move-{h}-{v}",
            "payload": {"hold": 0.2},
        }
        for h in hosts
        for v in range(2)
    ]
    upgrades = [
        {
            "host": h,
            "vm": f"web-{h}",
            "policy": "rollout",
            "action": "upgrade",
            "group": "web",
            "id": f"up-{h}",
            "payload": {"hold": 0.2},
        }
        for h in hosts
    ]
    ids = post(stack, moves + upgrades)
    wait_until(lambda: all_finished(stack, ids), 180, what="every event finished")
    assert {event(stack, i)["status"] for i in ids} == {"succeeded"}
    calls = [c for c in receiver.calls() if c.outcome == COMPLETED]
    assert sorted(c.event_id for c in calls) == sorted(ids)
    migrations = [c for c in calls if c.action == "live_migrate"]
    assert max(c.running_action for c in migrations) == 1, "the shards passed ACTION_LIMITS"
    web = [c for c in calls if c.group == "web"]
    assert max(c.running_group for c in web) == 1, "the shards passed GROUP_BUDGETS"
    # both shards had work of each limit: the limit was one, shared
    served = [_serving(stack.dispatcher_url), _serving(second_url)]
    for work in (migrations, web):
        partitions = {partition_of(c.host, PARTITIONS) for c in work}
        assert all(partitions & mine for mine in served)
