"""The fault suite's fast subset (:mod:`harness.faults`, ``FAST``), run once for the module.

Under a steady load, on a private RabbitMQ node: the dispatcher is killed -9 twice, pool
children are killed -9 mid-action, garbage goes onto every queue the system consumes,
and ids are posted and delivered twice; on a stack of its own (``FAST_SHARDS``: two
dispatcher shards), one shard is killed -9 under load, its partitions taken over by the
other, and started again. Each test checks what was charged to one fault
(see the accounting in :mod:`harness.faults`): nothing lost, nothing run twice to
completion, no limit exceeded, nothing stuck — and, at the end, every queue drained and
nothing ran that was never posted. ``make faults`` runs the whole suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import private_broker
from harness.faults.base import Fault
from harness.faults.suite import (
    FAST,
    FAST_FAULTS,
    FAST_SHARDS,
    FAST_SHARDS_FAULTS,
    Profile,
    SuiteResult,
    run,
)
from tests.conftest import IN_CI

pytestmark = pytest.mark.timeout(600)

ZERO = {"lost": 0, "duplicate": 0, "violation": 0, "stuck": 0}


def _run(
    tmp_path_factory: pytest.TempPathFactory, profile: Profile, faults: list[Fault]
) -> SuiteResult:
    if not private_broker.available():
        reason = "rabbitmq-server is not installed: no private node for the fault suite"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    base: Path = tmp_path_factory.mktemp(profile.name)
    return run(profile, faults, base)


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SuiteResult]:
    yield _run(tmp_path_factory, FAST, FAST_FAULTS)


@pytest.fixture(scope="module")
def shard_suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SuiteResult]:
    yield _run(tmp_path_factory, FAST_SHARDS, FAST_SHARDS_FAULTS)


def _check(suite: SuiteResult, fault: str) -> None:
    [result] = [r for r in suite.results if r.name == fault]
    assert result.injected > 0 and "error" not in result.note, (result, suite.text)
    assert None not in result.recoveries, f"no dispatch after {fault}\n{suite.text}"
    assert suite.phase(fault) == ZERO, suite.text


def test_dispatcher_kill_9(suite: SuiteResult) -> None:
    _check(suite, "dispatcher-kill")


def test_worker_pool_child_kill_9_mid_action(suite: SuiteResult) -> None:
    _check(suite, "worker-child-kill")


def test_garbage_on_every_queue(suite: SuiteResult) -> None:
    _check(suite, "garbage")


def test_duplicate_posts(suite: SuiteResult) -> None:
    _check(suite, "duplicate-posts")


def test_duplicate_deliveries(suite: SuiteResult) -> None:
    _check(suite, "duplicate-deliveries")


def test_shard_kill_9(shard_suite: SuiteResult) -> None:
    _check(shard_suite, "shard-kill")


@pytest.mark.parametrize(("which", "least"), [("suite", 100), ("shard_suite", 50)])
def test_queues_drain_and_nothing_else_went_wrong(
    which: str, least: int, request: pytest.FixtureRequest
) -> None:
    suite: SuiteResult = request.getfixturevalue(which)
    acc = suite.accounting
    assert acc.drained, suite.text
    assert acc.count("phantom") == 0, suite.text
    assert suite.phase("baseline") == ZERO, suite.text
    assert suite.phase("drain") == ZERO, suite.text
    assert acc.events > least, suite.text
