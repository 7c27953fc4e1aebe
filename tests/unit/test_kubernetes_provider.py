"""The Kubernetes provider against a loopback stand-in for the API server: it checks
the requests Carousel sends (scale subresource, pod-deletion-cost), not a real cluster."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler.elasticity.engine import Engine
from scheduler.elasticity.kubernetes import KubernetesProvider, is_placeholder
from scheduler.elasticity.model import ProfileConfig
from scheduler.elasticity.tracker import WorkerTracker
from tests.unit.elasticity_doubles import Clock, FakeControl

ROOT = Path(__file__).resolve().parents[2]


class FakeApi:
    def __init__(self) -> None:
        self.replicas: dict[str, int] = {"carousel-worker-default": 1}
        self.requests: list[tuple[str, str, Any]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                api.requests.append(("GET", self.path, None))
                name = self.path.split("/deployments/")[1].removesuffix("/scale")
                if name not in api.replicas:
                    return self._reply(404, {})
                self._reply(200, {"spec": {"replicas": api.replicas[name]}})

            def do_PATCH(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                api.requests.append(("PATCH", self.path, body))
                assert self.headers["content-type"] == "application/merge-patch+json"
                assert self.headers["authorization"] == "Bearer t0ken"
                if "/deployments/" in self.path:
                    name = self.path.split("/deployments/")[1].removesuffix("/scale")
                    api.replicas[name] = body["spec"]["replicas"]
                self._reply(200, body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


@pytest.fixture
def provider(api: FakeApi) -> Iterator[KubernetesProvider]:
    p = KubernetesProvider(api.url, "ns1", "carousel-worker-", token="t0ken")
    yield p
    p.http.close()


def test_spawn_scales_the_profiles_deployment_up(
    api: FakeApi, provider: KubernetesProvider
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
    api: FakeApi, provider: KubernetesProvider
) -> None:
    from scheduler.elasticity.providers import WorkerHandle

    provider.stop(WorkerHandle("elastic.default.pod-abc@pod-abc", "default", 0.0))
    patch_pod, _, patch_scale = api.requests[-3:]
    assert patch_pod[1] == "/api/v1/namespaces/ns1/pods/pod-abc"
    assert patch_pod[2] == {
        "metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": "-1000"}}
    }
    assert patch_scale[2] == {"spec": {"replicas": 0}}


def test_a_placeholder_stop_lets_kubernetes_pick(
    api: FakeApi, provider: KubernetesProvider
) -> None:
    handle = provider.spawn(ProfileConfig(name="default"), 5.0)
    provider.stop(handle, graceful=False)
    assert not any("/pods/" in path for _, path, _ in api.requests)
    assert api.replicas["carousel-worker-default"] == 1


def test_engine_adopts_the_pod_that_registers(api: FakeApi, provider: KubernetesProvider) -> None:
    clock = Clock()
    tracker = WorkerTracker(app=None)
    engine = Engine(
        configs={"default": ProfileConfig(name="default", min_workers=1)},
        budget=4,
        provider=provider,
        tracker=tracker,
        control=FakeControl(),  # type: ignore[arg-type]
        queue_of=lambda p: "q",
        backlog_of=lambda p, r: 0,
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
