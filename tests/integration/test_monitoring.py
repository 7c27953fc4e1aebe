"""Reactive monitoring end to end: simcloud, the producer watching it, the dispatcher and
a worker running actions through the simcloud driver — all real processes, on a real
broker. Each test injects a fault on simcloud and waits for what Carousel does about it."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from harness.processes import Service, Stack, wait_until
from shared.db import events
from shared.store import Store

HEAL_FAST = """
policies:
  - {name: auto-heal, kind: auto_heal, debounce: %(debounce)s}
  - {name: host-maintenance, kind: host_maintenance, action: live_migrate}
  - {name: autoscale, kind: autoscale, metric: cpu, high: 0.8, low: 0.2, cooldown: %(cooldown)s}
"""


@pytest.fixture
def ledger(db_url: str) -> Iterator[Store]:
    store = Store.connect(db_url)
    yield store
    store.engine.dispose()


def policies(tmp_path: Path, debounce: float = 0.5, cooldown: float = 3) -> str:
    path = tmp_path / f"policies-{debounce}-{cooldown}.yaml"
    path.write_text(HEAL_FAST % {"debounce": debounce, "cooldown": cooldown})
    return str(path)


def monitored(
    stack_factory: Callable[..., Stack], tmp_path: Path, *simcloud_args: str, **env: Any
) -> Stack:
    """simcloud with ``simcloud_args``, then producer (watching it), dispatcher, worker."""
    settings = {
        "MONITOR_SOURCE": "simcloud",
        "MONITOR_RESYNC_INTERVAL": "5",
        "MONITOR_POLL_INTERVAL": "2",
        "DRIVER": "simcloud",
        "ACTION_POLL_INTERVAL": "0.05",
        **env,
    }
    settings.setdefault("POLICIES_FILE", policies(tmp_path))
    stack = stack_factory(**settings)
    # simcloud's OpenStack Compute API subset, for MONITOR_SOURCE / DRIVER=openstack
    stack.env.setdefault("OPENSTACK_COMPUTE_URL", f"{stack.env['SIMCLOUD_URL']}/compute")
    stack.simcloud("--action-seconds", "0.3", *simcloud_args)
    stack.producer()
    stack.dispatcher()
    stack.worker()
    wait_until(
        lambda: status(stack)["stream"] in ("following", "polling"), 30, what="monitor running"
    )
    return stack


def cloud(stack: Stack) -> str:
    return stack.env["SIMCLOUD_URL"]


def fault(stack: Stack, **body: Any) -> None:
    r = httpx.post(f"{cloud(stack)}/v1/faults", json=body, timeout=10)
    assert r.status_code == 200, r.text


def vm(stack: Stack, name: str) -> dict[str, Any] | None:
    for v in httpx.get(f"{cloud(stack)}/v1/state", timeout=10).json()["vms"]:
        if v["name"] == name:
            return dict(v)
    return None


def status(stack: Stack) -> dict[str, Any]:
    body = httpx.get(f"{stack.producer_url}/monitor/status", timeout=10).json()
    return dict(body["sources"][0])


def metric(stack: Stack, name: str, **labels: str) -> float:
    """A counter's value on the producer's /metrics (0 when absent)."""
    text = httpx.get(f"{stack.producer_url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        m = re.fullmatch(rf"carousel_monitor_{name}_total\{{(.*)\}} (\S+)", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            total += float(m.group(2))
    return total


def raised(store: Store, policy: str | None = None) -> list[dict[str, Any]]:
    """The monitoring's events in the ledger, oldest first."""
    query = sa.select(events).where(events.c.id.like("mon-%")).order_by(events.c.accepted_at)
    if policy is not None:
        query = query.where(events.c.policy == policy)
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def finished(store: Store, policy: str, n: int) -> bool:
    rows = raised(store, policy)
    return len(rows) >= n and all(r["status"] in ("succeeded", "failed") for r in rows)


