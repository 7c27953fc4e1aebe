"""The REST calls the command line makes, each failure turned into one clear line: an
unreachable service names its URL, a 401 says which setting carries the token, a 422
names the field."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from carousel_cli.errors import InputError, ServiceError
from carousel_cli.events import Event, batches
from carousel_cli.watching import Seen
from shared.addresses import local_url
from shared.waiting import title

#: GETs of event statuses in flight at once while watching
WATCH_CONCURRENCY = 8


@dataclass(frozen=True)
class Endpoints:
    producer: str = field(default_factory=lambda: local_url("producer"))
    dispatcher: str = field(default_factory=lambda: local_url("dispatcher"))
    elasticity: str = field(default_factory=lambda: local_url("elasticity"))
    token: str = field(default="", repr=False)


class Client:
    """One HTTP client for the three services."""

    def __init__(self, endpoints: Endpoints, timeout: float = 10.0) -> None:
        self.endpoints = endpoints
        headers = {"Authorization": f"Bearer {endpoints.token}"} if endpoints.token else {}
        limits = httpx.Limits(max_connections=WATCH_CONCURRENCY)
        self.http = httpx.Client(headers=headers, timeout=timeout, limits=limits)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the producer ----------------------------------------------------------------
    def post(self, events: Sequence[Event]) -> list[str]:
        """Post ``events`` (in batches of at most 1000); the accepted ids, in order."""
        ids: list[str] = []
        for batch in batches(events):
            body = {"events": batch}
            answer = self._call("POST", self.endpoints.producer, "/events", json=body)
            ids += answer["ids"]
        return ids

    def event(self, event_id: str) -> dict[str, Any] | None:
        """The event as the producer shows it; None if it does not know the id."""
        url = self.endpoints.producer
        response = self._send("GET", url, f"/events/{event_id}")
        if response.status_code == 404:
            return None
        found: dict[str, Any] = self._json(response, url)
        return found

    def cancel(self, event_id: str) -> str:
        """Cancel the event; its status afterwards: ``cancelled``, or the status that
        refused the cancel (``dispatched``, ``running``, ...), or ``unknown``."""
        url = self.endpoints.producer
        response = self._send("DELETE", url, f"/events/{event_id}")
        if response.status_code == 404:
            return "unknown"
        if response.status_code == 409:
            return str(self._body(response, url).get("status", "dispatched"))
        return str(self._json(response, url)["status"])

    def status(self, event_id: str) -> str:
        """The event's status; ``unknown`` if the producer does not know the id."""
        found = self.event(event_id)
        return "unknown" if found is None else str(found["status"])

    def statuses(self, ids: Sequence[str]) -> dict[str, str]:
        with ThreadPoolExecutor(WATCH_CONCURRENCY) as pool:
            return dict(zip(ids, pool.map(self.status, ids), strict=True))

    def seen(self, event_id: str) -> Seen:
        """The event's status and, while it is queued, what holds it."""
        found = self.event(event_id)
        if found is None:
            return Seen("unknown")
        why = found.get("waiting") or {}
        reason = why.get("reason")
        return Seen(str(found["status"]), title(str(reason)) if reason else None, why.get("text"))

    def progress(self, ids: Sequence[str]) -> dict[str, Seen]:
        """:meth:`seen` of each, a few at a time."""
        with ThreadPoolExecutor(WATCH_CONCURRENCY) as pool:
            return dict(zip(ids, pool.map(self.seen, ids), strict=True))

    # -- the admin APIs --------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        answer: dict[str, Any] = self._call("GET", self.endpoints.dispatcher, "/stats")
        return answer

    def shards(self) -> dict[str, Any]:
        """The dispatcher shards as the ledger holds them (``GET /shards``)."""
        answer: dict[str, Any] = self._call("GET", self.endpoints.dispatcher, "/shards")
        return answer

    def board(self, q: str = "", top: int = 25) -> dict[str, Any]:
        """The dispatcher's board (``GET /board``): its state and totals, the ``top``
        hosts whose name (or ``host/vm``) contains ``q``, most backlog first, with what
        runs and why the rest waits."""
        params = {"q": q, "top": top}
        answer: dict[str, Any] = self._call(
            "GET", self.endpoints.dispatcher, "/board", params=params
        )
        return answer

    def elasticity(self) -> dict[str, Any]:
        answer: dict[str, Any] = self._call("GET", self.endpoints.elasticity, "/status")
        return answer

    def ready(self, base: str, path: str = "/readyz") -> str:
        """``ready`` once ``path`` answers 2xx; else the reason the service gives for not
        being ready (its ``status``), or ``unreachable``."""
        try:
            response = self.http.get(f"{base}{path}")
        except httpx.TransportError:
            return "unreachable"
        if response.is_success:
            return "ready"
        try:
            return str(response.json().get("status", response.status_code))
        except (ValueError, AttributeError):
            return f"answered {response.status_code}"

    # -- plumbing --------------------------------------------------------------------
    def _send(self, method: str, base: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, f"{base}{path}", **kwargs)
        except httpx.TransportError as exc:
            raise ServiceError(
                f"cannot reach {base} ({type(exc).__name__}): is it running?"
            ) from None

    def _body(self, response: httpx.Response, base: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise ServiceError(
                f"{base} answered {response.status_code}: {_detail(response)}"
            ) from None
        return body if isinstance(body, dict) else {}

    def _call(self, method: str, base: str, path: str, **kwargs: Any) -> Any:
        return self._json(self._send(method, base, path, **kwargs), base)

    def _json(self, response: httpx.Response, base: str) -> Any:
        code = response.status_code
        if code == 401:
            raise ServiceError(
                f"{base} refused the call (401): set CAROUSEL_API_TOKEN (or --token)"
            )
        if code == 422:
            raise InputError(f"{base} refused the events (422): {_validation(response)}")
        if code >= 400:
            raise ServiceError(f"{base} answered {code}: {_detail(response)}")
        return response.json()


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    return str(detail)[:300]


def _validation(response: httpx.Response) -> str:
    """``event N: field: message`` for each of the producer's validation errors (those
    of the form the body had: the CLI posts batches), in the producer's words."""
    try:
        errors = response.json()["detail"]
        return "; ".join(_where(e["loc"]) + e["msg"] for e in errors)
    except (ValueError, KeyError, TypeError):
        return _detail(response)


#: the names of the body's forms in an error's location (producer.schemas.EventsIn)
FORMS = ("EventBatchIn", "VmEventIn")


def _where(loc: Sequence[str | int]) -> str:
    path = [p for p in loc if p != "body" and p not in FORMS]
    if len(path) >= 2 and path[0] == "events" and isinstance(path[1], int):
        field = ".".join(str(p) for p in path[2:])
        return f"event {path[1] + 1}: " + (f"{field}: " if field else "")
    return ".".join(str(p) for p in path) + ": " if path else ""
