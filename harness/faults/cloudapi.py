"""The ``cloud-api`` fault: the cloud's API failing half its calls and answering slowly
while actions run on it, through the ``simcloud`` driver.

The design. For this phase a simcloud process (:data:`HOSTS` hosts, :data:`VMS_PER_HOST`
VMs each) and one more worker with ``DRIVER=simcloud`` join the stack; the worker serves a
profile of its own (:data:`PROFILE`), to which the dispatcher, restarted with
``ACTION_PROFILES`` for the phase, routes one action (:data:`ACTION`, which the load never
posts). Events with that action are posted for simcloud's VMs — several per VM, under two
policies, on every host — each asking the cloud for an operation of its own length
(:data:`OP_SECONDS`). The first round of them is posted; once an operation runs,
simcloud's ``api`` fault is turned on, first :data:`SLOW` (half the calls answered 503,
every call late) and then :data:`STALLED` (the same, but later than the driver's HTTP
timeout: every call times out, while the operations already started go on in the cloud);
the rest are posted as the fault begins. The fault is then turned off, and every event of
the phase must be final within :data:`FINAL_BOUND`.

The whole window is shorter than the driver's patience with a start
(:data:`~scheduler.worker.simcloud_driver.START_PATIENCE`): a start the cloud never
received ends ``failed`` after that (a gap design §12 names), which is not what this fault
is about — within the window no event may fail unless the cloud failed it. simcloud holds
a faulty call before handling it, so a call that timed out never reached the cloud: a
start whose answer was lost after the cloud acted on it is not exercised here.

What the driver must do: never free a VM while its operation may still run (a poll that
failed says nothing: the driver asks the operation's record until it knows,
:mod:`scheduler.worker.tracking`), never start an event's operation twice, and end each
event with its true outcome.

How it is checked: from simcloud's own operation records (``GET /v1/operations``: each
operation's VM, state, start and end on the cloud's one clock), not through the webhook
receiver, which never sees these events. The records are what the cloud did — an
operation a driver started and then lost sight of included — and the cloud under the
fault has to call no one. :mod:`.cloudops` turns them and each event's final view into
the suite's anomalies (lost, duplicate, violation, stuck: defined there), charged to this
phase. The load does not adopt these events, so the suite's own accounting (the
receiver's calls) neither sees nor misses them; the final line counts them
(:attr:`.base.FaultResult.events`), and the profile's actions queue must drain like the
others.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import httpx

from harness.faults import accounting
from harness.faults.base import Ctx, FaultResult
from harness.faults.cloudops import LABEL, Op, judge
from harness.faults.stack import FaultStack
from harness.processes import Service, free_port, wait_until

PROFILE = "cloudapi"
ACTION = "upgrade"
HOSTS = 2
VMS_PER_HOST = 1
POLICIES = ("p0", "p1")
EVENTS_PER_KEY = 4
#: as many worker processes as VMs: a VM freed while its operation runs is the one
#: whose next event the freed process gets, at once
WORKER_CONCURRENCY = HOSTS * VMS_PER_HOST
#: seconds an operation takes in the cloud (each event draws its own): longer than a
#: few failed calls
OP_SECONDS = (2.0, 4.0)
#: the simcloud driver's HTTP timeout for this phase (its ``DRIVER_HTTP_TIMEOUT``)
DRIVER_TIMEOUT = 2.0
#: seconds every event of the phase has to be final once the fault is off
FINAL_BOUND = 120.0


@dataclass(frozen=True)
class ApiStep:
    """simcloud's ``api`` fault for a while: each call held ``delay`` s, then failed
    (503) at ``fail_rate``."""

    name: str
    fail_rate: float
    delay: float
    seconds: float


#: every call late, within the driver's timeout
SLOW = ApiStep("slow", fail_rate=0.5, delay=0.5, seconds=12.0)
#: every call later than the driver's timeout; both steps together end before the
#: driver's patience with a start does (START_PATIENCE)
STALLED = ApiStep("stalled", fail_rate=0.5, delay=DRIVER_TIMEOUT + 1.0, seconds=8.0)


def cloud_api(ctx: Ctx) -> FaultResult:
    """simcloud, its worker and the dispatcher's routing up; the first round of events
    posted; the API :data:`SLOW` (the other rounds posted), then :data:`STALLED`, then
    well; every event final, judged against the cloud's records (:mod:`.cloudops`)."""
    res = FaultResult("cloud API failing and slow")
    fs = ctx.stack
    fs.stack.env["SIMCLOUD_PORT"] = str(free_port())
    url = f"http://127.0.0.1:{fs.stack.env['SIMCLOUD_PORT']}"
    seed = str(ctx.rng.randrange(1 << 20))
    simcloud = fs.stack.simcloud(
        "--hosts", str(HOSTS), "--vms-per-host", str(VMS_PER_HOST), "--seed", seed
    )
    profiles = json.dumps({PROFILE: [ACTION]})
    fs.extra_queues.append(fs.topology.actions_queue_of(PROFILE).name)
    worker: Service | None = None
    statuses: dict[str, dict[str, Any] | None] = {}
    posted: dict[str, float] = {}
    try:
        worker = fs.worker_process(
            "faults-cloudapi@%h",
            DRIVER="simcloud",
            SIMCLOUD_URL=url,
            WORKER_PROFILE=PROFILE,
            ACTION_PROFILES=profiles,
            DRIVER_HTTP_TIMEOUT=str(DRIVER_TIMEOUT),
            WORKER_CONCURRENCY=str(WORKER_CONCURRENCY),
        )
        fs.reconfigure_dispatcher(ACTION_PROFILES=profiles)
        first, *rest = _rounds(ctx)
        _post(fs, first, posted)
        wait_until(lambda: _operations(url), 60, 0.1, what="an operation under way in simcloud")
        injected = time.time()
        for step in (SLOW, STALLED):
            began = time.monotonic()
            _api_fault(url, step)
            res.injected += 1
            ctx.log(f"  simcloud's API {step.name}: {step}")
            if step is SLOW:
                _post(fs, [e for r in rest for e in r], posted)
            time.sleep(max(0.0, step.seconds - (time.monotonic() - began)))  # the step's duration
        _clear(url)
        cleared = time.time()
        res.recoveries.append(ctx.recovery(injected, cleared))
        statuses = accounting.wait_final(fs, list(posted), FINAL_BOUND)
        ops = [Op.of(r) for r in _operations(url)]
        res.anomalies = judge(posted, statuses, ops)
        res.events = len(posted)
        res.note = _note(statuses, ops, res, (injected, cleared))
    finally:
        with contextlib.suppress(httpx.HTTPError):
            _clear(url)
        _wind_down(ctx, statuses, posted, worker, simcloud)
    return res


