"""The producer when the ledger is in trouble: 503 with Retry-After, never a 500, and
nothing accepted (a real SQLite file, locked by another connection)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlalchemy as sa

from producer.api import create_app
from producer.publisher import Publisher
from producer.service import EventService
from producer.settings import ProducerSettings
from shared.store import Store
from tests.asgi import call

EVENT = {"host": "h", "vm": "v", "policy": "p", "action": "heal", "id": "e1"}


def test_a_locked_ledger_answers_503_with_retry_after_and_accepts_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    Store.connect(url).engine.dispose()  # the schema
    store = Store(sa.create_engine(url, connect_args={"timeout": 0.05}))  # short busy wait
    settings = ProducerSettings(carousel_db_url=url)
    app = create_app(settings)
    app.state.settings = settings  # what the lifespan sets; no broker is needed here
    app.state.service = EventService(
        store, Publisher("amqp://guest:guest@127.0.0.1:1//", settings.topology, 1.0)
    )
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        r = call(app, "POST", "/events", json=EVENT)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1"
        assert "ledger is unavailable" in r.json()["detail"]
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert store.get("e1") is None  # nothing stored
    assert (
        'carousel_events_rejected_total{reason="ledger"} 1.0' in call(app, "GET", "/metrics").text
    )
    store.engine.dispose()
