"""Tests for the simulated driver, the webhook driver (against a loopback HTTP server
started here), and drivers by name (scheduler.worker.drivers): the registry, each
driver's own settings, and the worker refusing to start on a bad one."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from scheduler.worker import drivers
from scheduler.worker.drivers import build_driver
from scheduler.worker.errors import ActionFailed, ClaimLost, DriverMisconfigured
from scheduler.worker.hold import Hold
from scheduler.worker.main import checked_settings
from scheduler.worker.settings import WorkerSettings
from scheduler.worker.simcloud_driver import SimcloudConfig, SimcloudDriver
from scheduler.worker.simulated_driver import SimulatedConfig, SimulatedDriver
from scheduler.worker.webhook_driver import WebhookConfig, WebhookDriver
from shared.cloud import FENCING_HEADER, IDEMPOTENCY_HEADER
from shared.errors import CarouselError
from shared.models import Action, VmEventMessage
from shared.plugins import UnknownPlugin


def ev(
    action: Action = Action.HEAL, payload: dict[str, Any] | None = None, event_id: str = "e1"
) -> VmEventMessage:
    return VmEventMessage(
        id=event_id,
        host="compute-1.dc1.example.com",
        vm="3f2b8c1e-9d4a-4e7b-8f6a-1c2d3e4f5a6b",
        policy="auto-healing",
        action=action,
        payload=payload or {},
        accepted_at=12.5,
    )


# -- SimulatedDriver ---------------------------------------------------------------------


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Durations the simulated driver asked to wait on its hold (instead of waiting)."""
    asked: list[float] = []
    monkeypatch.setattr(Hold, "wait", lambda self, seconds: asked.append(seconds))
    return asked


@pytest.mark.parametrize(
    ("default", "per_action", "event", "expected"),
    [
        pytest.param(0.0, {}, ev(), [], id="no-duration-no-sleep"),
        pytest.param(0.01, {}, ev(), [0.01], id="default"),
        pytest.param(0.01, {"migrate": 0.02}, ev(Action.MIGRATE), [0.02], id="per-action"),
        pytest.param(0.01, {"migrate": 0.02}, ev(Action.HEAL), [0.01], id="other-action-default"),
        pytest.param(
            0.01,
            {"migrate": 0.02},
            ev(Action.MIGRATE, {"simulate": {"duration": 0.03}}),
            [0.03],
            id="payload-overrides",
        ),
        pytest.param(
            0.01,
            {"heal": 0.02},
            ev(Action.HEAL, {"simulate": {"duration": 0}}),
            [],
            id="payload-zero-overrides",
        ),
        pytest.param(0.0, {"heal": 0.0}, ev(), [], id="per-action-zero"),
        pytest.param(0.0, {}, ev(payload={"simulate": {}}), [], id="empty-simulate"),
        pytest.param(0.0, {}, ev(payload={"simulate": None}), [], id="null-simulate"),
        pytest.param(
            0.0, {}, ev(payload={"simulate": {"duration": "0.04"}}), [0.04], id="duration-string"
        ),
    ],
)
def test_simulated_duration(
    sleeps: list[float],
    default: float,
    per_action: dict[str, float],
    event: VmEventMessage,
    expected: list[float],
) -> None:
    SimulatedDriver(default, per_action).execute(event, Hold(1))
    assert sleeps == expected


@pytest.mark.parametrize("reason", ["x", "no capacity on target host"])
def test_simulated_failure(sleeps: list[float], reason: str) -> None:
    with pytest.raises(ActionFailed) as info:
        SimulatedDriver().execute(ev(payload={"simulate": {"fail": reason}}), Hold(1))
    assert str(info.value) == reason
    assert isinstance(info.value, CarouselError)


def test_simulated_failure_after_its_duration(sleeps: list[float]) -> None:
    with pytest.raises(ActionFailed, match=r"^late$"):
        SimulatedDriver().execute(
            ev(payload={"simulate": {"fail": "late", "duration": 0.01}}), Hold(1)
        )
    assert sleeps == [0.01]


@pytest.mark.parametrize("fail", ["", None, 0, False])
def test_simulated_falsy_fail_does_not_fail(sleeps: list[float], fail: Any) -> None:
    SimulatedDriver().execute(ev(payload={"simulate": {"fail": fail}}), Hold(1))


def test_a_simulated_action_stops_once_its_claim_is_over() -> None:
    """It waits on its hold: a holder whose claim was taken over stops at once."""
    hold = Hold(1)
    threading.Timer(0.05, hold.lose, ["taken over"]).start()
    with pytest.raises(ClaimLost, match="taken over"):
        SimulatedDriver().execute(ev(payload={"simulate": {"duration": 60}}), hold)


def test_simulated_driver_really_sleeps_a_tiny_duration() -> None:
    SimulatedDriver(0.001).execute(ev(), Hold(1))  # the simulated action itself; nothing to assert