def _rounds(ctx: Ctx) -> list[list[dict[str, Any]]]:
    """:data:`EVENTS_PER_KEY` rounds of events, each with one for every VM and policy."""
    tag = f"cloudapi-{ctx.rng.randrange(1 << 24):06x}"
    keys = [
        (f"h{h}", f"h{h}-vm{v}", p)
        for h in range(1, HOSTS + 1)
        for v in range(1, VMS_PER_HOST + 1)
        for p in POLICIES
    ]
    return [
        [_event(f"{tag}-{n}-{vm}-{policy}", host, vm, policy, ctx) for host, vm, policy in keys]
        for n in range(EVENTS_PER_KEY)
    ]


def _event(eid: str, host: str, vm: str, policy: str, ctx: Ctx) -> dict[str, Any]:
    seconds = round(ctx.rng.uniform(*OP_SECONDS), 2)
    return {
        "id": eid,
        "host": host,
        "vm": vm,
        "policy": policy,
        "action": ACTION,
        "payload": {"params": {"duration": seconds, LABEL: eid}},
    }


def _post(fs: FaultStack, events: list[dict[str, Any]], posted: dict[str, float]) -> None:
    """Post until 202, the same ids each time (as the load's client does)."""
    now = time.time()
    for e in events:
        posted.setdefault(e["id"], now)
    url = f"{fs.stack.producer_url}/events"
    wait_until(
        lambda: httpx.post(url, json={"events": events}, timeout=30).status_code == 202,
        90,
        0.5,
        what=f"a 202 for {len(events)} events of the phase",
    )


def _operations(url: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{url}/v1/operations", timeout=10)
    r.raise_for_status()
    ops: list[dict[str, Any]] = r.json()["operations"]
    return ops


def _api_fault(url: str, step: ApiStep) -> None:
    fault = {"kind": "api", "fail_rate": step.fail_rate, "delay": step.delay}
    httpx.post(f"{url}/v1/faults", json=fault, timeout=10).raise_for_status()


def _clear(url: str) -> None:
    httpx.delete(f"{url}/v1/faults", timeout=10).raise_for_status()


def _note(
    statuses: dict[str, dict[str, Any] | None],
    ops: list[Op],
    res: FaultResult,
    window: tuple[float, float],
) -> str:
    """How many events ran while the API was faulty (by the ledger's times), how they
    ended, and what the cloud recorded."""
    rows = [r for r in statuses.values() if r is not None]
    during = sum(
        (r.get("started_at") or math.inf) <= window[1] and (r.get("finished_at") or 0) >= window[0]
        for r in rows
    )
    failed = sum(r["status"] == "failed" for r in rows)
    late = sum("learnt late" in (r.get("error") or "") for r in rows)
    return (
        f"{len(statuses)} events on simcloud, {during} under way while its API was faulty: "
        f"{failed} failed, {late} learnt late; {len(ops)} operations; "
        f"{len(res.anomalies)} anomalies"
    )


def _wind_down(
    ctx: Ctx,
    statuses: dict[str, dict[str, Any] | None],
    posted: dict[str, float],
    worker: Service | None,
    simcloud: Service,
) -> None:
    """Back to the stack's own dispatcher; the worker and simcloud stopped — unless an
    event of the phase is not final: then they stay, and the dispatcher keeps routing the
    action to them (a webhook worker must not run it), until the suite ends."""
    fs = ctx.stack
    final = all(
        (row := statuses.get(eid)) is not None and row["status"] in accounting.FINAL
        for eid in posted
    )
    if posted and not final:
        ctx.log("  events of the phase not final: its worker, simcloud and routing stay")
        return
    queue = fs.topology.actions_queue_of(PROFILE).name
    with contextlib.suppress(AssertionError):
        wait_until(lambda: fs.depths([queue])[queue] == 0, 30, 0.5, what=f"{queue} drained")
    if fs.dispatcher_env:
        fs.reconfigure_dispatcher()
    if worker is not None:
        worker.stop()
    simcloud.stop()