def test_vm_down_is_healed_and_the_event_shows_its_cause(
    stack_factory: Callable[..., Stack], tmp_path: Path, ledger: Store
) -> None:
    stack = monitored(stack_factory, tmp_path, "--hosts", "3", "--vms-per-host", "2")
    fault(stack, kind="vm_down", vm="h2-vm1")
    wait_until(lambda: finished(ledger, "auto-heal", 1), 60, what="the heal finished")
    [row] = raised(ledger, "auto-heal")
    assert (row["host"], row["vm"], row["action"], row["status"]) == (
        "h2",
        "h2-vm1",
        "heal",
        "succeeded",
    )
    wait_until(lambda: (vm(stack, "h2-vm1") or {}).get("state") == "ACTIVE", what="VM ACTIVE")
    shown = httpx.get(f"{stack.producer_url}/events/{row['id']}", timeout=10).json()
    cause = shown["payload"]["cause"]
    assert (cause["type"], cause["vm"], cause["new"]) == ("VmStateChanged", "h2-vm1", "DOWN")
    # the operator's view: the change, and the event it raised
    recent = status(stack)["recent_changes"]
    [seen] = [c for c in recent if any(e["id"] == row["id"] for e in c["events"])]
    assert seen["what"] == "vm h2-vm1 on h2 state ACTIVE -> DOWN"
    assert [(e["id"], e["policy"], e["outcome"]) for e in seen["events"]] == [
        (row["id"], "auto-heal", "raised")
    ]


def test_a_flap_inside_the_debounce_raises_nothing(
    stack_factory: Callable[..., Stack], tmp_path: Path, ledger: Store
) -> None:
    stack = monitored(
        stack_factory,
        tmp_path,
        "--hosts",
        "2",
        "--vms-per-host",
        "2",
        POLICIES_FILE=policies(tmp_path, debounce=5),
    )
    fault(stack, kind="flap", vm="h1-vm2", down_for=2)
    wait_until(
        lambda: metric(stack, "flaps_suppressed") == 1, 30, what="the flap seen and suppressed"
    )
    assert status(stack)["pending_timers"] == 0  # the heal it would have raised is cancelled
    assert raised(ledger) == []


def test_host_maintenance_empties_the_host_fairly_among_other_hosts_events(
    stack_factory: Callable[..., Stack], tmp_path: Path, ledger: Store
) -> None:
    stack = monitored(
        stack_factory,
        tmp_path,
        "--hosts",
        "3",
        "--vms-per-host",
        "10",
        MAX_PARALLEL=1,
        START_PAUSED="true",
    )
    others = [
        {"host": h, "vm": f"{h}-vm{i}", "policy": "ops", "action": "update", "id": f"{h}-u{i}"}
        for h in ("h2", "h3")
        for i in range(1, 11)
    ]
    r = httpx.post(f"{stack.producer_url}/events", json={"events": others}, timeout=30)
    assert r.status_code == 202, r.text
    fault(stack, kind="host_maintenance", host="h1")
    wait_until(lambda: len(raised(ledger, "host-maintenance")) == 10, 30, what="10 migrations")
    assert {e["action"] for e in raised(ledger, "host-maintenance")} == {"live_migrate"}
    assert httpx.post(f"{stack.dispatcher_url}/resume", timeout=10).status_code == 200
    wait_until(lambda: finished(ledger, "host-maintenance", 10), 120, what="migrations done")

    order = [
        d["host"]
        for d in httpx.get(f"{stack.dispatcher_url}/dispatches", params={"limit": 100}).json()
    ]
    first = order[:18]  # while all three hosts have events: one each in turn
    assert all(first.count(h) == 6 for h in ("h1", "h2", "h3")), order
    state = httpx.get(f"{cloud(stack)}/v1/state", timeout=10).json()
    assert [v for v in state["vms"] if v["host"] == "h1"] == []