def test_simulated_defaults() -> None:
    driver = SimulatedDriver()
    assert driver.default == 0.0
    assert driver.per_action == {}


# -- WebhookDriver -----------------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Endpoint:
    """A loopback HTTP server answering every POST with ``status``."""

    server: ThreadingHTTPServer
    status: int = 200
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    block: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    holder: dict[str, Endpoint] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            ep = holder["ep"]
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            ep.received.append(
                Received("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            if ep.block:  # hold the answer until the test lets go (client timeout test)
                ep.release.wait(10)
            text = b"boom" if ep.status >= 400 else b""
            try:
                self.send_response(ep.status)
                self.send_header("content-length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)
            except OSError:
                pass  # the client gave up

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ep = holder["ep"] = Endpoint(server)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield ep
    finally:
        ep.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def webhook(endpoint: Endpoint) -> Iterator[WebhookDriver]:
    driver = WebhookDriver(endpoint.url, timeout=5.0)
    yield driver
    driver.client.close()


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_webhook_2xx_is_success(endpoint: Endpoint, webhook: WebhookDriver, status: int) -> None:
    endpoint.status = status
    event = ev(Action.LIVE_MIGRATE, {"target": "compute-2"}, event_id="evt-42")
    webhook.execute(event, Hold(1))
    assert len(endpoint.received) == 1
    got = endpoint.received[0]
    assert got.path == "/hook"
    assert json.loads(got.body) == event.model_dump(mode="json")
    assert json.loads(got.body)["action"] == "live_migrate"
    assert got.headers[IDEMPOTENCY_HEADER.lower()] == "evt-42"
    assert got.headers["content-type"] == "application/json"


@pytest.mark.parametrize("status", [400, 404, 409, 500, 503])
def test_webhook_error_status_is_action_failed(
    endpoint: Endpoint, webhook: WebhookDriver, status: int
) -> None:
    endpoint.status = status
    with pytest.raises(ActionFailed, match=f"webhook answered {status}: boom"):
        webhook.execute(ev(), Hold(1))
    assert len(endpoint.received) == 1  # no retry inside the driver


def test_webhook_same_event_twice_sends_the_same_idempotency_key(
    endpoint: Endpoint, webhook: WebhookDriver
) -> None:
    webhook.execute(ev(event_id="same"), Hold(1))
    webhook.execute(ev(event_id="same"), Hold(2))
    assert [r.headers[IDEMPOTENCY_HEADER.lower()] for r in endpoint.received] == ["same", "same"]
    # the claim's fencing token, so the receiving API can refuse a stale holder
    assert [r.headers[FENCING_HEADER.lower()] for r in endpoint.received] == ["1", "2"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_webhook_unreachable_is_action_failed() -> None:
    driver = WebhookDriver(f"http://127.0.0.1:{_closed_port()}/hook", timeout=5.0)
    try:
        with pytest.raises(ActionFailed, match="webhook unreachable"):
            driver.execute(ev(), Hold(1))
    finally:
        driver.client.close()


def test_webhook_timeout_is_action_failed(endpoint: Endpoint) -> None:
    endpoint.block = True
    driver = WebhookDriver(endpoint.url, timeout=0.05)
    try:
        with pytest.raises(ActionFailed, match="webhook unreachable"):
            driver.execute(ev(), Hold(1))
    finally:
        endpoint.release.set()
        driver.client.close()


def test_webhook_without_url_is_misconfigured() -> None:
    with pytest.raises(DriverMisconfigured, match="WEBHOOK_URL"):
        WebhookDriver("", timeout=5.0)


# -- drivers by name --------------------------------------------------------------------

DRIVER_ENV = (
    "DRIVER",
    "WEBHOOK_URL",
    "DRIVER_HTTP_TIMEOUT",
    "SIMULATED_DURATION",
    "SIMULATED_DURATIONS",
    "SIMCLOUD_URL",
    "SIMCLOUD_TOKEN",
    "ACTION_POLL_INTERVAL",
    "ACTION_TIME_LIMIT",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in DRIVER_ENV:
        monkeypatch.delenv(name, raising=False)


def test_the_built_in_drivers_are_registered_by_name() -> None:
    assert set(drivers.REGISTRY.names()) >= {"simulated", "webhook", "simcloud", "openstack"}
    assert drivers.driver_class("webhook") is WebhookDriver
    assert drivers.driver_class("simulated") is SimulatedDriver


def test_an_unknown_driver_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(UnknownPlugin) as raised:
        drivers.driver_class("webhok")
    message = str(raised.value)
    assert message.startswith("unknown driver 'webhok'; known: ")
    assert "simulated, webhook" in message and "carousel.drivers" in message


@pytest.mark.usefixtures("clean_env")
def test_build_driver_webhook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_URL", "http://127.0.0.1:9/hook")
    monkeypatch.setenv("DRIVER_HTTP_TIMEOUT", "3.5")
    driver = build_driver(WorkerSettings(driver="webhook"))
    assert isinstance(driver, WebhookDriver)
    try:
        assert driver.url == "http://127.0.0.1:9/hook"
        assert driver.client.timeout.read == 3.5
    finally:
        driver.close()


@pytest.mark.usefixtures("clean_env")
def test_build_driver_from_a_given_config() -> None:
    config = WebhookConfig(webhook_url="http://127.0.0.1:9/hook", driver_http_timeout=2.0)
    driver = build_driver(WorkerSettings(driver="webhook"), config)
    assert isinstance(driver, WebhookDriver) and driver.client.timeout.read == 2.0
    driver.close()
    with pytest.raises(DriverMisconfigured, match="takes a WebhookConfig, not a SimulatedConfig"):
        build_driver(WorkerSettings(driver="webhook"), SimulatedConfig())


@pytest.mark.usefixtures("clean_env")
def test_build_driver_webhook_without_url_is_misconfigured() -> None:
    with pytest.raises(DriverMisconfigured, match="WEBHOOK_URL"):
        build_driver(WorkerSettings(driver="webhook"))


@pytest.mark.usefixtures("clean_env")
def test_build_driver_simulated_by_default() -> None:
    driver = build_driver(WorkerSettings())
    assert isinstance(driver, SimulatedDriver)
    assert driver.default == 0.0
    assert driver.per_action == {}


@pytest.mark.usefixtures("clean_env")
def test_build_driver_simulated_with_durations(sleeps: list[float]) -> None:
    config = SimulatedConfig(simulated_duration=0.01, simulated_durations={"migrate": 0.02})
    driver = build_driver(WorkerSettings(driver="simulated"), config)
    assert isinstance(driver, SimulatedDriver)
    driver.execute(ev(Action.MIGRATE), Hold(1))
    driver.execute(ev(Action.STOP), Hold(1))
    assert sleeps == [0.02, 0.01]


def test_build_driver_reads_the_environment(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, sleeps: list[float]
) -> None:
    monkeypatch.setenv("DRIVER", "simulated")
    monkeypatch.setenv("SIMULATED_DURATIONS", '{"resize": 0.03}')
    driver = build_driver(WorkerSettings())
    driver.execute(ev(Action.RESIZE), Hold(1))
    assert sleeps == [0.03]


@pytest.mark.usefixtures("clean_env")
def test_the_simcloud_driver_waits_up_to_the_workers_action_time_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SIMCLOUD_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("ACTION_POLL_INTERVAL", "0.5")
    monkeypatch.setenv("ACTION_TIME_LIMIT", "42")
    driver = build_driver(WorkerSettings(driver="simcloud"))
    assert isinstance(driver, SimcloudDriver)
    assert (driver.poll_interval, driver.max_wait) == (0.5, 42.0)
    assert str(driver.client.base_url) == "http://127.0.0.1:9"
    driver.close()
    assert SimcloudConfig().simcloud_token == ""


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"DRIVER": "webhok"},
            "carousel-worker: refusing to start: DRIVER=webhok: unknown driver 'webhok'; known: ",
        ),
        (
            {"DRIVER": "webhook"},
            "carousel-worker: refusing to start: DRIVER=webhook: the webhook driver needs "
            "WEBHOOK_URL",
        ),
        (
            {
                "DRIVER": "webhook",
                "WEBHOOK_URL": "http://127.0.0.1:9/",
                "DRIVER_HTTP_TIMEOUT": "-1",
            },
            "carousel-worker: refusing to start: DRIVER=webhook: DRIVER_HTTP_TIMEOUT: Input should "
            "be greater than 0 (got '-1')",
        ),
        (
            {"SIMULATED_DURATIONS": '{"heal": "soon"}'},
            "carousel-worker: refusing to start: DRIVER=simulated: SIMULATED_DURATIONS.heal: "
            "Input should be a valid number",
        ),
        (
            {"WORKER_POOL": "gevent"},
            "carousel-worker: refusing to start: WORKER_POOL: Input should be 'prefork', "
            "'threads' or 'solo' (got 'gevent')",
        ),
    ],
)
def test_bad_settings_stop_the_worker_with_one_line_saying_what_to_fix(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    monkeypatch.delenv("WORKER_POOL", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as raised:
        checked_settings()
    refusal = str(raised.value.code)
    assert refusal.startswith(message), refusal
    assert "\n" not in refusal


@pytest.mark.usefixtures("clean_env")
def test_good_settings_start() -> None:
    assert checked_settings().driver == "simulated"


@pytest.mark.parametrize("duration", [3600.5, 1e12, "inf", "nan"])
def test_a_simulated_action_may_not_tie_a_worker_up_for_ever(duration: object) -> None:
    event = VmEventMessage(
        id="e",
        host="h",
        vm="v",
        policy="p",
        action=Action.HEAL,
        payload={"simulate": {"duration": duration}},
        accepted_at=0.0,
    )
    with pytest.raises(ActionFailed, match=r"above the 3600\.0 s"):
        SimulatedDriver().execute(event, Hold(1))
