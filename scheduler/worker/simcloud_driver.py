"""The simcloud driver: an action becomes an operation on simcloud's action API, and the
driver waits for it to finish, so the worker's slot is held as long as the cloud works.

The operation's id is the event's id (a retried or re-claimed action finds the same
operation instead of starting a second one) and the claim's fencing token goes with it
(simcloud refuses a token below one it has seen for the operation: a stale holder).

A poll that fails is not a failure: the driver keeps asking for the operation's record
(``/v1/operations/{id}``) until it learns how the operation ended
(:mod:`scheduler.worker.tracking`)."""

from __future__ import annotations

from typing import Any, Self

import httpx

from scheduler.worker.driver import CloudDriverConfig, DriverPlugin
from scheduler.worker.errors import ActionFailed
from scheduler.worker.hold import Hold
from scheduler.worker.settings import WorkerSettings
from scheduler.worker.tracking import Tracker
from shared.backoff import Backoff
from shared.cloud import SimcloudConnection
from shared.models import Action, VmEventMessage

#: actions whose target is a VM group (the event's ``vm``), not a VM
GROUP_ACTIONS = frozenset({Action.SCALE_OUT, Action.SCALE_IN})
#: seconds of retrying an action's start while simcloud is unreachable or failing
START_PATIENCE = 30.0


class SimcloudConfig(CloudDriverConfig, SimcloudConnection):
    """simcloud's URL and token, and how long to wait for it."""


class SimcloudDriver(DriverPlugin[SimcloudConfig]):
    config_model = SimcloudConfig

    def __init__(
        self, url: str, token: str, timeout: float, poll_interval: float, max_wait: float
    ) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)
        self.poll_interval = poll_interval
        self.max_wait = max_wait

    @classmethod
    def from_config(cls, config: SimcloudConfig, worker: WorkerSettings) -> Self:
        """Waits for an operation up to ``ACTION_TIME_LIMIT``."""
        return cls(
            config.simcloud_url,
            config.simcloud_token,
            config.driver_http_timeout,
            config.action_poll_interval,
            worker.action_time_limit,
        )

    def execute(self, event: VmEventMessage, hold: Hold) -> str | None:
        kind = "groups" if event.action in GROUP_ACTIONS else "vms"
        params = event.payload.get("params")
        body = {
            "id": event.id,
            "action": event.action.value,
            "token": hold.token,
            "params": params if isinstance(params, dict) else {},
        }
        response = self._start(f"/v1/{kind}/{event.vm}/actions", body, hold)
        if response.status_code != 202:
            raise ActionFailed(f"simcloud refused {event.action}: {_detail(response)}")
        return self._wait(event.id, hold)

    def close(self) -> None:
        self.client.close()

    def _start(self, path: str, body: dict[str, Any], hold: Hold) -> httpx.Response:
        """POST the action, again while simcloud is unreachable or answers 5xx (the
        operation id makes a repeat harmless), for up to :data:`START_PATIENCE` s."""
        backoff = Backoff(first=0.2, cap=5.0)
        while True:
            try:
                response = self.client.post(path, json=body)
            except httpx.HTTPError as exc:
                problem = f"simcloud unreachable: {exc!r}"
            else:
                if response.status_code < 500:
                    return response
                problem = f"simcloud answered {_detail(response)}"
            if backoff.waited >= START_PATIENCE:
                raise ActionFailed(problem)
            hold.wait(backoff.next())

    def _wait(self, op_id: str, hold: Hold) -> str | None:
        """Poll the operation until it ends: None if it succeeded, or the note that its
        success was learnt late; :class:`ActionFailed` if it failed (the cloud says so),
        :class:`OutcomeUnknown` if that was not learnt within ``max_wait``."""
        tracker = Tracker(f"operation {op_id}", self.poll_interval, self.max_wait)
        while True:
            try:
                response = self.client.get(f"/v1/operations/{op_id}")
                response.raise_for_status()
                op: dict[str, Any] = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                tracker.lost(repr(exc), hold)
                continue
            late = tracker.seen()
            if op.get("state") == "succeeded":
                return late
            if op.get("state") == "failed":
                why = f"simcloud: {op.get('error') or 'failed'}"
                raise ActionFailed(f"{why} ({late})" if late else why)
            tracker.running(str(op.get("state")), hold)


def _detail(response: httpx.Response) -> str:
    try:
        return f"{response.status_code} {response.json().get('detail')}"
    except (ValueError, AttributeError):
        return f"{response.status_code} {response.text[:200]}"