def test_a_hot_group_scales_out_once_per_cooldown_and_a_cold_one_never_below_min(
    stack_factory: Callable[..., Stack], tmp_path: Path, ledger: Store
) -> None:
    stack = monitored(
        stack_factory,
        tmp_path,
        "--hosts",
        "2",
        "--vms-per-host",
        "1",
        "--group",
        "web:2:1:3",
        POLICIES_FILE=policies(tmp_path, cooldown=4),
    )

    def group_size() -> int:
        state = httpx.get(f"{cloud(stack)}/v1/state", timeout=10).json()
        return sum(1 for v in state["vms"] if v["group"] == "web")

    fault(stack, kind="utilisation", group="web", cpu=0.9)
    wait_until(lambda: finished(ledger, "autoscale", 1), 60, what="the scale_out")
    assert group_size() == 3
    [out] = raised(ledger, "autoscale")
    assert out["action"] == "scale_out"
    # hot again at once: inside the cooldown, nothing; and at max (3), never more
    seen = metric(stack, "changes", type="UtilisationChanged")
    fault(stack, kind="utilisation", group="web", cpu=0.95)
    wait_until(lambda: metric(stack, "changes", type="UtilisationChanged") > seen, 30, what="seen")
    assert len(raised(ledger, "autoscale")) == 1

    fault(stack, kind="utilisation", group="web", cpu=0.05)
    wait_until(lambda: group_size() == 1, 90, what="scaled in to the minimum")
    seen = metric(stack, "changes", type="UtilisationChanged")
    fault(stack, kind="utilisation", group="web", cpu=0.01)
    wait_until(lambda: metric(stack, "changes", type="UtilisationChanged") > seen, 30, what="seen")
    rows = raised(ledger, "autoscale")
    assert [r["action"] for r in rows] == ["scale_out", "scale_in", "scale_in"]
    # each scaling waited for the cooldown (4 s) of the one before, after scale-ins too
    assert all(b["accepted_at"] - a["accepted_at"] >= 4 for a, b in itertools.pairwise(rows))
    assert group_size() == 1


def test_two_thousand_quiet_vms_cost_no_event_and_no_write_and_a_cut_stream_heals(
    stack_factory: Callable[..., Stack], tmp_path: Path, ledger: Store
) -> None:
    stack = monitored(
        stack_factory,
        tmp_path,
        "--hosts",
        "100",
        "--vms-per-host",
        "20",
        MONITOR_RESYNC_INTERVAL="1",
        MONITOR_POLL_INTERVAL="3",
    )
    wait_until(lambda: status(stack)["vms"] == 2000, 30, what="2,000 VMs listed")
    written = metric(stack, "rows_written")
    relists = _relists(stack)
    wait_until(lambda: _relists(stack) >= relists + 3, 30, what="three relists")
    assert metric(stack, "rows_written") == written
    assert raised(ledger) == []

    # a VM that disappears is reported gone once, however many relists follow
    seen = metric(stack, "changes", type="VmStateChanged")
    assert httpx.delete(f"{cloud(stack)}/v1/vms/h99-vm20", timeout=10).status_code == 204
    wait_until(lambda: status(stack)["vms"] == 1999, 30, what="the VM gone")
    relisted = _relists(stack)
    wait_until(lambda: _relists(stack) >= relisted + 2, 30, what="two relists")
    assert metric(stack, "changes", type="VmStateChanged") == seen + 1
    relists = _relists(stack)

    fault(stack, kind="vm_down", vm="h50-vm7")
    wait_until(lambda: len(raised(ledger, "auto-heal")) == 1, 30, what="one heal")
    wait_until(lambda: _relists(stack) >= relists + 6, 30, what="more relists")
    assert len(raised(ledger, "auto-heal")) == 1

    fault(stack, kind="stream_cut", seconds=30)
    for name in ("h10-vm1", "h20-vm2", "h30-vm3"):
        fault(stack, kind="vm_down", vm=name)
    wait_until(lambda: len(raised(ledger, "auto-heal")) == 4, 60, what="the cut's changes")
    assert metric(stack, "stream_reconnects") >= 1
    assert sorted(r["vm"] for r in raised(ledger, "auto-heal"))[:3] == [
        "h10-vm1",
        "h20-vm2",
        "h30-vm3",
    ]


def _relists(stack: Stack) -> float:
    text = httpx.get(f"{stack.producer_url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("carousel_monitor_relist_seconds_count"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_producer_killed_mid_stream_acts_on_no_change_twice(
    stack_factory: Callable[..., Stack], tmp_path: Path, ledger: Store
) -> None:
    stack = monitored(
        stack_factory,
        tmp_path,
        "--hosts",
        "4",
        "--vms-per-host",
        "5",
        POLICIES_FILE=policies(tmp_path, debounce=0),
    )
    names = [f"h{h}-vm{v}" for h in range(1, 5) for v in range(1, 4)]
    for name in names[:6]:
        fault(stack, kind="vm_down", vm=name)
    wait_until(lambda: len(raised(ledger)) >= 1, 30, what="the first heal")
    producer = stack.services[1]
    producer.kill()
    for name in names[6:]:  # changes while the producer is dead
        fault(stack, kind="vm_down", vm=name)
    stack.producer()
    wait_until(lambda: finished(ledger, "auto-heal", len(names)), 120, what="every heal done")
    rows = raised(ledger, "auto-heal")
    assert sorted(r["vm"] for r in rows) == sorted(names)  # one event per outage, no more
    ops = [httpx.get(f"{cloud(stack)}/v1/operations/{r['id']}", timeout=10).json() for r in rows]
    assert {o["state"] for o in ops} == {"succeeded"}
    assert all((vm(stack, n) or {}).get("state") == "ACTIVE" for n in names)


