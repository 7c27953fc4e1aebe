"""The named limits kept across dispatcher shards by the ledger (shared/named_budget.py):
each shard's mark of a batch carrying limited work locks the limit's row, counts its use in
the whole ledger and admits only what fits — on SQLite and on PostgreSQL, with two
engines marking at once as two shard processes would."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import sqlalchemy as sa

from harness.processes import wait_until
from scheduler.dispatcher.controls import Target
from scheduler.dispatcher.dispatcher import Dispatcher, Limits
from scheduler.dispatcher.limits import NamedLimits
from scheduler.dispatcher.shards import Coordinator
from scheduler.dispatcher.state import DispatcherState
from scheduler.dispatcher.tenure import ShardTenure
from shared import named_budget, statements
from shared import partition_leases as pl
from shared.db import events
from shared.fencing import PartitionFence
from shared.models import IN_FLIGHT, Action, Status, VmEventMessage
from shared.named_budget import Limited, NamedBudget, NamedUse, Work
from shared.partition_leases import partition_of
from shared.store import Store
from tests.ledgers import accept, at_once
from tests.unit.test_dispatcher_limits import ev

PARTITIONS = 2


def queued(store: Store, *batch: VmEventMessage) -> None:
    accept(store, batch)
    store.confirm(list(batch))


def budget(limits: NamedLimits, *batch: VmEventMessage) -> NamedBudget:
    return NamedBudget(
        limits,
        {e.id: Work(e.host, e.vm, e.policy, e.action.value, e.group) for e in batch},
    )


def mark(
    store: Store,
    limits: NamedLimits,
    *batch: VmEventMessage,
    fence: PartitionFence | None = None,
) -> dict[str, Status | Limited | None]:
    return store.mark_dispatched_many(
        [e.id for e in batch],
        "d",
        fence,
        {e.host for e in batch},
        named=budget(limits, *batch),
    )


def finish_all(store: Store) -> None:
    """Every event in flight ends (as its worker would record it)."""
    with store.engine.begin() as conn:
        conn.execute(
            events.update()
            .where(events.c.status.in_([s.value for s in IN_FLIGHT]))
            .values(status=Status.SUCCEEDED.value)
        )


def _hosts_of_each_partition(n: int) -> list[list[str]]:
    """``n`` host names of each of the two partitions."""
    names = [f"host-{i}" for i in range(400)]
    return [[h for h in names if partition_of(h, PARTITIONS) == p][:n] for p in range(PARTITIONS)]


def _two_shards(store: Store) -> list[PartitionFence]:
    """The fences of two shards, each holding one of the two partitions."""
    with store.engine.begin() as conn:
        pl.ensure(conn, range(PARTITIONS))
        tokens = [pl.take(conn, f"shard-{p}", p, 60.0) for p in range(PARTITIONS)]
    return [
        PartitionFence(f"shard-{p}", PARTITIONS, {p: token})
        for p, token in enumerate(tokens)
        if token is not None
    ]


def _race(
    open_store: Callable[[], Store],
    limits: NamedLimits,
    make: Callable[[str, str, int], VmEventMessage],
    in_use: Callable[[Store], int],
    limit: int,
) -> None:
    """Round after round, two shards (two engines, two threads released together) each
    mark a batch of limited work of their own hosts at once: the ledger never has more in
    use than ``limit``, and the limit is filled (the refused ones come back Limited,
    still queued). Then everything in flight ends, and the next round races again."""
    shard_a, shard_b, watcher = open_store(), open_store(), open_store()
    fences = _two_shards(watcher)
    hosts = _hosts_of_each_partition(6)
    for n in range(12):
        batches = [[make(f"r{n}-{p}-{i}", h, i) for i, h in enumerate(hosts[p])] for p in (0, 1)]
        queued(watcher, *batches[0], *batches[1])
        got = at_once(
            lambda b=batches[0]: mark(shard_a, limits, *b, fence=fences[0]),
            lambda b=batches[1]: mark(shard_b, limits, *b, fence=fences[1]),
        )
        assert in_use(watcher) == limit, f"round {n}: {got}"
        outcomes = [was for result in got for was in result.values()]
        assert sum(1 for was in outcomes if was is Status.QUEUED) == limit
        refused = [was for was in outcomes if isinstance(was, Limited)]
        assert len(refused) == len(outcomes) - limit
        assert all(r.used == limit and r.limit == limit for r in refused)
        refused_ids = [i for result in got for i, was in result.items() if was is not Status.QUEUED]
        assert {watcher.status_of(i) for i in refused_ids} == {Status.QUEUED}
        finish_all(watcher)


def _group_in_action(store: Store, group: str) -> int:
    return store.named_in_flight().groups.get(group, 0)


def test_two_shards_marking_one_group_at_once_exceed_no_budget(
    open_store: Callable[[], Store],
) -> None:
    _race(
        open_store,
        NamedLimits(groups={"web": 2}),
        lambda i, host, n: ev(i, host, f"web-{host}-{n}", action=Action.UPGRADE, group="web"),
        lambda s: _group_in_action(s, "web"),
        2,
    )


def test_two_shards_marking_one_action_at_once_exceed_no_limit(
    open_store: Callable[[], Store],
) -> None:
    _race(
        open_store,
        NamedLimits(actions={"live_migrate": 3}),
        lambda i, host, n: ev(i, host, f"vm-{n}", action=Action.LIVE_MIGRATE),
        lambda s: s.named_in_flight().actions.get("live_migrate", 0),
        3,
    )


def test_a_count_made_after_the_lock_sees_the_other_shards_committed_marks(
    open_store: Callable[[], Store],
) -> None:
    """READ COMMITTED gives each statement a fresh snapshot: shard B, waiting for the
    limit's row while shard A marks (on SQLite: for the write lock), counts after A
    committed and sees A's mark — so it refuses the group's second VM. On PostgreSQL the
    test sees B wait on the lock before A commits."""
    a, b = open_store(), open_store()
    limits = NamedLimits(groups={"web": 1})
    first, second = ev("a1", "h1", "web-1", group="web"), ev("b1", "h2", "web-2", group="web")
    queued(a, first, second)
    statement_sent = threading.Event()
    sa.event.listen(b.engine, "before_cursor_execute", lambda *_: statement_sent.set())
    result: dict[str, Status | Limited | None] = {}
    with a.engine.begin() as conn:
        marked, refused = named_budget.admit(conn, budget(limits, first), [first.id])
        assert (marked, refused) == ([first.id], {})
        conn.execute(
            statements.batch(conn.dialect.name).DISPATCH,
            {"ids": marked, "p_dispatch_id": "a"},
        )
        marking = threading.Thread(target=lambda: result.update(mark(b, limits, second)))
        marking.start()
        wait_until(statement_sent.is_set, 10, what="shard B's mark began")
        if a.engine.dialect.name == "postgresql":
            wait_until(lambda: _waits_on_a_lock(a), 10, what="shard B waits for the row")
        assert marking.is_alive()  # it cannot count before A commits
    marking.join(30)
    assert result == {"b1": Limited("group", "web", 1, 1)}
    assert b.status_of("b1") is Status.QUEUED
    assert a.status_of("a1") is Status.DISPATCHED


def _waits_on_a_lock(store: Store) -> bool:
    with store.engine.connect() as conn:
        return bool(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity s USING (pid) "
                    "WHERE NOT l.granted AND s.datname = current_database()"
                )
            ).scalar()
        )


def test_a_batch_is_admitted_in_pick_order_while_its_limits_are_under(
    open_store: Callable[[], Store],
) -> None:
    """Each limit counts what the batch admits before; a VM in action takes none of its
    group's budget; an event behind a refused one on its key is refused too (its key's
    order); events a limit does not touch, cancelled ones and unknown ids are as
    without a budget."""
    store = open_store()
    limits = NamedLimits(actions={"live_migrate": 2}, groups={"web": 2})
    busy = ev("busy", "h", "web-0", action=Action.UPGRADE, group="web")
    queued(store, busy)
    assert store.mark_dispatched_many(["busy"], "d0") == {"busy": Status.QUEUED}
    batch = [
        ev("m1", "h", "a", action=Action.LIVE_MIGRATE),
        ev("w0", "h", "web-0", "q", action=Action.UPGRADE, group="web"),  # its VM is in action
        ev("w1", "h", "web-1", action=Action.UPGRADE, group="web"),
        ev("m2", "h", "b", action=Action.LIVE_MIGRATE),
        ev("w2", "h", "web-2", action=Action.UPGRADE, group="web"),  # web: 2/2
        ev("m3", "h", "c", action=Action.LIVE_MIGRATE),  # live_migrate: 2/2
        ev("heal", "h", "c", "other"),  # no limit
        ev("cancelled", "h", "d", action=Action.LIVE_MIGRATE),
    ]
    queued(store, *batch)
    store.cancel("cancelled")
    behind = ev("m3-next", "h", "c", action=Action.HEAL)  # after m3 on its key: heal has no limit
    queued(store, behind)
    unknown = ev("ghost", "h", "e", action=Action.LIVE_MIGRATE)
    got = mark(store, limits, *batch, behind, unknown)
    assert got == {
        "m1": Status.QUEUED,
        "w0": Status.QUEUED,
        "w1": Status.QUEUED,
        "m2": Status.QUEUED,
        "w2": Limited("group", "web", 2, 2),
        "m3": Limited("action", "live_migrate", 2, 2),
        "heal": Status.QUEUED,
        "cancelled": Status.CANCELLED,
        "m3-next": Limited("action", "live_migrate", 2, 2),
        "ghost": None,
    }
    assert store.named_in_flight() == NamedUse(
        actions={"upgrade": 3, "live_migrate": 2, "heal": 1}, groups={"web": 2}
    )
    assert {store.status_of(i) for i in ("w2", "m3", "m3-next")} == {Status.QUEUED}


def test_a_batch_without_limited_work_takes_no_limit_lock(open_store: Callable[[], Store]) -> None:
    store = open_store()
    queued(store, ev("a"), ev("b", vm="w", group="db"))
    got = mark(store, NamedLimits(actions={"upgrade": 1}, groups={"web": 1}), ev("a"), ev("b"))
    assert got == {"a": Status.QUEUED, "b": Status.QUEUED}
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM dispatcher_limit_locks")).scalar() == 0


def test_named_in_flight_counts_actions_and_each_groups_vms_once(
    open_store: Callable[[], Store],
) -> None:
    store = open_store()
    batch = [
        ev("a", "h", "web-1", "p", Action.UPGRADE, "web"),
        ev("b", "h", "web-1", "q", Action.HEAL, "web"),  # the same VM: counted once
        ev("c", "h2", "web-2", "p", Action.UPGRADE, "web"),
        ev("d", "h2", "db-1", "p", Action.UPGRADE, "db"),
        ev("e", "h2", "x", "p", Action.HEAL),
        ev("queued", "h3", "web-3", "p", Action.UPGRADE, "web"),  # not in flight
    ]
    queued(store, *batch)
    store.mark_dispatched_many(["a", "b", "c", "d", "e"], "d")
    assert store.named_in_flight() == NamedUse(
        actions={"upgrade": 3, "heal": 2}, groups={"web": 2, "db": 1}
    )


def test_a_shards_rounds_in_session_count_the_others_use_and_its_join_does_not(
    open_store: Callable[[], Store],
) -> None:
    """The hook of a shard's rounds (the loop passes Handover.refresh_named): called
    after each round in session, never by the join between sessions, when the state
    holds none of the shard's events and would count its own as the others'."""
    store = open_store()
    state: DispatcherState[str] = DispatcherState(Dispatcher(Limits(10, 1, 0)))
    counted: list[float] = []
    tenure = ShardTenure(
        Coordinator(store.engine, "s", 4, 3.0, 10),
        state,
        lambda sent: None,
        Target(state),
        on_round=lambda: counted.append(time.monotonic()),
    )
    assert tenure.join()
    assert counted == []

    def rounds() -> int:
        tenure.maybe_round()
        return len(counted)

    wait_until(lambda: rounds() >= 2, 10, what="two rounds in session")
