"""The worker's task as Celery runs it (``Task.apply``: in this process, through Celery's
tracer and its autoretry, with a real ledger): an event that ends ``failed`` ends the
task in the FAILURE state, with the reason, once and not retried; a succeeded one is a
SUCCESS whose result says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from scheduler.celery_app import TASK_NAME, create_celery
from scheduler.worker.errors import EventFailed
from scheduler.worker.settings import WorkerSettings
from scheduler.worker.task import register_tasks
from shared.models import Action, Status, VmEventMessage
from shared.store import Store
from tests.ledgers import accept


@pytest.fixture
def app_and_store(tmp_path: Path) -> tuple[Celery, Store]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    settings = WorkerSettings(
        AMQP_URL="amqp://guest:guest@127.0.0.1:1//", CAROUSEL_DB_URL=url, DRIVER="simulated"
    )
    app = create_celery(settings)
    register_tasks(app, settings)
    return app, Store.connect(url)


def dispatched(store: Store, event_id: str, payload: dict[str, Any]) -> list[Any]:
    event = VmEventMessage(
        id=event_id,
        host="h1",
        vm=f"vm-{event_id}",
        policy="ops",
        action=Action.HEAL,
        payload=payload,
        accepted_at=1.0,
    )
    accept(store, [event])
    store.confirm([event])
    store.mark_dispatched_many([event.id], "d1")
    return [event.model_dump(mode="json"), "d1"]


def test_a_failed_event_fails_the_task_once_with_its_reason(
    app_and_store: tuple[Celery, Store],
) -> None:
    app, store = app_and_store
    task = app.tasks[TASK_NAME]
    assert task.acks_late and task.acks_on_failure, "a failed task's message is acked"

    args = dispatched(store, "bad", {"simulate": {"fail": "disk full"}})
    result = task.apply(args=args, task_id="bad")
    assert result.state == "FAILURE"
    assert isinstance(result.result, EventFailed) and str(result.result) == "disk full"
    row = store.get("bad")
    assert row is not None
    assert (row["status"], row["error"], row["attempts"]) == (Status.FAILED, "disk full", 1)

    args = dispatched(store, "good", {})
    result = task.apply(args=args, task_id="good")
    assert result.state == "SUCCESS"
    assert result.result["status"] == "succeeded"
    store.engine.dispose()
