"""A loopback stand-in for the Kubernetes API server, for the Kubernetes elasticity
provider's tests and the ``kubernetes-retire`` fault: Deployments' scale subresource, and
their pods, kept by a ReplicaSet controller of its own.

Only what the provider uses, with the API's semantics (``kubernetes.io`` docs):

- ``GET``/``PATCH .../deployments/{name}/scale`` (merge patch of ``spec.replicas``);
- ``GET``/``PATCH``/``DELETE /api/v1/namespaces/{ns}/pods/{name}``: 404 for a pod that is
  not there; a ``DELETE`` marks the pod terminating (``metadata.deletionTimestamp``)
  unless its ``gracePeriodSeconds`` is 0, which removes it at once.
- The ReplicaSet: after every change, pods that are neither terminating nor in a terminal
  phase are counted against the replicas; missing ones are created ``Pending``, extra
  ones deleted in the controller's order (``ActivePodsWithRanks``): unscheduled before
  scheduled, ``Pending`` before ``Unknown`` before ``Running``, not ready before ready, the
  lower ``controller.kubernetes.io/pod-deletion-cost`` first, then the newest first.

The kubelet is the caller's: :meth:`FakeKubernetes.start` runs a pending pod,
:meth:`~FakeKubernetes.finish` removes a terminating one, :meth:`~FakeKubernetes.fail`
gives one a terminal phase (an eviction).
"""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
TERMINAL = ("Succeeded", "Failed")
PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


@dataclass
class Pod:
    name: str
    deployment: str
    created: int  # creation order: larger is newer
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    phase: str = "Pending"
    ready: bool = False
    terminating: bool = False
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """Counted by the ReplicaSet against its replicas."""
        return not self.terminating and self.phase not in TERMINAL

    def rank(self) -> tuple[int, int, int, int]:
        """Sort key: the pods a scale-down deletes first come first."""
        cost = int(self.annotations.get(DELETION_COST, "0"))
        return (PHASE_RANK.get(self.phase, 2), int(self.ready), cost, -self.created)

    def body(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "uid": self.uid}
        if self.annotations:
            meta["annotations"] = dict(self.annotations)
        if self.terminating:
            meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        return {"metadata": meta, "status": {"phase": self.phase}}


class FakeKubernetes:
    """The API server on 127.0.0.1 (``url``); ``token`` is the bearer token it expects."""

    def __init__(self, replicas: dict[str, int] | None = None, token: str = "t0ken") -> None:
        self.token = token
        self.replicas: dict[str, int] = dict(replicas or {})
        self.pods: dict[str, Pod] = {}
        self.requests: list[tuple[str, str, Any]] = []
        #: every pod the ReplicaSet chose to delete on a scale-down, in order
        self.scaled_away: list[str] = []
        self.lock = threading.RLock()
        self._created = itertools.count()
        for name in self.replicas:
            self.reconcile(name)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- the ReplicaSet ----------------------------------------------------------------
    def reconcile(self, deployment: str) -> None:
        with self.lock:
            active = [p for p in self.pods.values() if p.deployment == deployment and p.active]
            want = self.replicas.get(deployment, 0)
            for _ in range(want - len(active)):
                n = next(self._created)
                name = f"{deployment}-{uuid.uuid4().hex[:5]}"
                self.pods[name] = Pod(name, deployment, n)
            for pod in sorted(active, key=Pod.rank)[: max(0, len(active) - want)]:
                pod.terminating = True
                self.scaled_away.append(pod.name)

    # -- the kubelet (the caller's) ------------------------------------------------------
    def start(self, name: str) -> None:
        with self.lock:
            pod = self.pods[name]
            if pod.phase == "Pending" and not pod.terminating:
                pod.phase, pod.ready = "Running", True

    def finish(self, name: str) -> None:
        """A terminating pod's containers have stopped: the pod is gone."""
        with self.lock:
            if self.pods[name].terminating:
                del self.pods[name]

    def fail(self, name: str) -> None:
        """The pod ends in a terminal phase and stays listed (as an evicted pod does)."""
        with self.lock:
            pod = self.pods[name]
            pod.phase, pod.ready = "Failed", False
            self.reconcile(pod.deployment)

    def names(self, deployment: str, phase: str | None = None) -> list[str]:
        with self.lock:
            return [
                p.name
                for p in self.pods.values()
                if p.deployment == deployment and phase in (None, p.phase)
            ]

    def terminating(self) -> list[str]:
        with self.lock:
            return [p.name for p in self.pods.values() if p.terminating]

    # -- requests ----------------------------------------------------------------------
    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((method, path, body))
            if "/deployments/" in path:
                name = path.split("/deployments/")[1].removesuffix("/scale")
                if name not in self.replicas:
                    return 404, {"kind": "Status", "code": 404}
                if method == "PATCH":
                    self.replicas[name] = int(body["spec"]["replicas"])
                    self.reconcile(name)
                return 200, {"spec": {"replicas": self.replicas[name]}}
            pod = self.pods.get(path.rsplit("/pods/", 1)[-1])
            if pod is None:
                return 404, {"kind": "Status", "code": 404}
            if method == "PATCH":
                annotations = body.get("metadata", {}).get("annotations", {})
                pod.annotations.update(annotations)
            elif method == "DELETE":
                if (body or {}).get("gracePeriodSeconds") == 0:
                    del self.pods[pod.name]
                else:
                    pod.terminating = True
                self.reconcile(pod.deployment)
            return 200, pod.body()


def _handler(api: FakeKubernetes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            if self.headers.get("authorization") != f"Bearer {api.token}":
                code, reply = 401, {"kind": "Status", "code": 401}
            elif method == "PATCH" and (
                self.headers.get("content-type") != "application/merge-patch+json"
            ):
                code, reply = 415, {"kind": "Status", "code": 415}
            else:
                code, reply = api.handle(method, self.path, body)
            data = json.dumps(reply).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def log_message(self, *args: Any) -> None:
            pass

    return Handler
