"""The Kubernetes provider against a loopback stand-in for the API server
(:mod:`harness.fake_kubernetes`: the scale subresource, pods, and a ReplicaSet that
deletes pods in the controller's order), not a real cluster."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harness.fake_kubernetes import DELETION_COST, FakeKubernetes, Pod
from harness.faults.base import Ctx
from harness.faults.kubernetes import FAILED, PROMPT, SLOW, RetireDrill
from harness.faults.suite import FAULTS
from scheduler.elasticity.engine import Engine
from scheduler.elasticity.kubernetes import KubernetesProvider, is_placeholder
from scheduler.elasticity.model import Backlog, ProfileConfig
from scheduler.elasticity.providers import WorkerHandle
from scheduler.elasticity.tracker import WorkerTracker
from tests.unit.elasticity_doubles import Clock, FakeControl

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def api() -> Iterator[FakeKubernetes]:
    fake = FakeKubernetes({"carousel-worker-default": 1})
    yield fake
    fake.close()


@pytest.fixture
def provider(api: FakeKubernetes) -> Iterator[KubernetesProvider]:
    p = KubernetesProvider(api.url, "ns1", "carousel-worker-", token="t0ken")
    yield p
    p.http.close()


def handle_of(pod: str) -> WorkerHandle:
    return WorkerHandle(f"elastic.default.{pod}@{pod}", "default", 0.0)


def test_spawn_scales_the_profiles_deployment_up(
    api: FakeKubernetes, provider: KubernetesProvider
) -> None:
    handle = provider.spawn(ProfileConfig(name="default"), 5.0)
    assert is_placeholder(handle.name) and handle.profile == "default"
    assert handle.name.startswith("placeholder.default.")
    assert api.replicas["carousel-worker-default"] == 2
    assert (
        api.requests[-1][1] == "/apis/apps/v1/namespaces/ns1/deployments/"
        "carousel-worker-default/scale"
    )


def test_stop_marks_the_chosen_pod_then_scales_down(
    api: FakeKubernetes, provider: KubernetesProvider
) -> None:
    [pod] = api.names("carousel-worker-default")
    provider.stop(handle_of(pod))
    patch_pod, _, patch_scale = api.requests[-3:]
    assert patch_pod[1] == f"/api/v1/namespaces/ns1/pods/{pod}"
    assert patch_pod[2] == {"metadata": {"annotations": {DELETION_COST: "-1000"}}}
    assert patch_scale[2] == {"spec": {"replicas": 0}}
    assert api.scaled_away == [pod]


def test_a_placeholder_stop_lets_kubernetes_pick(
    api: FakeKubernetes, provider: KubernetesProvider
) -> None:
    handle = provider.spawn(ProfileConfig(name="default"), 5.0)
    provider.stop(handle, graceful=False)
    assert not any("/pods/" in path for _, path, _ in api.requests)
    assert api.replicas["carousel-worker-default"] == 1


def test_a_retired_worker_exits_once_its_pod_is_gone_and_lowers_the_replicas_once(
    api: FakeKubernetes, provider: KubernetesProvider
) -> None:
    api.replicas["carousel-worker-default"] = 3
    api.reconcile("carousel-worker-default")
    first, second, third = (handle_of(p) for p in api.names("carousel-worker-default"))
    assert not provider.exited(first)  # not retired: heartbeats tell
    provider.stop(first)
    provider.stop(first)  # again: the replicas went down for it already
    assert api.replicas["carousel-worker-default"] == 2
    assert not provider.exited(first)  # terminating, still there
    api.finish(first.name.split("@")[1])
    assert provider.exited(first) and provider.exited(first)  # gone, and stays so
    provider.stop(second)
    api.fail(second.name.split("@")[1])  # evicted: a terminal phase, still listed
    assert provider.exited(second)
    assert api.replicas["carousel-worker-default"] == 1
    provider.stop(third)
    pod = third.name.split("@")[1]
    # gone, and a new pod by the same name (another uid) runs
    api.pods[pod] = Pod(pod, "carousel-worker-default", 99, phase="Running", ready=True)
    assert provider.exited(third)
    assert api.replicas["carousel-worker-default"] == 0  # three retirements, one each


def test_past_the_drain_timeout_the_pod_is_deleted_at_once_not_scaled_away_again(
    api: FakeKubernetes, provider: KubernetesProvider
) -> None:
    api.replicas["carousel-worker-default"] = 2
    api.reconcile("carousel-worker-default")
    handle = handle_of(api.names("carousel-worker-default")[0])
    pod = handle.name.split("@")[1]
    provider.stop(handle)
    uid = api.pods[pod].uid
    provider.stop(handle, graceful=False)  # what the engine does past DRAIN_TIMEOUT
    provider.stop(handle, graceful=False)  # and on every evaluation after it
    deletes = [(path, body) for method, path, body in api.requests if method == "DELETE"]
    assert deletes == [
        (
            f"/api/v1/namespaces/ns1/pods/{pod}",
            {
                "kind": "DeleteOptions",
                "apiVersion": "v1",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": uid},
            },
        )
    ]
    assert api.replicas["carousel-worker-default"] == 1 and len(api.pods) == 1
    assert provider.exited(handle)


def test_an_api_that_does_not_answer_is_no_exit(
    api: FakeKubernetes, provider: KubernetesProvider
) -> None:
    handle = handle_of(api.names("carousel-worker-default")[0])
    provider.stop(handle)
    api.token = "another"  # every request now 401
    assert not provider.exited(handle)


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param([[SLOW, SLOW, SLOW]], id="three-at-once-slower-than-the-drain-timeout"),
        pytest.param([[PROMPT], [SLOW], [FAILED]], id="one-at-a-time"),
        pytest.param([[FAILED], [PROMPT], [SLOW]], id="one-at-a-time-failed-first"),
    ],
)
def test_retirements_in_a_row_lower_the_replicas_once_each_and_free_their_slots(
    steps: list[list[str]],
) -> None:
    """The engine and the provider against the fake API, 4 workers (the newest busy)
    down to the minimum of 1. Before the fix a retired worker never exited: it held its
    slot for ever, and past the drain timeout every evaluation lowered the replicas
    again (4 -> 1 -> 0), the ReplicaSet deleting the busy pod."""
    drill = RetireDrill(workers=4, min_workers=1)
    try:
        drill.grow()
        assert (drill.replicas, drill.slots()) == (4, 4)
        left = 4
        for kinds in steps:
            drill.retire(*kinds)
            left -= len(kinds)
            assert (drill.replicas, drill.slots()) == (left, left), drill.history
            assert not drill.problems, drill.problems
        drill.demand = 0  # nothing asked for: the minimum holds
        for _ in range(8):
            drill.tick()
        assert (drill.replicas, drill.slots()) == (1, 1), drill.history
        assert min(r for r, _ in drill.history) == 1, drill.history
        assert not drill.busy & set(drill.api.scaled_away)
        assert not drill.problems, drill.problems
    finally:
        drill.close()


def test_the_kubernetes_retire_fault_counts_what_went_wrong(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fault = FAULTS["kubernetes-retire"]
    ctx = Ctx(stack=None, load=None, rng=random.Random(7), log=lambda s: None)  # type: ignore[arg-type]
    sound = fault.run(ctx)
    assert sound.injected == 12 and sound.anomalies == [], sound.anomalies
    monkeypatch.setattr(KubernetesProvider, "exited", lambda self, handle: False)
    broken = fault.run(ctx)
    assert broken.anomalies and {a.kind for a in broken.anomalies} == {"violation"}


def test_engine_adopts_the_pod_that_registers(
    api: FakeKubernetes, provider: KubernetesProvider
) -> None:
    clock = Clock()
    tracker = WorkerTracker(app=None)
    engine = Engine(
        configs={"default": ProfileConfig(name="default", min_workers=1)},
        budget=4,
        provider=provider,
        tracker=tracker,
        control=FakeControl(),  # type: ignore[arg-type]
        queue_of=lambda p: "q",
        backlog_of=lambda p, r: Backlog(0),
        clock=clock,
    )
    engine.tick()
    [placeholder] = engine.handles
    assert is_placeholder(placeholder)
    node = "elastic.default.carousel-worker-default-7d9f-x2@carousel-worker-default-7d9f-x2"
    tracker.on_event({"type": "worker-online", "hostname": node}, clock.now)
    engine.tick()
    assert list(engine.handles) == [node] and engine.ready()
    assert api.replicas["carousel-worker-default"] == 2  # no second spawn


@pytest.mark.parametrize(
    "name", ["worker-deployment.yaml", "elasticity-rbac.yaml", "keda-scaledobject.yaml", "hpa.yaml"]
)
def test_manifests_parse(name: str) -> None:
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / name).read_text()))
    assert docs and all(d["apiVersion"] and d["kind"] for d in docs)
    text = (ROOT / "deploy" / "kubernetes" / name).read_text()
    if name in ("keda-scaledobject.yaml", "hpa.yaml"):
        assert "carousel_desired_workers" in text
