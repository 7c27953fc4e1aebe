"""The dispatcher's session outlives a ledger failure: the work that needs the ledger
waits with backoff, nothing is acked or lost meanwhile (a real SQLite ledger, locked by
another connection; fakes for the broker's side)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import sqlalchemy as sa

from scheduler.celery_app import create_celery
from scheduler.dispatcher.dispatcher import Dispatcher, Known, Limits
from scheduler.dispatcher.loop import DispatcherLoop
from scheduler.dispatcher.settings import DispatcherSettings
from scheduler.dispatcher.state import DispatcherState
from shared.models import Action, Status, VmEventMessage
from shared.store import Store
from tests.ledgers import accept


class FakeMessage:
    def __init__(self) -> None:
        self.acked = False
        self.delivery_info = {"redelivered": False}

    def ack(self) -> None:
        self.acked = True


class FakeCelery:
    """Builds the task messages as Celery does; publishing them records their ids."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.amqp = create_celery(DispatcherSettings()).amqp

    def publish(self, body: Any, headers: dict[str, Any], **kwargs: Any) -> None:
        self.sent.append(headers["id"])


class FakeProducer:
    def __init__(self, celery: FakeCelery) -> None:
        self.celery = celery

    def publish_all(self, sends: list[Any]) -> None:
        for send in sends:
            send(self.celery)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[tuple[Store, sqlite3.Connection]]:
    path = tmp_path / "l.db"
    Store.connect(f"sqlite:///{path}").engine.dispose()  # the schema
    store = Store(sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05}))
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    yield store, locker
    locker.close()
    store.engine.dispose()


def test_a_locked_ledger_pauses_dispatching_without_ending_the_session(
    ledger: tuple[Store, sqlite3.Connection],
) -> None:
    store, locker = ledger
    event = VmEventMessage(id="a", host="h", vm="v", policy="p", action=Action.HEAL, accepted_at=0)
    accept(store, [event])
    store.confirm([event])
    state: DispatcherState[Any] = DispatcherState(Dispatcher(Limits(10, 1, 0)))
    celery = FakeCelery()
    loop = DispatcherLoop(DispatcherSettings(), store, state, cast(Any, celery))
    assert store.take_lease(loop.lease)
    loop._next_renewal = float("inf")  # renewing it is not what this is about
    message = FakeMessage()
    loop._inbox.append(("event", event.model_dump(mode="json"), cast(Any, message)))
    producer = cast(Any, FakeProducer(celery))

    locker.execute("BEGIN EXCLUSIVE")  # nobody else may write now
    loop._ledger_work(producer)  # does not raise: the session goes on
    assert not loop.ledger_ok
    assert state.knows("a") is Known.HELD  # held again, first in line
    assert not message.acked and celery.sent == []
    assert store.status_of("a") is Status.QUEUED

    locker.execute("ROLLBACK")  # the ledger is back
    loop._ledger_retry_at = 0.0  # skip the backoff's wait
    loop._ledger_work(producer)
    assert loop.ledger_ok
    assert celery.sent == ["a"] and message.acked
    assert store.status_of("a") is Status.DISPATCHED


def test_an_inbox_item_whose_lookup_failed_is_handled_again(
    ledger: tuple[Store, sqlite3.Connection],
) -> None:
    """A redelivered event needs the ledger's status: if that fails, the delivery goes
    back to the front of the inbox instead of being dropped."""
    store, _ = ledger
    state: DispatcherState[Any] = DispatcherState(Dispatcher(Limits(10, 1, 0)))
    loop = DispatcherLoop(DispatcherSettings(), store, state, cast(Any, FakeCelery()))
    loop._next_renewal = float("inf")
    event = VmEventMessage(id="a", host="h", vm="v", policy="p", action=Action.HEAL, accepted_at=0)
    message = FakeMessage()
    message.delivery_info["redelivered"] = True
    loop._inbox.append(("event", event.model_dump(mode="json"), cast(Any, message)))
    store.engine.dispose()
    Path(str(store.engine.url.database)).unlink()  # the ledger is gone
    Path(str(store.engine.url.database)).mkdir()  # and cannot come back as a file
    loop._ledger_work(cast(Any, FakeProducer(FakeCelery())))
    assert not loop.ledger_ok
    assert [kind for kind, _, _ in loop._inbox] == ["event"]
    assert not message.acked


def test_a_pause_is_written_to_the_lease_at_once(
    ledger: tuple[Store, sqlite3.Connection],
) -> None:
    """The elasticity worker learns of a pause from the dispatcher lease: the loop's next
    round writes it, not the next renewal (a third of a lease later)."""
    store, _ = ledger
    state: DispatcherState[Any] = DispatcherState(Dispatcher(Limits(10, 1, 0)))
    loop = DispatcherLoop(DispatcherSettings(), store, state, cast(Any, FakeCelery()))
    producer = cast(Any, FakeProducer(FakeCelery()))
    assert loop._take_lease()
    assert store.lease_paused("dispatcher") is False
    loop._next_renewal = float("inf")  # no renewal is due
    state.pause()
    loop._ledger_work(producer)
    assert store.lease_paused("dispatcher") is True
    state.resume()
    loop._ledger_work(producer)
    assert store.lease_paused("dispatcher") is False
