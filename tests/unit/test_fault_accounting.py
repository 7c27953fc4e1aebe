"""The fault suite's accounting rules on plain data (:mod:`harness.faults.accounting`):
each key's order, and which runs ``python -m harness.faults`` makes."""

from __future__ import annotations

import itertools
import random
import re
from pathlib import Path

import pytest

from harness.faults import accounting
from harness.faults import docs as fault_docs
from harness.faults.ledgerdb import POSTGRESQL, SQLITE
from harness.faults.load import Accepted
from harness.faults.suite import (
    FAST,
    FAST_FAULTS,
    FAST_SHARDS,
    FAST_SHARDS_FAULTS,
    FAULTS,
    FULL,
    MACHINES,
    MACHINES_FAULTS,
    SHARDS,
    SHARDS_FAULTS,
    plan,
)
from harness.recorder import ABANDONED, COMPLETED, FAILED, FENCED, Call

KEY = ("h1", "vm1", "p1")
OTHER = ("h1", "vm1", "p2")

_seq = itertools.count(1)
#: the earlier event an order violation names
EARLIER = re.compile(r" of (\S+), whose 202 came")


def event(
    eid: str, sent: float, accepted: float, key: tuple[str, str, str] = KEY, kind: str = "load"
) -> Accepted:
    return Accepted(eid, *key, kind=kind, first_try=sent, accepted_at=accepted)


def call(eid: str, started: float, outcome: str = COMPLETED, token: int = 1) -> Call:
    return Call(
        seq=next(_seq),
        event_id=eid,
        host=KEY[0],
        vm=KEY[1],
        token=token,
        idempotency_key=eid,
        client_port=0,
        poison=None,
        started=started,
        ended=started + 0.1,
        outcome=outcome,
    )


def out_of_order(events: list[Accepted], calls: list[Call]) -> list[str]:
    """The ids charged with an order violation, e1 -> e2 as the detail names them."""
    accepted = {e.id: e for e in events}
    sent = {e.id: e.first_try for e in events if e.kind != "monitoring"}
    found, _ = accounting.order(accepted, calls, sent)
    assert all(a.kind == accounting.VIOLATION for a in found)
    pairs = []
    for a in found:
        e1 = EARLIER.search(a.detail)
        assert e1 is not None, a.detail
        pairs.append(f"{e1[1]}->{a.event_id}")
    return sorted(pairs)


