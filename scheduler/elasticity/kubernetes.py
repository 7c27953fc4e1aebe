"""A provider that scales one Kubernetes Deployment per profile.

Pods of a Deployment get their names from Kubernetes, so :meth:`spawn` returns a
*placeholder* (``placeholder.<profile>.<id>``); the engine swaps it for the first unknown
worker of that profile that registers. Worker pods run ``carousel-worker`` with
``WORKER_NAME=elastic.<profile>.$(POD_NAME)@$(POD_NAME)`` (see deploy/kubernetes/), which is
how a node name leads back to its pod. To retire a chosen idle worker, its pod gets the
lowest ``controller.kubernetes.io/pod-deletion-cost`` and the replicas go down by one:
the ReplicaSet then removes that pod, and its SIGTERM is Celery's warm shutdown.

A retirement lowers the replicas once, however often the engine calls :meth:`stop` for
that worker (it calls it again, not gracefully, once ``DRAIN_TIMEOUT`` has passed: then
the pod is deleted at once, the replicas untouched). Its worker has *exited* once its
pod — the one with the uid the annotation was given to — is gone from the API or in a
terminal phase (``Succeeded``, ``Failed``: its containers will not run again). Until then
it keeps its slot of the budget.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from scheduler.elasticity.model import ProfileConfig
from scheduler.elasticity.providers import WorkerHandle

log = logging.getLogger(__name__)

SA = Path("/var/run/secrets/kubernetes.io/serviceaccount")
PLACEHOLDER = "placeholder."
MERGE_PATCH = {"content-type": "application/merge-patch+json"}
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
TERMINAL = ("Succeeded", "Failed")


@dataclass
class Retiring:
    """A worker :meth:`KubernetesProvider.stop` took out, followed until its pod is gone."""

    pod: str
    uid: str | None  # None: the pod was already gone when it was retired
    lowered: bool = False  # the replicas went down for it (once)
    deleted: bool = False  # its pod was deleted at once (the drain timeout passed)
    gone: bool = False  # the pod is gone or ended: exited() says so from now on


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
        self._retiring: dict[str, Retiring] = {}  # node name -> its retirement

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

    def _pod_path(self, pod: str) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{pod}"

    def stop(self, handle: WorkerHandle, graceful: bool = True) -> None:
        """Take this worker's pod out (a placeholder: let Kubernetes pick the pod, and it
        picks a not-ready one first). ``graceful`` is the pod's own SIGTERM grace; a
        worker stopped gracefully is followed until :meth:`exited`, and stopping it again
        never lowers the replicas twice: not gracefully, its pod is deleted at once."""
        if is_placeholder(handle.name):
            self._set_replicas(handle.profile, self.replicas(handle.profile) - 1)
            return
        self._retiring = {n: r for n, r in self._retiring.items() if not r.gone}
        retiring = self._retiring.get(handle.name)
        if retiring is None:
            retiring = self._mark(handle.name.split("@", 1)[-1])
            if graceful:
                self._retiring[handle.name] = retiring
        elif not graceful and retiring.uid is not None and not retiring.deleted:
            self._delete_now(retiring)
        if retiring.uid is not None and not retiring.lowered:
            self._set_replicas(handle.profile, self.replicas(handle.profile) - 1)
            retiring.lowered = True

    def _mark(self, pod: str) -> Retiring:
        """Give ``pod`` the lowest deletion cost, so the ReplicaSet removes it first."""
        r = self.http.patch(
            self._pod_path(pod),
            headers=MERGE_PATCH,
            json={"metadata": {"annotations": {DELETION_COST: "-1000"}}},
        )
        if r.status_code == 404:
            return Retiring(pod, None)  # already gone: no replica to take away
        r.raise_for_status()
        return Retiring(pod, r.json().get("metadata", {}).get("uid"))

    def _delete_now(self, retiring: Retiring) -> None:
        """Delete the pod with no grace (only if it is still the pod we retired)."""
        options: dict[str, object] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        options["gracePeriodSeconds"] = 0
        if retiring.uid:
            options["preconditions"] = {"uid": retiring.uid}
        r = self.http.request("DELETE", self._pod_path(retiring.pod), json=options)
        if r.status_code not in (404, 409):  # gone, or another pod by that name
            r.raise_for_status()
        retiring.deleted = True
        log.warning(
            "pod %s deleted: its worker did not exit within the drain timeout", retiring.pod
        )

    def exited(self, handle: WorkerHandle) -> bool:
        """The pod of a worker this provider retired is gone, is another pod by now, or
        is in a terminal phase. Others: False (a pod that died stops heartbeating: the
        engine sees it as lost)."""
        retiring = self._retiring.get(handle.name)
        if retiring is None:
            return False
        if not retiring.gone:
            retiring.gone = self._pod_gone(retiring)
        return retiring.gone

    def _pod_gone(self, retiring: Retiring) -> bool:
        try:
            r = self.http.get(self._pod_path(retiring.pod))
            if r.status_code == 404:
                return True
            r.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("pod %s: cannot tell whether it is gone (%s)", retiring.pod, exc)
            return False
        pod = r.json()
        uid = pod.get("metadata", {}).get("uid")
        if retiring.uid is not None and uid != retiring.uid:
            return True
        return pod.get("status", {}).get("phase") in TERMINAL
