"""The live page as a person uses it: Debian's Chromium, headless, driven by Selenium,
against a real stack (producer, dispatcher, the elasticity worker and the worker it
starts). The page loads with no console error; a burst fills the keys while the
dispatcher is paused, which the page says, and drains once it resumes; an unavailable VM
is marked in words; an event is looked up; a dead-lettered event is listed, and its
re-drive is refused without the token and done with it. Screenshots of the main views go
to ``build/live-page/`` (one of them is the README's)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By

from harness import browser
from harness.processes import Stack, wait_until

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "live-page"
TOKEN = "s3cret-live"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Any]:
    why = browser.missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test needs {why}")
        pytest.skip(f"no browser here: {why}")
    with browser.chromium(tmp_path / "chromium-profile") as d:
        yield d


def _text(driver: Any, css: str) -> str:
    """The text of every element ``css`` selects, read in one go (the page redraws)."""
    script = "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText).join(' ')"
    return str(driver.execute_script(script, css))


def _count(driver: Any, css: str) -> int:
    return int(driver.execute_script("return document.querySelectorAll(arguments[0]).length", css))


def _click(driver: Any, css: str) -> None:
    """Click ``css`` as a person would, again if the page redrew it under the pointer."""

    def click() -> bool:
        try:
            driver.find_element(By.CSS_SELECTOR, css).click()
        except StaleElementReferenceException:
            return False
        return True

    wait_until(click, 10, what=f"a click on {css}")


def _post(stack: Stack, events: list[dict[str, Any]]) -> None:
    r = httpx.post(f"{stack.producer_url}/events", json={"events": events}, headers=AUTH)
    assert r.status_code == 202, r.text


def _shot(driver: Any, section: str, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    if section:
        driver.execute_script(f"document.getElementById('{section}').scrollIntoView()")
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def test_an_operator_watches_the_carousel_turn(
    stack_factory: Callable[..., Stack], driver: Any
) -> None:
    shutil.rmtree(SHOTS, ignore_errors=True)
    stack = stack_factory(
        CAROUSEL_API_TOKEN=TOKEN,
        SIMULATED_DURATION="0.3",
        ACTION_TIME_LIMIT="2",
        MAX_PARALLEL="4",
    )
    stack.producer()
    stack.dispatcher()
    stack.elasticity()
    d = stack.dispatcher_url

    driver.get(f"{stack.producer_url}/")  # the producer's root links to the page
    _click(driver, "a[href$='/live']")
    assert driver.current_url == f"{d}/live"
    wait_until(lambda: "dispatcher active" in _text(driver, "#state"), 30, what="active")
    wait_until(lambda: "default" in _text(driver, "#pool-out"), 60, what="the pool drawn")
    line = "return document.querySelector('#pool-out polyline.workers').points.numberOfItems"
    assert driver.execute_script(line) >= 2  # a line, even from the first decision alone
    assert browser.console_errors(driver) == []

    # a burst while paused: the keys fill, the page says paused, in words
    assert httpx.post(f"{d}/pause", headers=AUTH).status_code == 200
    burst = [
        {
            "host": f"h{h}",
            "vm": f"h{h}-vm{v}",
            "policy": "ops",
            "action": "heal",
            "id": f"b{h}{v}{n}",
        }
        for h in range(1, 4)
        for v in range(1, 4)
        for n in range(3)
    ]
    _post(stack, burst)
    wait_until(lambda: "paused" in _text(driver, "#state"), 30, what="paused said")
    wait_until(
        lambda: _text(driver, "#numbers").find("27") >= 0, 30, what="the backlog of 27 shown"
    )
    wait_until(
        lambda: _count(driver, 'tr.vm[data-state="paused"]') == 9,
        30,
        what="every VM marked paused",
    )
    assert "the dispatcher is paused" in _text(driver, "ul.policies")
    _shot(driver, "", "paused")

    # an unavailable VM is marked in words; the rest drains once resumed
    r = httpx.put(
        f"{stack.producer_url}/hosts/h2/vms/h2-vm2/availability",
        json={"available": False},
        headers=AUTH,
    )
    assert r.status_code == 200, r.text
    held_back = 'tr.vm[data-vm="h2/h2-vm2"]'
    wait_until(lambda: "unavailable" in _text(driver, held_back), 30, what="unavailable shown")
    assert httpx.post(f"{d}/resume", headers=AUTH).status_code == 200
    wait_until(lambda: "dispatcher active" in _text(driver, "#state"), 30, what="resumed")
    wait_until(lambda: "b111" in _text(driver, "#dispatch-list"), 60, what="dispatches shown")
    _shot(driver, "", "draining")
    wait_until(
        lambda: (
            _text(driver, "tr.host").split()
            and "waiting" not in _text(driver, "tr.vm:not([data-vm='h2/h2-vm2'])")
            and "busy" not in _text(driver, "tr.host")
        ),
        120,
        what="all but the unavailable VM drained",
    )
    assert "VM h2-vm2 on host h2 is unavailable" in _text(driver, held_back)
    assert browser.console_errors(driver) == []

    # an event looked up: the producer shows it only to the token's holder
    driver.find_element(By.ID, "event-id").send_keys("b111")
    _click(driver, "#event-form button")
    wait_until(lambda: "needs the token" in _text(driver, "#event-out"), 30, what="refused")

    # a dead letter: an action past its time limit; its re-drive refused without the token
    slow = {"host": "h9", "vm": "h9-vm1", "policy": "ops", "action": "heal", "id": "slow"}
    _post(stack, [{**slow, "payload": {"simulate": {"duration": 30}}}])
    row = 'tr[data-event="slow"]'
    wait_until(lambda: _text(driver, row), 90, what="the dead letter listed")
    _shot(driver, "dead", "dead-letters")
    _click(driver, f"{row} button.redrive")
    wait_until(lambda: driver.switch_to.alert, 10, what="the token asked for")
    driver.switch_to.alert.send_keys("wrong")
    driver.switch_to.alert.accept()
    wait_until(lambda: "refused" in _text(driver, "#dead-said"), 30, what="refused")
    assert "missing or wrong token" in _text(driver, "#dead-said")
    event = f"{stack.producer_url}/events/slow"
    assert httpx.get(event, headers=AUTH).json()["status"] == "failed"  # nothing changed

    # with the token: the event's path so far, and the re-drive done
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    _click(driver, "#token-form button")
    _click(driver, "#event-form button")
    wait_until(lambda: "succeeded" in _text(driver, "#event-out"), 30, what="the event shown")
    assert "dispatched" in _text(driver, "#event-out ol.path")
    _click(driver, f"{row} button.redrive")
    wait_until(lambda: "slow queued again" in _text(driver, "#dead-said"), 30, what="re-driven")
    wait_until(
        lambda: httpx.get(event, headers=AUTH).json()["status"] != "failed",
        30,
        what="the event queued again",
    )
    assert "off: the producer watches no cloud" in _text(driver, "#monitor-out")
    _shot(driver, "pool", "pool")
    _shot(driver, "", "top")


def test_with_the_views_closed_the_page_asks_for_the_token(
    stack_factory: Callable[..., Stack], driver: Any
) -> None:
    """``ADMIN_VIEWS_OPEN=false``: the dispatcher's views (``/stats``, ``/board``) need the
    token, the page itself does not; it says so, shows the board once given it, and then
    pauses and resumes the dispatcher."""
    stack = stack_factory(CAROUSEL_API_TOKEN=TOKEN, ADMIN_VIEWS_OPEN="false")
    stack.dispatcher()
    d = stack.dispatcher_url
    for path in ("/stats", "/board", "/dead-letters"):
        assert httpx.get(f"{d}{path}").status_code == 401, path
        assert httpx.get(f"{d}{path}", headers=AUTH).status_code == 200, path
    driver.get(f"{d}/live")
    wait_until(lambda: "needs the token" in _text(driver, "#state"), 30, what="token asked")
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    _click(driver, "#token-form button")
    wait_until(lambda: "dispatcher active" in _text(driver, "#state"), 30, what="the board")
    assert "token in use" in _text(driver, "#token-said")
    # its controls work with the token: pause, then resume
    _click(driver, "#pause-button")
    wait_until(lambda: "paused" in _text(driver, "#state"), 30, what="paused from the page")
    assert httpx.get(f"{d}/stats", headers=AUTH).json()["paused"] is True
    assert _text(driver, "#pause-button") == "Resume"
    _click(driver, "#pause-button")
    wait_until(lambda: "resumed" in _text(driver, "#control-said"), 30, what="resumed")
    assert httpx.get(f"{d}/stats", headers=AUTH).json()["paused"] is False
