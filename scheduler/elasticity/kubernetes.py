"""A provider that scales one Kubernetes Deployment per profile.

Pods of a Deployment get their names from Kubernetes, so :meth:`spawn` returns a
*placeholder* (``placeholder.<profile>.<id>``); the engine swaps it for the first unknown
worker of that profile that registers. Worker pods run ``carousel-worker`` with
``WORKER_NAME=elastic.<profile>.$(POD_NAME)@$(POD_NAME)`` (see deploy/kubernetes/), which is
how a node name leads back to its pod. To retire a chosen idle worker, its pod gets the
lowest ``controller.kubernetes.io/pod-deletion-cost`` and the replicas go down by one:
the ReplicaSet then removes that pod, and its SIGTERM is Celery's warm shutdown.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import httpx

from scheduler.elasticity.model import ProfileConfig
from scheduler.elasticity.providers import WorkerHandle

log = logging.getLogger(__name__)

SA = Path("/var/run/secrets/kubernetes.io/serviceaccount")
PLACEHOLDER = "placeholder."
MERGE_PATCH = {"content-type": "application/merge-patch+json"}


def is_placeholder(name: str) -> bool:
    return name.startswith(PLACEHOLDER)


class KubernetesProvider:
    def __init__(
        self,
        api_url: str,
        namespace: str,
        deployment_prefix: str,
        token: str | None = None,
        verify: bool | str = True,
        timeout: float = 10.0,
    ) -> None:
        self.namespace = namespace
        self.deployment_prefix = deployment_prefix
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=api_url, headers=headers, verify=verify, timeout=timeout)

    @classmethod
    def in_cluster(
        cls, deployment_prefix: str, api_url: str = "", namespace: str = ""
    ) -> KubernetesProvider:
        """Credentials of the pod's service account."""
        token = (SA / "token").read_text().strip() if (SA / "token").exists() else None
        ns = namespace or (
            (SA / "namespace").read_text().strip() if (SA / "namespace").exists() else "default"
        )
        ca: bool | str = str(SA / "ca.crt") if (SA / "ca.crt").exists() else True
        return cls(api_url or "https://kubernetes.default.svc", ns, deployment_prefix, token, ca)

    def deployment(self, profile: str) -> str:
        return f"{self.deployment_prefix}{profile}"

    def _scale_path(self, profile: str) -> str:
        return (
            f"/apis/apps/v1/namespaces/{self.namespace}/deployments/"
            f"{self.deployment(profile)}/scale"
        )

    def replicas(self, profile: str) -> int:
        r = self.http.get(self._scale_path(profile))
        r.raise_for_status()
        return int(r.json().get("spec", {}).get("replicas", 0))

    def _set_replicas(self, profile: str, replicas: int) -> None:
        r = self.http.patch(
            self._scale_path(profile),
            headers=MERGE_PATCH,
            json={"spec": {"replicas": max(0, replicas)}},
        )
        r.raise_for_status()

    def spawn(self, profile: ProfileConfig, now: float) -> WorkerHandle:
        self._set_replicas(profile.name, self.replicas(profile.name) + 1)
        name = f"{PLACEHOLDER}{profile.name}.{uuid.uuid4().hex[:8]}"
        log.info(
            "deployment %s scaled up for profile %s", self.deployment(profile.name), profile.name
        )
        return WorkerHandle(name, profile.name, now)

    def stop(self, handle: WorkerHandle, graceful: bool = True) -> None:
        """Take this worker's pod out (a placeholder: let Kubernetes pick the pod, and it
        picks a not-ready one first). ``graceful`` is the pod's own SIGTERM grace."""
        if not is_placeholder(handle.name):
            pod = handle.name.split("@", 1)[-1]
            r = self.http.patch(
                f"/api/v1/namespaces/{self.namespace}/pods/{pod}",
                headers=MERGE_PATCH,
                json={
                    "metadata": {
                        "annotations": {"controller.kubernetes.io/pod-deletion-cost": "-1000"}
                    }
                },
            )
            if r.status_code == 404:
                return  # already gone
            r.raise_for_status()
        self._set_replicas(handle.profile, self.replicas(handle.profile) - 1)

    def exited(self, handle: WorkerHandle) -> bool:
        return False  # a pod that died stops heartbeating: the engine sees it as lost
