"""The live page with ``BENCH_PAGE_KEYS`` keys (default 20,000): how soon it shows them.

A real stack — producer and dispatcher, on a private RabbitMQ node (the keys' queues are
this run's alone) — is given one event per key over hosts of 20 VMs (and some hosts
more, so the backlog differs), with dispatching paused: every key holds its head, the
board has all of them to rank and the waiting reasons to give. Then Debian's Chromium,
headless and with a fresh profile each time, opens ``/live`` ``LOADS`` times; the page
marks when it first drew the board (``window.carouselRendered``, milliseconds since the
navigation began), and when its own files had loaded; beside them, ``GET /board``'s own
time and size, and a search's.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import carousel, post_all, wait_for
from bench.report import save
from harness import browser
from harness.private_broker import PrivateBroker

KEYS = int(os.environ.get("BENCH_PAGE_KEYS", "20000"))
VMS_PER_HOST = 20
#: cold loads of the page measured
LOADS = 5
#: GETs of /board timed
GETS = 10


def workload(keys: int) -> list[dict[str, Any]]:
    """One event per key; every seventh host's first VM gets a few more behind it."""
    hosts = max(1, keys // VMS_PER_HOST)
    events = [
        {"id": f"e{i}", "host": f"h{i % hosts}", "vm": f"vm{i}", "policy": "ops", "action": "heal"}
        for i in range(keys)
    ]
    for h in range(0, hosts, 7):
        vm = f"vm{h}"
        events += [
            {"id": f"x{h}-{n}", "host": f"h{h}", "vm": vm, "policy": "ops", "action": "heal"}
            for n in range(1 + h % 5)
        ]
    return events


def _timed_gets(url: str) -> tuple[float, float]:
    """Median milliseconds of ``GETS`` GETs of ``url``, and the answer's KB."""
    took = []
    size = 0
    for _ in range(GETS):
        started = time.perf_counter()
        r = httpx.get(url, timeout=30)
        took.append((time.perf_counter() - started) * 1000)
        r.raise_for_status()
        size = len(r.content)
    return statistics.median(took), size / 1024


#: milliseconds from the navigation to the page's own HTML, script and style loaded
LOADED = "return performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"


def _first_renders(url: str, workdir: Path) -> tuple[list[float], list[float]]:
    """For each cold load: the board drawn, and the page itself loaded (before it asked
    for the board), both in milliseconds since the navigation began."""
    out, loaded = [], []
    for n in range(LOADS):
        with browser.chromium(workdir / f"profile-{n}") as driver:
            driver.get(url)
            wait_for(
                lambda d=driver: d.execute_script("return window.carouselRendered || 0"),
                60,
                "the board drawn",
            )
            out.append(float(driver.execute_script("return window.carouselRendered")))
            loaded.append(float(driver.execute_script(LOADED)))
            assert browser.console_errors(driver) == [], "the page logged an error"
    return out, loaded


def run(keys: int = KEYS) -> None:
    why = browser.missing()
    if why:
        raise SystemExit(f"the live page bench needs {why}")
    events = workload(keys)
    with tempfile.TemporaryDirectory(prefix="carousel-page-") as tmp:
        broker = PrivateBroker(Path(tmp) / "rabbit")
        broker.start()
        try:
            with carousel(AMQP_URL=broker.url, START_PAUSED="true") as (stack, _):
                stack.producer()
                stack.dispatcher()
                batches = [events[i : i + 500] for i in range(0, len(events), 500)]
                post_all(stack.producer_url, batches, 2)
                stats = f"{stack.dispatcher_url}/stats"
                wait_for(
                    lambda: httpx.get(stats).json()["ready_keys"] >= keys,
                    600,
                    "every key holding its head",
                )
                board_ms, board_kb = _timed_gets(f"{stack.dispatcher_url}/board")
                search_ms, _ = _timed_gets(f"{stack.dispatcher_url}/board?q=h7/")
                renders, loaded = _first_renders(f"{stack.dispatcher_url}/live", Path(tmp))
        finally:
            broker.stop()
    row = {
        "keys": keys,
        "events held": len(events),
        "GET /board ms (median)": round(board_ms, 1),
        "board KB": round(board_kb, 1),
        "search ms (median)": round(search_ms, 1),
        "page loaded ms (median)": round(statistics.median(loaded), 1),
        "first render ms (median)": round(statistics.median(renders), 1),
        "first render ms (worst)": round(max(renders), 1),
    }
    save(
        "live_page",
        f"The live page with {keys:,} keys, each holding its head (paused)",
        [row],
        renders_ms=renders,
        loaded_ms=loaded,
    )
