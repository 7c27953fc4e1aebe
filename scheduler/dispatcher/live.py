"""The live page (``/live``) and the JSON it polls, on the dispatcher's admin API.

- ``GET /live``: the page (``scheduler/dispatcher/ui/``: plain HTML, one script, one
  style sheet, served from the package: nothing fetched from elsewhere). It holds no data,
  so it answers without a token; ``/`` sends a browser there.
- ``GET /board``: the board (:mod:`scheduler.dispatcher.board`) with each key's backlog
  from the ledger (read at most once a second, however many pages poll).
- ``GET /board/pool``, ``/board/monitor``, ``/board/events/{id}``: the elasticity
  worker's pools and their last hour, the producer's monitoring, and one event, asked of
  those services with the caller's token, so the page needs one origin only. Their
  answer is wrapped (``ok``, ``status``, ``body``, ``error``): a service away is a
  message on the page, not an error.

The views need the token under the same rule as ``/stats`` (``ADMIN_VIEWS_OPEN``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Annotated, Any
from urllib.parse import quote

import httpx
from fastapi import APIRouter, FastAPI, Header, Query
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from scheduler.dispatcher.board import NO_BACKLOG, Backlog, state_words
from scheduler.dispatcher.board import Query as BoardQuery
from scheduler.dispatcher.idle import KeyT
from scheduler.dispatcher.state import DispatcherState
from shared.http import guarded_router

log = logging.getLogger(__name__)

#: the page's files, in the package
UI = resources.files("scheduler.dispatcher") / "ui"
#: how old the ledger's backlog may be when a board is made, seconds
BACKLOG_MAX_AGE = 1.0
#: how old a board may be when it is answered again, seconds: however many pages poll,
#: the dispatcher's lock is taken for at most one board per query this often
BOARD_MAX_AGE = 0.5
#: the most queries whose boards are kept
BOARDS_KEPT = 64
#: how long the dispatcher waits for the producer or the elasticity worker, seconds
PROXY_TIMEOUT = 3.0


class BacklogReader:
    """Each key's events accepted and not yet dispatched, from the ledger, read at most
    once per ``max_age`` seconds; the last reading stays while the ledger fails."""

    def __init__(
        self,
        read: Callable[[], dict[KeyT, int]],
        max_age: float = BACKLOG_MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._value = NO_BACKLOG
        self._at: float | None = None
        self.error: str | None = None

    def __call__(self) -> Backlog:
        with self._lock:
            now = self._clock()
            if self._at is None or now - self._at >= self._max_age:
                try:
                    self._value, self.error = Backlog.of(self._read()), None
                except Exception as exc:  # the board goes on without fresh backlog
                    self.error = f"the ledger did not answer: {exc.__class__.__name__}"
                    log.warning("backlog for the board: %r", exc)
                self._at = now
            return self._value


class Boards:
    """The boards made lately, by query: one made less than ``max_age`` seconds ago is
    answered again rather than made anew under the dispatcher's lock."""

    def __init__(
        self,
        make: Callable[[BoardQuery], dict[str, Any]],
        max_age: float = BOARD_MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._make = make
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._kept: dict[BoardQuery, tuple[float, dict[str, Any]]] = {}

    def __call__(self, query: BoardQuery) -> dict[str, Any]:
        with self._lock:
            now = self._clock()
            kept = self._kept.get(query)
            if kept is not None and now - kept[0] < self._max_age:
                return kept[1]
            board = self._make(query)
            if len(self._kept) >= BOARDS_KEPT:
                self._kept.clear()
            self._kept[query] = (now, board)
            return board


class Proxy:
    """GETs of another service's JSON, wrapped so the page can always read the answer."""

    def __init__(self, urls: Mapping[str, str], timeout: float = PROXY_TIMEOUT) -> None:
        self.urls = {name: url.rstrip("/") for name, url in urls.items()}
        self.timeout = timeout
        self._http: httpx.Client | None = None  # made at the first call

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(timeout=self.timeout)
        return self._http

    def get(self, service: str, path: str, authorization: str | None) -> dict[str, Any]:
        url = f"{self.urls[service]}{path}"
        headers = {"Authorization": authorization} if authorization else {}
        try:
            r = self.http.get(url, headers=headers)
        except httpx.HTTPError as exc:
            said = f"unreachable: {exc.__class__.__name__}"
            return {"ok": False, "status": None, "body": None, "url": url, "error": said}
        try:
            body = r.json()
        except ValueError:
            body = None
        error = None if r.is_success else _refusal(r.status_code, body)
        return {
            "ok": r.is_success,
            "status": r.status_code,
            "body": body,
            "url": url,
            "error": error,
        }


def _refusal(status: int, body: Any) -> str:
    if status == 401:
        return "refused: this view needs the token (CAROUSEL_API_TOKEN)"
    detail = body.get("detail") if isinstance(body, dict) else None
    return f"{status}: {detail}" if isinstance(detail, str) else f"answered {status}"


def mount_page(app: FastAPI) -> None:
    """``/live`` and its assets; ``/`` sends a browser to it."""
    app.mount("/live/assets", StaticFiles(directory=str(UI)), "live-assets")

    @app.get("/live", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(UI / "index.html"), headers={"Cache-Control": "no-cache"})

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/live")


Authorization = Annotated[str | None, Header(include_in_schema=False)]


def live_views(
    state: DispatcherState[Any],
    session: Callable[[], dict[str, Any]],
    backlog: BacklogReader,
    proxy: Proxy,
    token: str,
) -> APIRouter:
    """/board and the views it gathers from the producer and the elasticity worker."""
    router = guarded_router(token)

    def make(query: BoardQuery) -> dict[str, Any]:
        out = state.board(backlog(), time.time(), query)
        out["state"] = state_words({**session(), "paused": out["paused"]})
        out["backlog_error"] = backlog.error
        classes = state.classes()  # without its policies' table, which may be long
        out["classes"] = {"classes": classes["classes"], "window": classes["window"]}
        return out

    boards = Boards(make)

    @router.get("/board")
    def get_board(
        q: str = Query("", max_length=200, description="Part of a host's name or of host/vm."),
        top: int = Query(25, ge=1, le=500, description="The most hosts listed."),
    ) -> dict[str, Any]:
        """The carousel as the live page shows it: hosts most backlog first, their VMs
        and policies (each key's backlog, held heads, what runs, why the head waits),
        the limits and their use, the dispatch rate, the last dispatches; at most
        ``BOARD_MAX_AGE`` seconds old."""
        return boards(BoardQuery(q, top))

    @router.get("/board/pool")
    def get_pool(authorization: Authorization = None) -> dict[str, Any]:
        """The elasticity worker's ``/status`` and ``/history`` (its pools over the last
        hour), as it answers them."""
        return {
            "status": proxy.get("elasticity", "/status", authorization),
            "history": proxy.get("elasticity", "/history", authorization),
        }

    @router.get("/board/monitor")
    def get_monitor(authorization: Authorization = None) -> dict[str, Any]:
        """The producer's ``/monitor/status``, as it answers it."""
        return proxy.get("producer", "/monitor/status", authorization)

    @router.get("/board/events/{event_id}")
    def get_event(event_id: str, authorization: Authorization = None) -> dict[str, Any]:
        """The producer's ``GET /events/{id}`` (its path so far, and why it waits), as
        it answers it."""
        return proxy.get("producer", f"/events/{quote(event_id, safe='')}", authorization)

    return router
