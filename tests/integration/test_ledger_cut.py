"""A dispatcher cut off from the ledger gives its heads back before a standby takes the
dispatcher lease: each key's events still run in order (the ledger on PostgreSQL, the
active dispatcher reaching it through a proxy the test cuts)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.faults.proxy import CuttableProxy
from harness.processes import Stack, wait_until
from tests.effects import EffectRecorder
from tests.integration.test_e2e import all_finished, post
from tests.ledgers import fresh_ledger_url

PG_ADDRESS = "127.0.0.1:5432"


@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[str]:
    """This module's ledger: PostgreSQL, which processes reach over the network."""
    with fresh_ledger_url("postgresql", tmp_path) as url:
        if PG_ADDRESS not in url:
            pytest.skip(f"the test proxies the ledger at {PG_ADDRESS}")
        yield url


def _stats(url: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{url}/stats", timeout=5).json()
    return body


def test_a_dispatcher_cut_off_from_the_ledger_gives_its_heads_back_before_a_standby_takes_over(
    stack_factory: Callable[..., Stack], recorder: EffectRecorder, db_url: str, tmp_path: Path
) -> None:
    """The active dispatcher holds a key's first event (paused) when it loses the ledger.
    Its lease runs out and a standby takes it; had the first kept its session, the
    standby would get the key's second event first and the first event never."""
    host, port = PG_ADDRESS.split(":")
    proxy = CuttableProxy((host, int(port)))
    stack = stack_factory(
        DRIVER="webhook", WEBHOOK_URL=recorder.url, MAX_PARALLEL=4, DISPATCHER_LEASE_SECONDS=3
    )
    stack.producer()
    stack.dispatcher(CAROUSEL_DB_URL=db_url.replace(PG_ADDRESS, proxy.address))
    stack.worker()
    assert httpx.post(f"{stack.dispatcher_url}/pause").status_code == 200
    ids = post(
        stack,
        [
            {"id": f"e{i}", "host": "h1", "vm": "vm1", "policy": "p", "action": "heal"}
            for i in range(3)
        ],
    )
    wait_until(lambda: _stats(stack.dispatcher_url)["held"] == 1, 30, what="e0 held")

    proxy.cut()  # the active dispatcher loses the ledger, and a standby comes
    _, second_url = stack.another_dispatcher()
    wait_until(lambda: _stats(second_url)["active"] is True, 60, what="the standby took over")
    wait_until(lambda: all_finished(stack, ids), 60, what="every event finished")
    assert recorder.order == ["e0", "e1", "e2"]  # the key's order, each once
    proxy.close()
