"""The webhook driver (``DRIVER=webhook``): each event is POSTed as JSON to
``WEBHOOK_URL``; a 2xx answer is success, anything else (or no answer) a failure.

The request names the event (``Idempotency-Key: <event id>``, so a receiver can refuse a
second delivery of one action) and the claim's fencing token
(``X-Carousel-Fencing-Token``, so it can refuse a stale holder). ``docs/extending.md``
walks through this module as the example of a driver.
"""

from __future__ import annotations

from typing import Self

import httpx
from pydantic import Field

from scheduler.worker.driver import DriverPlugin, HttpDriverConfig
from scheduler.worker.errors import ActionFailed, DriverMisconfigured
from scheduler.worker.hold import Hold
from scheduler.worker.settings import WorkerSettings
from shared.cloud import FENCING_HEADER, IDEMPOTENCY_HEADER
from shared.models import VmEventMessage


class WebhookConfig(HttpDriverConfig):
    webhook_url: str = Field(
        "", description="URL the webhook driver POSTs each event to (WEBHOOK_URL)."
    )


class WebhookDriver(DriverPlugin[WebhookConfig]):
    config_model = WebhookConfig

    def __init__(self, url: str, timeout: float) -> None:
        if not url:
            raise DriverMisconfigured("the webhook driver needs WEBHOOK_URL")
        self.url = url
        self.client = httpx.Client(timeout=timeout)

    @classmethod
    def from_config(cls, config: WebhookConfig, worker: WorkerSettings) -> Self:
        return cls(config.webhook_url, config.driver_http_timeout)

    def execute(self, event: VmEventMessage, hold: Hold) -> None:
        hold.check()
        try:
            response = self.client.post(
                self.url,
                content=event.model_dump_json(),
                headers={
                    "content-type": "application/json",
                    IDEMPOTENCY_HEADER: event.id,
                    FENCING_HEADER: str(hold.token),
                },
            )
        except httpx.HTTPError as exc:
            raise ActionFailed(f"webhook unreachable: {exc}") from exc
        if not response.is_success:
            raise ActionFailed(f"webhook answered {response.status_code}: {response.text[:200]}")

    def close(self) -> None:
        self.client.close()
