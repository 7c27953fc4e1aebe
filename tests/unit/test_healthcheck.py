"""``python -m shared.healthcheck``, compose's readiness probe, against a real HTTP server
on loopback: 2xx passes, anything else fails naming the answer, Flower's basic auth is
sent from the environment; and the worker's ping names its node as Celery does."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness.processes import free_port
from scheduler.worker.ping import node_name
from shared.healthcheck import main, probe

USER_PASS = "admin:s3cret"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/ready":
            self._answer(200, b"ready")
        elif self.path == "/busy":
            self._answer(503, b"broker unreachable")
        elif self.path == "/guarded":
            wanted = "Basic " + base64.b64encode(USER_PASS.encode()).decode()
            ok = self.headers.get("Authorization") == wanted
            self._answer(200 if ok else 401, b"OK" if ok else b"who are you")
        else:
            self._answer(404, b"no")

    def _answer(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_2xx_answer_passes(base: str) -> None:
    assert probe(f"{base}/ready") is None
    assert main([f"{base}/ready"]) == 0


def test_an_unready_answer_fails_and_says_why(
    base: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([f"{base}/busy"]) == 1
    assert "answered 503: broker unreachable" in capsys.readouterr().err


def test_nothing_listening_fails() -> None:
    problem = probe(f"http://127.0.0.1:{free_port()}/readyz", timeout=2)
    assert problem is not None and "unreachable" in problem


def test_basic_auth_comes_from_the_named_variable(
    base: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main([f"{base}/guarded"]) == 1
    monkeypatch.setenv("FLOWER_BASIC_AUTH", f"{USER_PASS},viewer:other")
    assert main(["--basic-auth-env", "FLOWER_BASIC_AUTH", f"{base}/guarded"]) == 0


def test_the_worker_node_name_expands_the_host_as_celery_does() -> None:
    assert node_name("carousel-worker@%h", "6fad769fb109") == "carousel-worker@6fad769fb109"
    assert node_name("fixed@box", "other") == "fixed@box"
