"""The recent changes of a source (``recent_changes`` in ``GET /monitor/status``): each
change that asked for events, with each event's outcome; bounded however long the batch;
and, through the runner and a real ledger, the outcomes the raiser reports."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from producer.monitoring.metrics import MonitorMetrics
from producer.monitoring.model import (
    Change,
    HostState,
    HostStateChanged,
    Intent,
    UtilisationChanged,
    VmState,
    VmStateChanged,
)
from producer.monitoring.policies import parse_rules
from producer.monitoring.raiser import Raiser, as_event
from producer.monitoring.recent import RecentChanges, summary
from producer.monitoring.runner import SourceMonitor
from producer.publisher import Publisher
from producer.service import EventService
from producer.settings import ProducerSettings
from shared.models import Action, VmEventMessage
from shared.store import Store
from tests.ledgers import accept, ensure_keys

DOWN = VmStateChanged("h1-vm3", "h1", VmState.ACTIVE, VmState.DOWN, "h1", 7, 1.0)
MAINTENANCE = HostStateChanged("h1", HostState.UP, HostState.MAINTENANCE, 8, 2.0)


def intent(cause: Change, vm: str, action: Action = Action.HEAL, policy: str = "p") -> Intent:
    return Intent(f"mon-{vm}-{action.value}", cause.host, vm, policy, action, cause)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (DOWN, "vm h1-vm3 on h1 state ACTIVE -> DOWN"),
        (
            VmStateChanged("v", "h2", VmState.DOWN, VmState.DOWN, "h1", 2, 0.0),
            "vm v on h1 -> h2 state DOWN -> DOWN",
        ),
        (
            VmStateChanged("v", "h1", None, VmState.DOWN, None, 1, 0.0),
            "vm v on h1 state none -> DOWN",
        ),
        (
            VmStateChanged("v", "h1", VmState.ACTIVE, None, None, 1, 0.0),
            "vm v on h1 state ACTIVE -> gone",
        ),
        (MAINTENANCE, "host h1 state UP -> MAINTENANCE"),
        (
            HostStateChanged("h1", None, HostState.MAINTENANCE, 1, 0.0),
            "host h1 state none -> MAINTENANCE",
        ),
        (
            UtilisationChanged("web-1", "h1", "web", 0.912, 0.4, 3, 0.0),
            "vm web-1 on h1 (group web) cpu 91% ram 40%",
        ),
        (UtilisationChanged("v", "h1", None, 0.1, 0.2, 3, 0.0), "vm v on h1 cpu 10% ram 20%"),
    ],
)
def test_a_change_reads_in_a_few_words(change: Change, words: str) -> None:
    assert summary(change) == words


def test_each_change_is_listed_newest_first_with_its_events_and_their_outcomes() -> None:
    recent = RecentChanges()
    recent.record(10.0, [intent(DOWN, "h1-vm3")])
    migrations = [intent(MAINTENANCE, vm, Action.LIVE_MIGRATE) for vm in ("a", "b", "c")]
    recent.record(
        20.0, migrations, suppressed={"mon-b-live_migrate"}, conflicts={"mon-c-live_migrate"}
    )
    newest, oldest = recent.to_json()
    assert oldest == {
        "at": 10.0,
        "changed_at": 1.0,
        "change": "VmStateChanged",
        "host": "h1",
        "vm": "h1-vm3",
        "what": "vm h1-vm3 on h1 state ACTIVE -> DOWN",
        "events": [
            {
                "id": "mon-h1-vm3-heal",
                "policy": "p",
                "action": "heal",
                "host": "h1",
                "vm": "h1-vm3",
                "outcome": "raised",
            }
        ],
        "more_events": 0,
    }
    assert (newest["at"], newest["change"], newest["vm"]) == (20.0, "HostStateChanged", None)
    assert [(e["vm"], e["outcome"]) for e in newest["events"]] == [
        ("a", "raised"),
        ("b", "suppressed"),
        ("c", "conflict"),
    ]
    assert recent.seen == 2


def test_the_events_of_one_batch_are_grouped_by_their_change_placed_by_its_last() -> None:
    recent = RecentChanges()
    recent.record(5.0, [intent(DOWN, "h1-vm3"), intent(MAINTENANCE, "a"), intent(DOWN, "x")])
    listed = recent.to_json()
    assert [(c["change"], [e["vm"] for e in c["events"]]) for c in listed] == [
        ("VmStateChanged", ["h1-vm3", "x"]),
        ("HostStateChanged", ["a"]),
    ]


def test_a_long_batch_keeps_the_last_changes_and_counts_the_others() -> None:
    recent = RecentChanges(size=50, events=20)
    downs = [
        VmStateChanged(f"vm{i}", "h1", VmState.ACTIVE, VmState.DOWN, "h1", i, 1.0)
        for i in range(100_000)
    ]
    recent.record(1.0, [intent(c, c.vm) for c in downs])
    listed = recent.to_json()
    assert len(listed) == 50
    assert [c["vm"] for c in listed[:2]] == ["vm99999", "vm99998"]
    assert listed[-1]["vm"] == "vm99950"
    assert recent.seen == 100_000


def test_a_change_with_many_events_keeps_its_first_and_counts_the_rest() -> None:
    recent = RecentChanges(size=50, events=20)
    recent.record(1.0, [intent(MAINTENANCE, f"vm{i}", Action.LIVE_MIGRATE) for i in range(1_000)])
    [listed] = recent.to_json()
    assert [e["vm"] for e in listed["events"]] == [f"vm{i}" for i in range(20)]
    assert listed["more_events"] == 980
    assert recent.seen == 1


def test_older_changes_leave_the_record_as_new_ones_come() -> None:
    recent = RecentChanges(size=3)
    for n in range(5):
        change = VmStateChanged(f"vm{n}", "h1", VmState.ACTIVE, VmState.DOWN, "h1", n, float(n))
        recent.record(float(n), [intent(change, change.vm)])
    assert [c["vm"] for c in recent.to_json()] == ["vm4", "vm3", "vm2"]
    assert recent.seen == 5


def test_nothing_raised_records_nothing() -> None:
    recent = RecentChanges()
    recent.record(1.0, [])
    assert recent.to_json() == []
    assert recent.seen == 0


# -- through the runner: the raiser's outcomes, on a real ledger ----------------------------
@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.connect(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield s
    s.engine.dispose()


class _NoFetcher:
    streams = False


def queued(store: Store, message: VmEventMessage) -> None:
    ensure_keys(store, [message.key])
    accept(store, [message])
    store.confirm([message])


def message(i: Intent, **changed: Any) -> VmEventMessage:
    e = as_event(i)
    fields = {"host": e.host, "vm": e.vm, "policy": e.policy, "action": e.action}
    fields.update(changed)
    return VmEventMessage(id=e.id, payload=e.payload, accepted_at=0.5, **fields)


def test_the_runner_records_what_became_of_each_event_it_raised(store: Store) -> None:
    """Raised (already accepted under its id: nothing to publish), suppressed (another
    event of the VM and policy unfinished) and conflict (the id taken with other
    content): all three known without a broker, so none is reached."""
    settings = ProducerSettings(carousel_db_url=str(store.engine.url))
    unreachable = Publisher("amqp://guest:guest@127.0.0.1:1//", settings.topology, 1.0)
    rules = parse_rules({"policies": [{"name": "move", "kind": "host_maintenance"}]}, "test")
    nothing: Any = None  # the repository is not reached
    monitor = SourceMonitor(
        "cloud",
        _NoFetcher(),  # type: ignore[arg-type]
        nothing,
        rules,
        Raiser(EventService(store, unreachable)),
        MonitorMetrics(CollectorRegistry()),
        stream=False,
        resync_interval=60,
        poll_interval=10,
        utilisation_step=0.05,
        clock=lambda: 42.0,
    )
    a, b, c = (intent(MAINTENANCE, vm, Action.LIVE_MIGRATE, "move") for vm in "abc")
    queued(store, message(a))
    queued(store, message(b, vm="b").model_copy(update={"id": "someone-else"}))
    queued(store, message(c, action=Action.MIGRATE))
    asyncio.run(monitor._raise([a, b, c]))
    shown = monitor.status.to_json(42.0)
    assert shown["changes_with_events"] == 1
    [change] = shown["recent_changes"]
    assert (change["at"], change["what"]) == (42.0, "host h1 state UP -> MAINTENANCE")
    assert [(e["id"], e["policy"], e["action"], e["outcome"]) for e in change["events"]] == [
        (a.id, "move", "live_migrate", "raised"),
        (b.id, "move", "live_migrate", "suppressed"),
        (c.id, "move", "live_migrate", "conflict"),
    ]