# (name, events, calls, expected e1->e2 pairs)
CASES = [
    (
        "in order",
        [event("e1", 0, 1), event("e2", 2, 3)],
        [call("e1", 5), call("e2", 6)],
        [],
    ),
    (
        "the later one ran first",
        [event("e1", 0, 1), event("e2", 2, 3)],
        [call("e2", 5), call("e1", 6)],
        ["e1->e2"],
    ),
    (
        "posted before the other's 202: they raced, no order",
        [event("e1", 0, 3), event("e2", 2, 4)],
        [call("e2", 5), call("e1", 6)],
        [],
    ),
    (
        "one batch (one 202 for both): no order",
        [event("e1", 0, 1), event("e2", 0, 1)],
        [call("e2", 5), call("e1", 6)],
        [],
    ),
    (
        "other keys are not compared",
        [event("e1", 0, 1), event("e2", 2, 3, key=OTHER)],
        [call("e2", 5), call("e1", 6)],
        [],
    ),
    (
        "a poison event before, failing: its first call counts",
        [event("e1", 0, 1, kind="poison-fail"), event("e2", 2, 3)],
        [call("e1", 5, FAILED), call("e2", 6)],
        [],
    ),
    (
        "a poison event before, killing its caller every time: its first call counts",
        [event("e1", 0, 1, kind="poison-kill"), event("e2", 2, 3)],
        [call("e1", 5, ABANDONED), call("e1", 8, ABANDONED, 2), call("e2", 9)],
        [],
    ),
    (
        "a poison event overtaken",
        [event("e1", 0, 1, kind="poison-fail"), event("e2", 2, 3)],
        [call("e2", 5), call("e1", 6, FAILED)],
        ["e1->e2"],
    ),
    (
        "a poison event after: its failed calls are its first calls",
        [event("e1", 0, 1), event("e2", 2, 3, kind="poison-fail")],
        [call("e2", 5, FAILED), call("e1", 6), call("e2", 7, FAILED)],
        ["e1->e2"],
    ),
    (
        "cut off, then run again, before the next one: in order",
        [event("e1", 0, 1), event("e2", 2, 3)],
        [call("e1", 5, ABANDONED), call("e1", 9, token=2), call("e2", 10)],
        [],
    ),
    (
        "the next one ran while the first waited for its second claim",
        [event("e1", 0, 1), event("e2", 2, 3)],
        [call("e1", 5, ABANDONED), call("e2", 6), call("e1", 9, token=2)],
        ["e1->e2"],
    ),
    (
        "a fenced stale call after the completed one changes nothing",
        [event("e1", 0, 1), event("e2", 2, 3)],
        [call("e1", 5, token=2), call("e2", 6), call("e1", 7, FENCED)],
        [],
    ),
    (
        "an event without a call (lost: counted as such) is not in the order",
        [event("e1", 0, 1), event("e2", 2, 3), event("e3", 4, 5)],
        [call("e1", 6), call("e3", 7)],
        [],
    ),
    (
        "the monitoring's events (their 202 unseen) are left out",
        [event("m1", 0, 1, kind="monitoring"), event("e2", 2, 3)],
        [call("e2", 5), call("m1", 6)],
        [],
    ),
    (
        "one pair per earlier event overtaken",
        [event("e1", 0, 1), event("e2", 2, 3), event("e3", 4, 5)],
        [call("e3", 6), call("e1", 7), call("e2", 8)],
        ["e1->e3", "e2->e3"],
    ),
    (
        "same start: no later is in order",
        [event("e1", 0, 1), event("e2", 2, 3)],
        [call("e1", 5), call("e2", 5)],
        [],
    ),
]


