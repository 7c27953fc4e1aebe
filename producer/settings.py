"""Settings of the producer (``carousel-producer``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from shared.addresses import local_url
from shared.cloud import CloudSettings
from shared.names import is_valid_name
from shared.settings import CommonSettings


class ProducerSettings(CommonSettings, CloudSettings):
    """What ``carousel-producer`` reads; the monitoring's source is one of the clouds
    of :class:`~shared.cloud.CloudSettings`."""

    producer_host: str = Field("127.0.0.1", description="Bind address (PRODUCER_HOST).")
    producer_port: int = Field(8000, description="Port of the REST API (PRODUCER_PORT).")
    max_body_bytes: int = Field(
        16 * 1024 * 1024, description="Largest request body accepted, else 413 (MAX_BODY_BYTES)."
    )
    publish_timeout: float = Field(
        10.0, description="Seconds to wait for broker confirms before 503 (PUBLISH_TIMEOUT)."
    )
    producer_processes: int = Field(
        1,
        ge=1,
        description="Producer worker processes serving the REST API on the same port: more "
        "than one spreads requests over several CPU cores; everything they share is in "
        "the ledger (PRODUCER_PROCESSES). Not with MONITOR_SOURCE (each process would "
        "monitor): run a second producer for the REST API instead.",
    )

    dispatcher_url: str = Field(
        default_factory=lambda: local_url("dispatcher"),
        description="The dispatcher's admin API, asked what holds a queued event that is "
        "first in its key (GET /events/{id}'s waiting: a limit, its class, its turn), and "
        "the port the root page links the live page on; default "
        "http://127.0.0.1:$DISPATCHER_PORT (port 8001 if unset); empty = ask none, the "
        "ledger's reasons only (DISPATCHER_URL).",
    )
    dispatcher_timeout: float = Field(
        0.5,
        gt=0,
        description="Seconds to wait for the dispatcher's answer before saying it did not "
        "answer (DISPATCHER_TIMEOUT).",
    )

    coalesce_policies: str = Field(
        "",
        description="Policies whose events coalesce unless an event says otherwise "
        "(its coalesce field), comma-separated, e.g. auto-heal,resize: a new event with "
        "the same host, VM, policy and action as one still waiting (not yet dispatched) "
        "is answered with the waiting one's id instead of queueing a second copy "
        "(COALESCE_POLICIES). A monitoring policy says it with its own coalesce field.",
    )

    @field_validator("coalesce_policies")
    @classmethod
    def _policy_names(cls, value: str) -> str:
        for name in _names(value):
            if not is_valid_name(name):
                raise ValueError(f"not a policy name: {name!r}")
        return value

    @property
    def coalescing_policies(self) -> frozenset[str]:
        """COALESCE_POLICIES as a set of names."""
        return frozenset(_names(self.coalesce_policies))

    # -- reactive monitoring (producer/monitoring) -------------------------------------
    monitor_source: Literal["", "simcloud", "openstack"] = Field(
        "",
        description="The cloud the producer watches and raises events from: simcloud, "
        "openstack, or empty for none (events then come only over REST) (MONITOR_SOURCE).",
    )
    policies_file: str = Field(
        "",
        description="YAML file of the monitoring policies (see policies.example.yaml); "
        "empty = the built-in ones: auto-heal after 15 s DOWN, live-migrate off hosts in "
        "maintenance, auto-scale groups at 0.8/0.2 CPU with a 60 s cooldown (POLICIES_FILE).",
    )
    monitor_stream: bool = Field(
        True,
        description="Follow the source's change stream between relists; false = poll "
        "every MONITOR_POLL_INTERVAL (MONITOR_STREAM).",
    )
    monitor_resync_interval: float = Field(
        60.0,
        gt=0,
        description="Seconds between full relists of the source while its stream is "
        "followed; a relist heals anything the stream missed (MONITOR_RESYNC_INTERVAL).",
    )
    monitor_poll_interval: float = Field(
        10.0,
        gt=0,
        description="Seconds between lists of a source without a stream (OpenStack), or "
        "with MONITOR_STREAM=false; also the longest wait between relists while the "
        "stream is broken (MONITOR_POLL_INTERVAL).",
    )
    utilisation_step: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Smallest change of a VM's CPU or RAM utilisation that counts as a "
        "change (is stored and evaluated by the policies) (UTILISATION_STEP).",
    )

    @model_validator(mode="after")
    def _one_monitor(self) -> ProducerSettings:
        if self.producer_processes > 1 and self.monitor_source:
            raise ValueError(
                "MONITOR_SOURCE needs PRODUCER_PROCESSES=1: every process would run the "
                "monitoring; run a second producer for the REST API instead"
            )
        return self


def _names(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]
