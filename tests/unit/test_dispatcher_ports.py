"""``DISPATCHER_PORT_SPAN``: dispatchers started together on one machine (`make up
SHARDS=2`) each take the first free port of the same list, which passes over the ports
the other services are set to (:func:`shared.addresses.dispatcher_ports`); each port is
bound and listened on at once (:func:`shared.service.listen_first_free`), so two that try
at the same time never get the same one."""

from __future__ import annotations

import errno
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import httpx
import pytest

from harness.processes import free_ports_in_a_row, wait_until
from scheduler.dispatcher.main import admin_socket
from scheduler.dispatcher.settings import DispatcherSettings
from shared.addresses import dispatcher_ports
from shared.service import listen_first_free


@pytest.fixture
def listening() -> Iterator[list[socket.socket]]:
    """Sockets a test opens, closed after it."""
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def test_the_ports_pass_over_the_other_services_ports() -> None:
    # the defaults: producer 8000, elasticity 8002, Flower 5555, simcloud 8100
    assert dispatcher_ports(8001, 1, {}) == [8001]
    assert dispatcher_ports(8001, 3, {}) == [8001, 8003, 8004]
    moved = {"ELASTICITY_PORT": "9002", "PRODUCER_PORT": "8003", "FLOWER_PORT": ""}
    assert dispatcher_ports(8001, 3, moved) == [8001, 8002, 8004]
    assert dispatcher_ports(8098, 3, {}) == [8098, 8099, 8101]
    # DISPATCHER_PORT is always tried first, as it always was
    assert dispatcher_ports(8002, 2, {}) == [8002, 8003]
    # no port past the last one; a variable that is no port is its default
    assert dispatcher_ports(65534, 4, {}) == [65534, 65535]
    assert dispatcher_ports(8001, 2, {"ELASTICITY_PORT": "x"}) == [8001, 8003]


def test_the_first_free_port_is_taken(listening: list[socket.socket]) -> None:
    first = free_ports_in_a_row(3)
    listening.append(listen_first_free("127.0.0.1", [first]))
    listening.append(listen_first_free("127.0.0.1", [first, first + 1, first + 2]))
    assert listening[1].getsockname()[1] == first + 1
    with pytest.raises(OSError) as refused:
        listen_first_free("127.0.0.1", [first, first + 1])
    assert refused.value.errno == errno.EADDRINUSE
    assert f"{first}, {first + 1} are all in use" in str(refused.value)


def test_dispatchers_trying_the_same_ports_at_once_get_one_each(
    listening: list[socket.socket],
) -> None:
    first = free_ports_in_a_row(8)
    ports = list(range(first, first + 8))
    start = threading.Barrier(8)
    got: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        start.wait()
        sock = listen_first_free("127.0.0.1", ports)
        with lock:
            listening.append(sock)
            got.append(sock.getsockname()[1])

    threads = [threading.Thread(target=one) for _ in ports]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(got) == ports


def test_the_admin_socket_follows_the_span(
    monkeypatch: pytest.MonkeyPatch, listening: list[socket.socket]
) -> None:
    first = free_ports_in_a_row(3)
    for name in ("PRODUCER_PORT", "ELASTICITY_PORT", "FLOWER_PORT", "SIMCLOUD_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ELASTICITY_PORT", str(first + 1))
    monkeypatch.setenv("DISPATCHER_PORT", str(first))
    assert DispatcherSettings().dispatcher_port_span == 1
    assert admin_socket(DispatcherSettings()) is None  # uvicorn binds DISPATCHER_PORT

    monkeypatch.setenv("DISPATCHER_PORT_SPAN", "2")
    listening.append(listen_first_free("127.0.0.1", [first]))  # another shard has it
    sock = admin_socket(DispatcherSettings())
    assert sock is not None
    listening.append(sock)
    assert sock.getsockname() == ("127.0.0.1", first + 2)  # past the elasticity worker's
    with pytest.raises(OSError):
        admin_socket(DispatcherSettings())  # both taken


SERVE = """
import sys
from fastapi import FastAPI
from shared.service import listen_first_free, serve
from shared.settings import CommonSettings

app = FastAPI()
app.get("/ping")(lambda: {"pong": True})
ports = [int(p) for p in sys.argv[1:]]
sock = listen_first_free("127.0.0.1", ports)
serve(app, "127.0.0.1", sock.getsockname()[1], CommonSettings(), sock=sock)
"""


def test_a_service_serves_on_the_socket_it_was_given(listening: list[socket.socket]) -> None:
    first = free_ports_in_a_row(2)
    listening.append(listen_first_free("127.0.0.1", [first]))
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(first), str(first + 1)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{first + 1}/ping"

    def answers() -> bool:
        try:
            return bool(httpx.get(url, timeout=2).json() == {"pong": True})
        except httpx.TransportError:
            return False

    try:
        wait_until(answers, 30, what="the service on the second port")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    # uvicorn stops cleanly, then dies of the SIGTERM it caught, as uvicorn.run does
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert "Application shutdown complete" in out
    assert f"Uvicorn running on http://127.0.0.1:{first + 1}" in out