@pytest.mark.parametrize(
    ("events", "calls", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_keys_order(events: list[Accepted], calls: list[Call], expected: list[str]) -> None:
    assert out_of_order(events, calls) == expected


def _reference(events: list[Accepted], calls: list[Call]) -> tuple[int, int]:
    """Every pair, straight from the rule's words: (out of order, judged)."""
    n = judged = 0
    for e1, e2 in itertools.permutations(events, 2):
        if (e1.host, e1.vm, e1.policy) != (e2.host, e2.vm, e2.policy):
            continue
        if not e1.accepted_at < e2.first_try:
            continue
        mine = [c for c in calls if c.event_id == e1.id]
        done = [c.started for c in mine if c.outcome == COMPLETED] or [c.started for c in mine]
        began = [c.started for c in calls if c.event_id == e2.id]
        if done and began:
            judged += 1
            n += min(done) > min(began)
    return n, judged


def test_matches_the_rule_on_random_histories() -> None:
    rng = random.Random(7)
    for _ in range(300):
        events = []
        for i in range(rng.randint(1, 8)):
            sent = rng.uniform(0, 10)
            key = rng.choice([KEY, OTHER])
            events.append(event(f"e{i}", sent, sent + rng.uniform(0, 3), key=key))
        calls = [
            call(e.id, rng.uniform(0, 20), rng.choice([COMPLETED, ABANDONED, FAILED, FENCED]))
            for e in events
            for _ in range(rng.randint(0, 3))
        ]
        accepted = {e.id: e for e in events}
        found, judged = accounting.order(accepted, calls, {e.id: e.first_try for e in events})
        assert (len(found), judged) == _reference(events, calls)


def test_the_runs_of_make_faults() -> None:
    [(full, full_faults), (machines, machine_faults), (shards, shard_faults)] = plan()
    assert (full, machines, shards) == (FULL, MACHINES, SHARDS)
    assert (full.ledger, machines.ledger, shards.ledger) == (SQLITE, POSTGRESQL, POSTGRESQL)
    assert all(f.ledger != POSTGRESQL and f.shards is not True for f in full_faults)
    assert [f.name for f in machine_faults] == MACHINES_FAULTS
    assert all(f.ledger != SQLITE and f.shards is not True for f in machine_faults)
    assert [f.name for f in shard_faults] == SHARDS_FAULTS
    assert (shards.shards, shards.partitions) == (2, 16)
    assert {"shard-kill", "shard-join-leave"} <= set(SHARDS_FAULTS)
    assert all(f.ledger != SQLITE and f.shards is not False for f in shard_faults)
    # the document shows the runs in the suite's order
    assert tuple(p.name for p, _ in plan()) == fault_docs.ORDER


def test_runs_picks_whole_runs_or_puts_the_faults_named_in_them() -> None:
    assert plan(runs=["shards"]) == [plan()[2]]
    assert plan(fast=True, runs=["fast"]) == plan(fast=True)[:1]
    runs = plan(runs=["shards", "machines"], only=["shard-kill", "ledger-cut", "retire-storm"])
    assert [(p.name, [f.name for f in fs]) for p, fs in runs] == [
        ("machines", ["ledger-cut", "retire-storm"]),  # a shard fault needs shards
        ("shards", ["shard-kill", "retire-storm"]),  # ledger-cut needs a standby
    ]
    assert plan(runs=["shards"], only=["ledger-lock"]) == []  # SQLite's alone
    assert plan(runs=["full"], only=["shard-kill"]) == []


def test_the_fault_table_shows_the_runs_in_order_and_the_shards(tmp_path: Path) -> None:
    row = {"what": "`x`: y", "injected": 1, "recovery": "1.0", "counts": [0, 0, 0, 0]}
    for name, shards in (("shards", 2), ("full", 0), ("machines", 0)):
        fault_docs.record(
            name, "sqlite", [row], f"{name} line", shards, 16 if shards else 0, tmp_path
        )
    text = fault_docs.render(tmp_path)
    heads = [line for line in text.splitlines() if line.startswith("####")]
    assert heads == [
        "#### `full` run, sqlite ledger",
        "#### `machines` run, sqlite ledger",
        "#### `shards` run, sqlite ledger, 2 dispatcher shards over 16 partitions",
    ]


def test_only_runs_each_fault_on_the_ledger_it_needs() -> None:
    assert [(p, [f.name for f in fs]) for p, fs in plan(only=["clock-skew"])] == [
        (MACHINES, ["clock-skew"])
    ]
    runs = plan(fast=True, only=["ledger-lock", "shard-kill", "ledger-cut", "garbage"])
    assert [(p, [f.name for f in fs]) for p, fs in runs] == [
        (FAST, ["ledger-lock", "garbage"]),
        (MACHINES, ["ledger-cut"]),
        (FAST_SHARDS, ["shard-kill"]),
    ]
    assert plan(only=["shard-kill"]) == [(SHARDS, [FAULTS["shard-kill"]])]
    assert plan(fast=True) == [(FAST, FAST_FAULTS), (FAST_SHARDS, FAST_SHARDS_FAULTS)]
    assert FAST_SHARDS.ledger == SQLITE and FAST_SHARDS.shards == 2
    [(profile, [fault])] = plan(fast=True, only=["shard-kill"])
    assert (profile, fault.name) == (FAST_SHARDS, "shard-kill")


@pytest.mark.parametrize(
    ("kills", "second_token", "kind"),
    [
        ([], 2, accounting.DUPLICATE),  # no kill: two effects
        ([10.15], 2, accounting.REPEATED),  # killed just after the answer: a takeover repeats
        ([10.15], 1, accounting.DUPLICATE),  # the same token: not a takeover
        ([9.0], 2, accounting.DUPLICATE),  # a kill before the call ended cut nothing of it
        ([12.0], 2, accounting.DUPLICATE),  # a kill long after: the record had time
    ],
)
def test_a_second_effect_counts_as_a_duplicate_unless_its_first_worker_was_just_killed(
    kills: list[float], second_token: int, kind: str
) -> None:
    """The first call answered at 10.1; its worker killed before the ledger recorded it
    is the documented repeat of an action cut off (reported), anything else a duplicate."""
    e = event("e1", 1.0, 1.1)
    calls = [call("e1", 10.0, token=1), call("e1", 20.0, token=second_token)]
    statuses = {"e1": {"status": "succeeded", "dispatched_at": 9.0, "error": None}}
    found = accounting.classify({"e1": e}, statuses, calls, {"e1"}, 1, 4, kills)
    assert [a.kind for a in found] == [kind]


def test_the_named_limits_are_judged_per_call() -> None:
    """A call accepted with more of its action running than ACTION_LIMITS allows, or more
    VMs of its group in action than GROUP_BUDGETS allows, is a violation; within them, or
    with no such limit configured, it is not."""

    def named(action: str, group: str | None, running_action: int, running_group: int) -> Call:
        c = call(f"{action}-{group}-{running_action}-{running_group}", 1.0)
        c.action, c.group = action, group
        c.running_action, c.running_group = running_action, running_group
        return c

    calls = [
        named("live_migrate", None, 2, 0),  # at the limit: fine
        named("live_migrate", None, 3, 0),  # over it
        named("upgrade", "web", 5, 1),  # no action limit; the budget met
        named("upgrade", "web", 1, 2),  # two replicas in action
        named("upgrade", "db", 1, 4),  # no budget for db
    ]
    accepted = {c.event_id: event(c.event_id, 0, 0) for c in calls}
    statuses = {c.event_id: {"status": "succeeded", "dispatched_at": 1.0} for c in calls}
    found = accounting.classify(
        accepted, statuses, calls, set(accepted), 1, 10, (), {"live_migrate": 2}, {"web": 1}
    )
    assert sorted((a.event_id, a.detail) for a in found) == [
        ("live_migrate-None-3-0", "3 live_migrate running (ACTION_LIMITS 2)"),
        ("upgrade-web-1-2", "2 VMs of group web in action (GROUP_BUDGETS 1)"),
    ]
    # the same calls judged in a run without such limits: nothing
    assert accounting.classify(accepted, statuses, calls, set(accepted), 1, 10) == []


def test_the_recorder_counts_a_group_s_vms_and_an_action_s_calls() -> None:
    """The receiver's counts as the driver's POSTs arrive (bodies as the webhook driver
    sends them): held calls overlap, and each is stored with what ran beside it."""
    import threading

    import httpx

    from harness.recorder import Receiver

    rec = Receiver()
    try:
        bodies = [
            {"id": "a", "host": "h", "vm": "web-1", "action": "upgrade", "group": "web"},
            {"id": "b", "host": "h", "vm": "web-2", "action": "upgrade", "group": "web"},
            {"id": "c", "host": "h", "vm": "x", "action": "live_migrate", "group": None},
        ]
        threads = []
        for b in bodies:
            body = {**b, "policy": "p", "payload": {"hold": 0.5}}
            t = threading.Thread(target=httpx.post, args=(rec.url,), kwargs={"json": body})
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        got = {c.event_id: c for c in rec.calls()}
        assert got["c"].group is None and got["c"].running_group == 0
        assert got["c"].action == "live_migrate" and got["c"].running_action == 1
        assert max(got[i].running_group for i in "ab") == 2
        assert max(got[i].running_action for i in "ab") == 2
    finally:
        rec.close()
