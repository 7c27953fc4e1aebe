"""Keys that live only while they have work, at a 100,000-VM cloud's scale.

A run brings ``BENCH_KEYS`` (default 100,000) distinct keys through Carousel: a rolling
upgrade of nine VMs in ten, host after host in waves, and a heal of each remaining VM
scattered over the waves — one event per key. The same run is made with idle keys
retired after ``KEY_IDLE_SECONDS`` and with retirement off, each on a private RabbitMQ
node of its own (so the broker's memory is this run's alone). Every second it samples
the live queues (the dispatcher's consumed keys), the broker's and the dispatcher's
resident memory; it reports their peaks and the events lost (posted, never succeeded).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import carousel, count_status, post_all, wait_for
from bench.report import RESULTS, save
from bench.scale import rss_mb
from harness.private_broker import PrivateBroker

KEYS = int(os.environ.get("BENCH_KEYS", "100000"))
#: seconds without work before a key retires, in the run with retirement on
IDLE = float(os.environ.get("BENCH_KEY_IDLE_SECONDS", "5"))
VMS_PER_HOST = 20
WAVES = 20


def workload(keys: int) -> list[list[dict[str, Any]]]:
    """The waves: each upgrades the VMs of its hosts (nine in ten of them) and heals
    VMs spread over every host (the tenth). Each event has its id, so a request posted
    again after a 503 stores nothing twice (the contract: retry with the same ids)."""
    hosts = max(1, keys // VMS_PER_HOST)
    vms = [(f"h{i % hosts}", f"vm{i}") for i in range(keys)]
    upgrades = [v for i, v in enumerate(vms) if i % 10]
    heals = [v for i, v in enumerate(vms) if not i % 10]
    per_up = -(-len(upgrades) // WAVES)
    per_heal = -(-len(heals) // WAVES)
    waves = []
    for w in range(WAVES):
        wave = [
            {"id": f"up-{v}", "host": h, "vm": v, "policy": "rolling-upgrade", "action": "upgrade"}
            for h, v in sorted(upgrades, key=lambda hv: hv[0])[w * per_up : (w + 1) * per_up]
        ]
        wave += [
            {"id": f"heal-{v}", "host": h, "vm": v, "policy": "auto-heal", "action": "heal"}
            for h, v in heals[w * per_heal : (w + 1) * per_heal]
        ]
        waves.append(wave)
    return waves


def _beam_pid(broker: PrivateBroker) -> int | None:
    """The node's Erlang VM, from the pid file it writes once it runs."""
    pid_file = broker.base / "rabbit.pid"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if pid_file.exists() and pid_file.read_text().strip():
            return int(pid_file.read_text().strip())
        time.sleep(0.2)
    return None


class Sampler:
    """Every second: live keys, broker RSS, dispatcher RSS."""

    def __init__(self, dispatcher_url: str, broker_pid: int, dispatcher_pid: int) -> None:
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._args = (dispatcher_url, broker_pid, dispatcher_pid)
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        url, broker, dispatcher = self._args
        while not self._stop.wait(1.0):
            try:
                live = httpx.get(f"{url}/stats", timeout=10).json()["live_keys"]
            except (httpx.HTTPError, KeyError, ValueError):
                continue
            self.samples.append(
                {
                    "t": time.monotonic() - self._started,
                    "live_keys": live,
                    "broker_mb": rss_mb(broker),
                    "dispatcher_mb": rss_mb(dispatcher),
                }
            )

    def stop(self) -> list[dict[str, float]]:
        self._stop.set()
        self._thread.join(5)
        return self.samples


