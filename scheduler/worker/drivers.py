"""Drivers: how an action is carried out on the cloud.

``simulated`` sleeps for a configured time; a payload ``{"simulate": {"duration": s,
"fail": "reason", "crash": true}}`` overrides the duration, injects a failure, or kills the
process running the action as an out-of-memory kill would (for tests and demos).
``webhook`` POSTs the event as JSON to ``WEBHOOK_URL``; a 2xx answer is success.
``simcloud`` (:mod:`scheduler.worker.simcloud_driver`) and ``openstack``
(:mod:`scheduler.worker.openstack_driver`) act on a cloud and wait for the result.

Every call carries the claim's fencing token (``hold.token``): it grows with each claim
of the event, so a cloud API that remembers the largest token it has seen per event can
refuse a stale holder (a worker whose claim was taken over after it stopped renewing
it). A driver waits with ``hold.wait``, never ``time.sleep``: a holder whose claim is
over stops there (:mod:`scheduler.worker.hold`). A cloud driver that loses sight of an
operation does not call it failed: it asks again until it knows
(:mod:`scheduler.worker.tracking`).
"""

from __future__ import annotations

import os
from typing import Protocol

import httpx

from scheduler.worker.errors import ActionFailed, DriverMisconfigured
from scheduler.worker.hold import Hold
from scheduler.worker.settings import WorkerSettings
from shared.models import VmEventMessage

#: exit status of a process the simulated driver crashes on purpose
CRASH_EXIT = 70
#: the longest a simulated action may take: a payload cannot tie a worker up for ever
MAX_SIMULATED_SECONDS = 3600.0
#: the webhook's request headers naming the event and the claim's fencing token
IDEMPOTENCY_KEY = "idempotency-key"
FENCING_TOKEN = "x-carousel-fencing-token"


class Driver(Protocol):
    def execute(self, event: VmEventMessage, hold: Hold) -> str | None:
        """Carry out ``event.action`` under the claim ``hold``; raise
        :class:`ActionFailed` if it failed (:class:`OutcomeUnknown` if whether it did
        could not be learnt; :class:`ClaimLost` once the claim is over). Returns None,
        or a note to record with the success (how its outcome was learnt)."""


class SimulatedDriver:
    def __init__(self, default: float = 0.0, per_action: dict[str, float] | None = None) -> None:
        self.default = default
        self.per_action = per_action or {}

    def execute(self, event: VmEventMessage, hold: Hold) -> None:
        sim = event.payload.get("simulate")
        if not isinstance(sim, dict):
            sim = {}
        try:
            duration = float(sim.get("duration", self.per_action.get(event.action, self.default)))
        except (TypeError, ValueError) as exc:
            raise ActionFailed(f"bad simulate.duration: {sim.get('duration')!r}") from exc
        if not duration <= MAX_SIMULATED_SECONDS:  # NaN too
            raise ActionFailed(
                f"simulate.duration {duration} is above the {MAX_SIMULATED_SECONDS} s a "
                "simulated action may take"
            )
        if duration > 0:
            hold.wait(duration)
        if sim.get("crash") is True:
            os._exit(CRASH_EXIT)  # no cleanup, no reply: as the kernel's OOM killer would
        if sim.get("fail"):
            raise ActionFailed(str(sim["fail"]))


class WebhookDriver:
    def __init__(self, url: str, timeout: float) -> None:
        if not url:
            raise DriverMisconfigured("the webhook driver needs WEBHOOK_URL")
        self.url = url
        self.client = httpx.Client(timeout=timeout)

    def execute(self, event: VmEventMessage, hold: Hold) -> None:
        hold.check()
        try:
            response = self.client.post(
                self.url,
                content=event.model_dump_json(),
                headers={
                    "content-type": "application/json",
                    IDEMPOTENCY_KEY: event.id,
                    FENCING_TOKEN: str(hold.token),
                },
            )
        except httpx.HTTPError as exc:
            raise ActionFailed(f"webhook unreachable: {exc}") from exc
        if not response.is_success:
            raise ActionFailed(f"webhook answered {response.status_code}: {response.text[:200]}")


def build_driver(settings: WorkerSettings) -> Driver:
    if settings.driver == "webhook":
        return WebhookDriver(settings.webhook_url, settings.webhook_timeout)
    if settings.driver == "simcloud":
        from scheduler.worker.simcloud_driver import SimcloudDriver

        return SimcloudDriver(
            settings.simcloud_url,
            settings.simcloud_token,
            settings.webhook_timeout,
            settings.action_poll_interval,
            settings.action_time_limit,
        )
    if settings.driver == "openstack":
        from scheduler.worker.openstack_driver import build_openstack_driver

        return build_openstack_driver(settings)
    return SimulatedDriver(settings.simulated_duration, settings.simulated_durations)
