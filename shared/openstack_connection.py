"""One way to reach a Compute endpoint without Keystone, for the OpenStack fetcher
(producer) and driver (worker) alike."""

from __future__ import annotations

from typing import Any

import openstack
from openstack.connection import Connection


def connect_endpoint(
    compute_url: str, token: str | None, request_timeout: float | None = None
) -> Connection:
    """A connection to one Compute endpoint without Keystone (no catalog, no other
    service): ``admin_token`` auth with ``token`` (sent as ``X-Auth-Token``), or ``none``
    auth without one; the URL is the compute endpoint override. Nothing is sent until
    the first call. Raises ``ValueError`` without a URL."""
    if not compute_url:
        raise ValueError("an OpenStack compute endpoint URL is required")
    url = compute_url.rstrip("/")
    options: dict[str, Any] = {
        "load_yaml_config": False,
        "load_envvars": False,
        "compute_endpoint_override": url,
    }
    if token:
        options.update(auth_type="admin_token", auth={"endpoint": url, "token": token})
    else:
        options.update(auth_type="none", auth={"endpoint": url})
    if request_timeout is not None:
        options["api_timeout"] = request_timeout
    return openstack.connect(**options)
