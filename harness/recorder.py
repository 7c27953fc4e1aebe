"""A recording webhook receiver: the fault suite's witness of every action's effect.

The webhook driver POSTs each event as JSON (``id host vm policy action payload
accepted_at``) with the headers ``Idempotency-Key`` (the event id) and
``X-Carousel-Fencing-Token`` (an integer that grows with each claim of the same event;
absent is read as 0). The receiver records one :class:`Call` per request and ends it
with one outcome:

``completed``
    the receiver sent its 2xx and the caller was still connected when it did: the
    effect took place and the caller was there to hear it.
``abandoned``
    the caller went away (its process was killed) before the answer was sent. The hold
    watches the caller's socket, so a killed caller ends its call within ~10 ms; such a
    call had no effect and is not counted as one.
``fenced``
    answered 409: a call for the same event with a higher token was accepted before
    this one arrived, or by the time its hold ended (a fenced resource checks the token
    when it applies the write, not only when the request comes in).
``failed``
    answered 500: a poison event.

Payload knobs: ``{"hold": s}`` holds the call ``s`` seconds before answering (default
:data:`DEFAULT_HOLD`), so actions overlap and the limits matter; ``{"poison": "fail"}``
answers 500 every time; ``{"poison": "kill"}`` calls ``on_kill(call)`` (the fault suite
kills the worker process that made the call) and waits for the caller to go.

Limits: when a call is accepted, the calls in progress whose caller is still connected
are counted — overall, on the call's (host, VM), of the call's action, and the VMs of
the call's group (its ``group`` field) — and stored with the call (``running_all``,
``running_vm``, ``running_action``, ``running_group``), so a limit violation is seen by
the receiver, not taken from the ledger.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from shared.cloud import FENCING_HEADER, IDEMPOTENCY_HEADER

DEFAULT_HOLD = 0.1
#: longest a poison-kill call waits for its caller to be killed before answering 500
KILL_WAIT = 20.0
#: how often a held call looks at its caller's socket
POLL = 0.01

COMPLETED, ABANDONED, FENCED, FAILED, RUNNING = (
    "completed",
    "abandoned",
    "fenced",
    "failed",
    "running",
)


@dataclass
class Call:
    seq: int
    event_id: str
    host: str
    vm: str
    token: int
    idempotency_key: str | None
    client_port: int
    poison: str | None
    started: float
    ended: float | None = None
    outcome: str = RUNNING
    #: calls in progress with a connected caller when this one was accepted, itself included
    running_all: int = 0
    running_vm: int = 0
    action: str = ""
    group: str | None = None
    #: calls of the same action in progress, itself included
    running_action: int = 0
    #: VMs of the call's group with a call in progress, its own included (0: no group)
    running_group: int = 0
    notes: list[str] = field(default_factory=list)


def peer_alive(sock: socket.socket) -> bool:
    """Whether the other end of ``sock`` is still connected (it sends nothing while it
    waits for our answer, so a readable socket with no data means it closed)."""
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return bool(data)


class Receiver:
    """The HTTP endpoint (``url``) and its records (:meth:`calls`)."""

    def __init__(self, on_kill: Callable[[Call], None] | None = None) -> None:
        self.on_kill = on_kill
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._open: dict[int, tuple[Call, socket.socket]] = {}
        self._max_token: dict[str, int] = {}
        self._seq = itertools.count(1)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/effect"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="receiver", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- views ---------------------------------------------------------------------
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def open_calls(self) -> list[Call]:
        """Calls in progress whose caller is still connected."""
        with self._lock:
            return [c for c, s in self._open.values() if peer_alive(s)]

    def last_start(self) -> float:
        with self._lock:
            return self._calls[-1].started if self._calls else 0.0

    # -- one request ---------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        body = json.loads(h.rfile.read(int(h.headers.get("content-length") or 0)) or b"{}")
        payload = body.get("payload") if isinstance(body.get("payload"), dict) else {}
        poison = payload.get("poison") if isinstance(payload.get("poison"), str) else None
        sock: socket.socket = h.connection
        call = Call(
            seq=next(self._seq),
            event_id=str(body.get("id")),
            host=str(body.get("host")),
            vm=str(body.get("vm")),
            token=_int(h.headers.get(FENCING_HEADER)),
            idempotency_key=h.headers.get(IDEMPOTENCY_HEADER),
            client_port=int(h.client_address[1]),
            poison=poison,
            started=time.time(),
            action=str(body.get("action")),
            group=body.get("group") if isinstance(body.get("group"), str) else None,
        )
        if not self._accept(call, sock):
            self._answer(h, call, 409, FENCED)
            return
        hold = KILL_WAIT if poison == "kill" else _hold(payload)
        if poison == "kill" and self.on_kill is not None:
            threading.Thread(target=self.on_kill, args=(call,), daemon=True).start()
        alive = _hold_while_connected(sock, hold)
        with self._lock:
            del self._open[call.seq]
            if not alive or not peer_alive(sock):
                call.outcome, call.ended = ABANDONED, time.time()
                return
            stale = self._max_token[call.event_id] > call.token
        if stale:
            self._answer(h, call, 409, FENCED)
        elif poison is not None:
            self._answer(h, call, 500, FAILED)
        else:
            self._answer(h, call, 200, COMPLETED)

    def _accept(self, call: Call, sock: socket.socket) -> bool:
        """Record the call; False if a higher token for its event was accepted already."""
        with self._lock:
            self._calls.append(call)
            best = self._max_token.get(call.event_id)
            if best is not None and call.token < best:
                return False
            self._max_token[call.event_id] = call.token if best is None else max(best, call.token)
            self._open[call.seq] = (call, sock)
            live = [c for c, s in self._open.values() if c is call or peer_alive(s)]
            call.running_all = len(live)
            call.running_vm = sum(1 for c in live if (c.host, c.vm) == (call.host, call.vm))
            call.running_action = sum(1 for c in live if c.action == call.action)
            if call.group is not None:
                call.running_group = len({(c.host, c.vm) for c in live if c.group == call.group})
            return True

    @staticmethod
    def _answer(h: BaseHTTPRequestHandler, call: Call, code: int, outcome: str) -> None:
        body = outcome.encode()
        try:
            h.send_response(code)
            h.send_header("content-type", "text/plain")
            h.send_header("content-length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            h.wfile.flush()
        except OSError:
            outcome = ABANDONED  # the caller went away as we answered
        call.outcome, call.ended = outcome, time.time()


def _hold_while_connected(sock: socket.socket, seconds: float) -> bool:
    """Wait ``seconds``; False as soon as the caller disconnects."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], min(POLL, left))
        if readable:
            if not peer_alive(sock):
                return False
            time.sleep(min(POLL, left))  # unexpected bytes: keep holding
    return True


def _hold(payload: dict[str, Any]) -> float:
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, min(float(payload.get("hold", DEFAULT_HOLD)), 60.0))
    return DEFAULT_HOLD


def _int(value: str | None) -> int:
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0
