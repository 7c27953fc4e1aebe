"""The Compute API's microversions: which it speaks, which a request asks for, and the
version documents a client discovers the API with."""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request

from simcloud.compute.errors import Fault, bad_request

#: the microversions this API speaks
MIN_VERSION = (2, 1)
MAX_VERSION = (2, 56)
VERSION_UPDATED = "2013-07-23T11:33:21Z"

Version = tuple[int, int]

_VERSION_RE = re.compile(r"^(\d+)\.(\d+)$")


def requested_version(request: Request) -> Version:
    """The request's microversion (2.1 when none is asked for); 406 outside the range."""
    text: str | None = None
    for part in (request.headers.get("openstack-api-version") or "").split(","):
        words = part.split()
        if len(words) == 2 and words[0].lower() == "compute":
            text = words[1]
    if text is None:
        text = request.headers.get("x-openstack-nova-api-version")
    if text is None:
        return MIN_VERSION
    if text.strip().lower() == "latest":
        return MAX_VERSION
    match = _VERSION_RE.match(text.strip())
    if match is None:
        raise bad_request(f"Invalid API version request string: {text!r}")
    version = (int(match[1]), int(match[2]))
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise Fault(
            406,
            "notAcceptable",
            f"Version {text} is not supported by the API. Minimum is {text_of(MIN_VERSION)} "
            f"and maximum is {text_of(MAX_VERSION)}.",
        )
    return version


def version_headers(version: Version) -> dict[str, str]:
    """The headers echoing the microversion an answer was made for."""
    text = text_of(version)
    return {
        "OpenStack-API-Version": f"compute {text}",
        "X-OpenStack-Nova-API-Version": text,
        "Vary": "OpenStack-API-Version, X-OpenStack-Nova-API-Version",
    }


def version_document(request: Request) -> dict[str, Any]:
    """v2.1 as ``GET /compute/`` lists it and ``GET /compute/v2.1/`` describes it."""
    media = "application/vnd.openstack.compute+json;version=2.1"
    return {
        "id": "v2.1",
        "status": "CURRENT",
        "version": text_of(MAX_VERSION),
        "min_version": text_of(MIN_VERSION),
        "updated": VERSION_UPDATED,
        "links": [{"rel": "self", "href": str(request.url_for("compute_v21"))}],
        "media-types": [{"base": "application/json", "type": media}],
    }


def text_of(version: Version) -> str:
    return f"{version[0]}.{version[1]}"