def one_run(keys: int, idle: float) -> dict[str, Any]:
    waves = workload(keys)
    with tempfile.TemporaryDirectory(prefix="carousel-keys-") as tmp:
        broker = PrivateBroker(Path(tmp) / "rabbit")
        broker.start()
        try:
            with carousel(
                AMQP_URL=broker.url,
                KEY_IDLE_SECONDS=idle,
                MAX_PARALLEL=64,
                WORKER_CONCURRENCY=4,
            ) as (stack, store):
                stack.producer()
                dispatcher = stack.dispatcher()
                stack.worker()
                beam = _beam_pid(broker)
                assert beam is not None and dispatcher.proc is not None
                sampler = Sampler(stack.dispatcher_url, beam, dispatcher.proc.pid)
                started = time.perf_counter()
                posted = 0
                for wave in waves:
                    post_all(
                        stack.producer_url, [wave[i : i + 500] for i in range(0, len(wave), 500)], 2
                    )
                    posted += len(wave)
                    wait_for(
                        lambda n=posted: count_status(store, "succeeded", "failed") >= n,
                        1800,
                        "the wave ended",
                    )
                took = time.perf_counter() - started
                if idle:  # the last keys retire too
                    wait_for(
                        lambda: httpx.get(f"{stack.dispatcher_url}/stats").json()["live_keys"] == 0,
                        idle * 4 + 60,
                        "every key retired",
                    )
                time.sleep(2)  # a last sample or two
                samples = sampler.stop()
                stats = httpx.get(f"{stack.dispatcher_url}/stats").json()
                succeeded = count_status(store, "succeeded")
        finally:
            broker.stop()
    return {
        "retirement": f"KEY_IDLE_SECONDS={idle:g}" if idle else "off",
        "keys": keys,
        "seconds": took,
        "events/s": keys / took,
        "peak live queues": max(s["live_keys"] for s in samples),
        "live queues at end": samples[-1]["live_keys"],
        "broker RSS peak MB": max(s["broker_mb"] for s in samples),
        "broker RSS at end MB": samples[-1]["broker_mb"],
        "dispatcher RSS peak MB": max(s["dispatcher_mb"] for s in samples),
        "keys retired": stats["retired_total"],
        "events lost": keys - succeeded,
        "samples": samples,
    }


def run(keys: int = KEYS, idle: float = IDLE) -> None:
    """Retirement on, then off; the results are written after each run. With
    ``BENCH_KEYS_LEGS=off`` only the second is run, beside the first's saved results."""
    legs = os.environ.get("BENCH_KEYS_LEGS", "on,off").split(",")
    rows: list[dict[str, Any]] = []
    times: list[dict[str, Any]] = [{"part of the run": f"{t * 10} %"} for t in range(11)]
    if "on" not in legs and (RESULTS / "keys.json").exists():
        rows = [r for r in _saved("keys") if r["retirement"] != "off"]
        times = _saved("keys_over_time")
    for name, idle_seconds in (("on", idle), ("off", 0.0)):
        if name not in legs:
            continue
        row = one_run(keys, idle_seconds)
        for at, columns in zip(
            times, over_time(row["retirement"], row.pop("samples")), strict=True
        ):
            at.update(columns)
        rows.append(row)
        save(
            "keys",
            f"{keys:,} distinct keys (a rolling upgrade in {WAVES} waves plus heals), idle "
            f"keys retired vs kept, a private broker each",
            rows,
        )
        save(
            "keys_over_time",
            "The same runs over time: live queues and broker RSS at each tenth of the run",
            times,
        )


def _saved(name: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads((RESULTS / f"{name}.json").read_text())["rows"]
    return rows


def over_time(name: str, samples: list[dict[str, float]]) -> list[dict[str, Any]]:
    """One run's columns at each tenth of it (the runs differ in length): the sample
    nearest."""
    out: list[dict[str, Any]] = []
    for tenth in range(11):
        if not samples:
            out.append({})
            continue
        at = samples[-1]["t"] * tenth / 10
        s = min(samples, key=lambda x: abs(x["t"] - at))
        out.append(
            {f"{name}: live queues": int(s["live_keys"]), f"{name}: broker MB": s["broker_mb"]}
        )
    return out


if __name__ == "__main__":
    run()
