"""The contract between Carousel and a cloud, defined once for the producer's monitoring,
the worker's drivers, simcloud (which plays the cloud) and the tests:

* the request headers an action call carries: the operation it is (the event's id) and
  the claim's fencing token, which grows with each claim of the event, so a cloud that
  remembers the largest token per operation can refuse a stale holder;
* the server metadata that makes servers a group (and gives the group its bounds), and
  marks the replica a scale-in event chose;
* the settings a service connects to a cloud with (:class:`CloudSettings`).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from shared.settings import ENVIRONMENT

#: request header naming the operation of an action call (the event's id): a retried
#: call with the same id joins the first instead of running twice
OPERATION_HEADER = "X-Carousel-Operation"
#: request header carrying the claim's fencing token (an integer)
FENCING_HEADER = "X-Carousel-Fencing-Token"
#: request header naming the event a webhook call is for (the event's id)
IDEMPOTENCY_HEADER = "Idempotency-Key"

#: server metadata naming a server's group
GROUP_KEY = "carousel.group"
#: server metadata giving the group's bounds (on its replicas; both or neither)
GROUP_MIN_KEY = "carousel.group.min"
GROUP_MAX_KEY = "carousel.group.max"
#: server metadata marking the replica a scale-in event chose (its value: the event id)
SCALE_IN_KEY = "carousel.scale_in"


class SimcloudConnection(BaseSettings):
    """How to reach simcloud: the producer's monitoring source and the simcloud driver's
    cloud."""

    model_config = ENVIRONMENT

    simcloud_url: str = Field(
        "http://127.0.0.1:8100",
        description="simcloud's base URL: the monitoring's source and the simcloud "
        "driver's cloud (SIMCLOUD_URL).",
    )
    simcloud_token: str = Field(
        "",
        description="Bearer token sent to simcloud, which requires it on every route but "
        "/healthz when it has one (SIMCLOUD_TOKEN); empty = none. Required under compose.",
    )


class OpenStackConnection(BaseSettings):
    """How to reach an OpenStack Compute API: the producer's monitoring source and the
    openstack driver's cloud."""

    model_config = ENVIRONMENT

    openstack_cloud: str = Field(
        "",
        description="The clouds.yaml entry the OpenStack monitoring and the openstack "
        "driver connect with (OPENSTACK_CLOUD); empty = OPENSTACK_COMPUTE_URL without "
        "Keystone.",
    )
    openstack_compute_url: str = Field(
        "",
        description="A Compute API endpoint used without Keystone, e.g. simcloud's "
        "http://127.0.0.1:8100/compute (OPENSTACK_COMPUTE_URL).",
    )
    openstack_token: str = Field(
        "", description="Token sent to OPENSTACK_COMPUTE_URL (OPENSTACK_TOKEN)."
    )


class CloudSettings(OpenStackConnection, SimcloudConnection):
    """Every cloud's connection settings: what the producer's monitoring reads (it may
    watch either); each cloud driver reads its own cloud's part."""