def test_after_the_cloud_restarts_a_maintenance_and_a_vm_down_still_raise_their_events(
    stack_factory: Callable[..., Stack], tmp_path: Path, ledger: Store
) -> None:
    """The README's step twice over a restarted simcloud (a fresh process: its versions
    start again, below those the view remembers): the second maintenance of h1 empties
    it again, and a VM down after it is healed."""
    args = ("--hosts", "3", "--vms-per-host", "3")
    stack = monitored(stack_factory, tmp_path, *args)
    fault(stack, kind="host_maintenance", host="h1")
    wait_until(lambda: finished(ledger, "host-maintenance", 3), 60, what="3 migrations")
    wait_until(lambda: status(stack)["vms"] == 9, 30, what="the view settled")

    simcloud = next(s for s in stack.services if s.args[:2] == ["-m", "simcloud"])
    simcloud.stop()
    stack.simcloud("--action-seconds", "0.3", *args)
    wait_until(lambda: status(stack)["source_restarts"] == 1, 30, what="the restart seen")
    assert (vm(stack, "h1-vm1") or {}).get("host") == "h1"  # the fresh cloud: h1 full again

    fault(stack, kind="host_maintenance", host="h1")
    wait_until(lambda: finished(ledger, "host-maintenance", 6), 60, what="3 more migrations")
    state = httpx.get(f"{cloud(stack)}/v1/state", timeout=10).json()
    assert [v["name"] for v in state["vms"] if v["host"] == "h1"] == []
    fault(stack, kind="vm_down", vm="h2-vm2")
    wait_until(lambda: finished(ledger, "auto-heal", 1), 60, what="the heal done")
    assert (vm(stack, "h2-vm2") or {}).get("state") == "ACTIVE"
    assert "its list replaces the view" in "\n".join(
        s.log_tail(200) for s in stack.services if s.script == "carousel-producer"
    )
    assert status(stack)["source_restarts"] == 1  # logged and counted once


def test_over_openstack_a_vm_down_is_healed_through_openstacksdk(
    stack_factory: Callable[..., Stack], tmp_path: Path, ledger: Store
) -> None:
    """The code a user points at a real cloud: the OpenStack fetcher (polling Nova's
    server list) and driver (server actions), against simcloud's Compute API."""
    stack = monitored(
        stack_factory,
        tmp_path,
        "--hosts",
        "2",
        "--vms-per-host",
        "2",
        MONITOR_SOURCE="openstack",
        DRIVER="openstack",
        MONITOR_POLL_INTERVAL="1",
    )
    assert status(stack)["stream"] == "polling"  # Nova has no change stream
    fault(stack, kind="vm_down", vm="h1-vm2")
    wait_until(lambda: finished(ledger, "auto-heal", 1), 60, what="the heal finished")
    [row] = raised(ledger, "auto-heal")
    assert (row["vm"], row["action"], row["status"]) == ("h1-vm2", "heal", "succeeded")
    wait_until(lambda: (vm(stack, "h1-vm2") or {}).get("state") == "ACTIVE", what="VM ACTIVE")


def test_a_bad_policies_file_stops_the_producer_naming_the_field(
    stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("policies:\n  - {name: auto-heal, kind: auto_heal, debounce: -1}\n")
    stack = stack_factory(MONITOR_SOURCE="simcloud", POLICIES_FILE=str(bad))
    producer = Service("carousel-producer", stack.env, tmp_path).start(wait=False)
    assert producer.proc is not None
    wait_until(lambda: producer.proc.poll() is not None, 30, what="the producer to exit")
    assert producer.proc.returncode != 0
    assert "bad.yaml: policies[0].debounce" in producer.log_tail(60)
