"""The ``consumer-timeout`` fault: heads held past the broker's ``consumer_timeout``.

RabbitMQ closes a channel (PRECONDITION_FAILED) one of whose deliveries stayed unacked
past ``consumer_timeout``. The dispatcher holds each key's head unacked while its VM is
busy or unavailable, while the dispatcher is paused, or while the key waits its turn, and
hands every held head back each ``HEAD_REFRESH_INTERVAL`` (one ``basic.nack``, multiple,
requeue). This fault shortens the private node's ``consumer_timeout`` to
:data:`SHORT_TIMEOUT` (channels then judge their deliveries every :data:`TICK_MS`) and, under the
steady load, holds heads for :data:`HOLD` — several times that — in three ways: the
dispatcher paused; a VM busy with an action the receiver holds, events queued behind it;
a host unavailable. Then the broker's own values come back.

A runtime ``application:set_env(rabbit, consumer_timeout, N)`` reaches only channels
opened after it: a channel reads the value once, when it opens (a channel opened before
keeps its timeout; :func:`channel_judged` shows a channel opened after gets the short
one). So the dispatcher is restarted after the change, with ``HEAD_REFRESH_INTERVAL`` at
:data:`REFRESH`, and again after the values are restored; the workers, connected
before, keep the broker's timeout (an action outlasting it is a documented gap, not this
fault's subject).

What it checks itself: the phase's dispatcher log shows no ``broker session ended`` nor
``PRECONDITION_FAILED`` — each sub-phase that does is a *violation*, with the log lines
as evidence. Every event stays accounted by the suite as usual. Its note says how many
hand-backs each sub-phase saw and how many heads they held at most (a sub-phase that held
no head proved nothing), and how many deliveries the broker timed out during the phase.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import amqp
import httpx

from harness.faults.accounting import VIOLATION, Anomaly
from harness.faults.base import RECOVERY_TIMEOUT, Ctx, FaultResult
from harness.faults.stack import FaultStack
from harness.private_broker import PrivateBroker
from harness.processes import wait_until
from harness.recorder import RUNNING, Call

#: the broker's consumer_timeout during the phase, in seconds
SHORT_TIMEOUT = 5.0
#: how often channels judge their deliveries' age during the phase, in ms (RabbitMQ's
#: ``channel_tick_interval``; its default is a minute)
TICK_MS = 1000
#: the dispatcher's HEAD_REFRESH_INTERVAL during the phase: well below SHORT_TIMEOUT
REFRESH = 1.0
#: how long heads are held in each sub-phase: several times SHORT_TIMEOUT
HOLD = 3 * SHORT_TIMEOUT
#: events posted behind the busy VM's action, and onto the unavailable host
BEHIND = 4
#: what the dispatcher logs when its broker session ends, and the broker's reason
SESSION_ENDED = ("broker session ended", "PRECONDITION_FAILED")
HANDED_BACK = re.compile(r"handed (\d+) held heads back")
#: the broker's log line for a delivery it timed out
BROKER_TIMED_OUT = "has timed out waiting for delivery acknowledgement"
#: a harness-side failure of the worker connections (they must keep the long timeout)
WORKER_CLOSED = "PRECONDITION_FAILED"


def consumer_timeout(ctx: Ctx, refresh: float = REFRESH) -> FaultResult:
    """The fault (see the module's docstring); ``refresh`` is the dispatcher's
    HEAD_REFRESH_INTERVAL for the phase: one larger than :data:`SHORT_TIMEOUT` shows the
    check failing."""
    res = FaultResult("heads held past consumer_timeout")
    fs = ctx.stack
    broker_log = fs.broker.base / "log" / f"{fs.broker.name}.log"
    marks: Marks | None = None
    slices: list[Slice] = []
    dispatcher_log: Path | None = None
    try:
        with broker_env(
            fs.broker, consumer_timeout=int(SHORT_TIMEOUT * 1000), channel_tick_interval=TICK_MS
        ):
            before = Marks(broker_log, [])
            if channel_judged(fs, SHORT_TIMEOUT + 3 * TICK_MS / 1000) is None:
                raise AssertionError(
                    "a channel opened after the change held a delivery past the short "
                    "consumer_timeout and the broker did not close it: it is not in force"
                )
            wait_until(lambda: before.grown(BROKER_TIMED_OUT), 30, what="the probe's log line")
            ctx.log(f"  consumer_timeout {SHORT_TIMEOUT:g} s in force (a probe channel closed)")
            marks = Marks(broker_log, [w.log_path for w in fs.live_workers()])
            dispatcher_log = fs.reconfigure_dispatcher(
                HEAD_REFRESH_INTERVAL=f"{refresh:g}"
            ).log_path
            wait_until(lambda: fs.stats()["active"], 60, what="the restarted dispatcher active")
            slices.append(Slice("startup", time.time(), 0))
            try:
                for name, hold in (("pause", _pause), ("busy-vm", _busy_vm), ("host-down", _host)):
                    slices.append(Slice(name, time.time(), _size(dispatcher_log)))
                    res.recoveries.append(hold(ctx))
                    res.injected += 1
            finally:
                slices.append(Slice("end", time.time(), _size(dispatcher_log)))
    finally:
        if dispatcher_log is not None:  # the broker's values are back: the dispatcher's
            fs.reconfigure_dispatcher()  # channels must get them too, and its own settings
    res.anomalies = session_ends(dispatcher_log, slices)
    seen = held_heads(dispatcher_log, slices)
    assert marks is not None
    timed_out, workers = marks.grown(BROKER_TIMED_OUT), marks.grown(WORKER_CLOSED, workers=True)
    res.note = (
        f"refresh {refresh:g} s, timeout {SHORT_TIMEOUT:g} s; hand-backs (most heads): "
        + ", ".join(f"{k} {n} ({most})" for k, (n, most) in seen.items())
        + f"; broker timed out {timed_out} deliveries"
    )
    if workers:
        res.note += f"; WORKER CHANNELS CLOSED {workers}x (they must keep the long timeout)"
    if idle := [k for k, (_, most) in seen.items() if not most and k != "startup"]:
        res.note += f"; NO HEAD HANDED BACK in {idle}"
    ctx.log(f"  {res.note}")
    return res


# -- the three holds -----------------------------------------------------------------
def _pause(ctx: Ctx) -> float | None:
    """Pause the dispatcher (the admin API) for :data:`HOLD`, under the load, then resume."""
    url = ctx.stack.stack.dispatcher_url
    httpx.post(f"{url}/pause", timeout=10).raise_for_status()
    injected = time.time()
    try:
        ctx.load.post(ctx.load.make(BEHIND), "load")  # a few heads held for sure
        time.sleep(HOLD)  # the fault's duration: heads held paused
    finally:
        httpx.post(f"{url}/resume", timeout=10).raise_for_status()
    restored = time.time()
    ctx.log(f"  paused {restored - injected:.1f} s")
    return ctx.recovery(injected, restored)


def _busy_vm(ctx: Ctx) -> float | None:
    """An action the receiver holds :data:`HOLD` s, and :data:`BEHIND` events for the
    same VM behind it (on its key and the VM's other policies' keys)."""
    host, vm, policy = ctx.rng.choice(ctx.load.keys)
    keys = [k for k in ctx.load.keys if k[:2] == (host, vm)]
    [busy] = ctx.load.post(ctx.load.make(1, {"hold": HOLD}, key=(host, vm, policy)), "load")

    def started() -> Call | None:
        return next((c for c in ctx.stack.receiver.calls() if c.event_id == busy), None)

    call = wait_until(started, RECOVERY_TIMEOUT, 0.05, what=f"the held action of {busy} started")
    assert call is not None
    injected = call.started
    behind = [e for k in keys for e in ctx.load.make(BEHIND // len(keys) or 1, key=k)]
    ctx.load.post(behind, "load")
    wait_until(lambda: call.outcome != RUNNING, HOLD + 30, 0.1, what=f"{busy}'s call ended")
    restored = call.ended or time.time()
    ctx.log(f"  {host}/{vm} busy {restored - injected:.1f} s ({busy}, {call.outcome})")
    return _recovery(ctx, injected, restored, "host = :host AND vm = :vm", host=host, vm=vm)


def _host(ctx: Ctx) -> float | None:
    """A host unavailable (the producer's mapping API) for :data:`HOLD`, then back."""
    host = ctx.rng.choice(sorted({k[0] for k in ctx.load.keys}))
    url = f"{ctx.stack.stack.producer_url}/hosts/{host}/availability"
    httpx.put(url, json={"available": False}, timeout=10).raise_for_status()
    injected = time.time()
    try:
        keys = [k for k in ctx.load.keys if k[0] == host]
        ctx.load.post([e for k in keys[:BEHIND] for e in ctx.load.make(1, key=k)], "load")
        time.sleep(HOLD)  # the fault's duration: the host's heads held
    finally:
        httpx.put(url, json={"available": True}, timeout=10).raise_for_status()
    restored = time.time()
    ctx.log(f"  {host} unavailable {restored - injected:.1f} s")
    return _recovery(ctx, injected, restored, "host = :host", host=host)


def _recovery(
    ctx: Ctx, injected: float, restored: float, where: str, **params: Any
) -> float | None:
    """Seconds from ``injected`` until an event matching ``where`` was dispatched at or
    after ``restored`` (None: not within RECOVERY_TIMEOUT)."""

    def resumed() -> bool:
        [(at,)] = ctx.stack.ledger.rows(
            f"SELECT max(dispatched_at) FROM events WHERE {where}", **params
        )
        return float(at or 0.0) >= restored

    try:
        wait_until(resumed, RECOVERY_TIMEOUT, 0.1, what="dispatching there again")
    except AssertionError:
        ctx.log(f"  no dispatch where {where} {params} within {RECOVERY_TIMEOUT:.0f} s")
        return None
    return time.time() - injected


# -- the broker's settings and the dispatcher --------------------------------------------
@contextlib.contextmanager
def broker_env(broker: PrivateBroker, **values: int) -> Iterator[None]:
    """Set the ``rabbit`` application's ``values`` on the running node, and put back
    what was there (or unset what was not) on the way out."""
    before = {k: _ctl(broker, f"application:get_env(rabbit, {k}).").strip() for k in values}
    _ctl(broker, " ".join(f"application:set_env(rabbit, {k}, {v})," for k, v in values.items()))
    try:
        yield
    finally:
        restore = [
            f"application:set_env(rabbit, {k}, {old[4:-1]}),"
            if old.startswith("{ok,")
            else f"application:unset_env(rabbit, {k}),"
            for k, old in before.items()
        ]
        _ctl(broker, " ".join(restore))


def _ctl(broker: PrivateBroker, expression: str) -> str:
    """``rabbitmqctl eval`` an Erlang expression (a trailing comma becomes ``ok.``)."""
    if expression.endswith(","):
        expression += " ok."
    out = broker.ctl("eval", expression)
    if out is None:
        raise AssertionError(f"rabbitmqctl eval {expression!r} failed")
    return out


def channel_judged(fs: FaultStack, bound: float) -> float | None:
    """Open a channel, take one delivery and hold it unacked: seconds until the broker
    closed the channel for it (None: not within ``bound``)."""
    queue = f"faults.consumer-timeout-probe-{uuid.uuid4().hex[:8]}"
    with fs.amqp() as conn:
        channel = conn.channel()
        channel.queue_declare(queue, exclusive=True, auto_delete=True)
        channel.basic_publish(amqp.Message(b"probe"), routing_key=queue)
        held: list[amqp.Message] = []
        channel.basic_consume(queue, callback=held.append)
        began = time.monotonic()
        while time.monotonic() - began < bound:
            try:
                conn.drain_events(timeout=0.2)
            except TimeoutError:
                continue
            except conn.channel_errors:
                return time.monotonic() - began if held else None
    return None


# -- what the logs show --------------------------------------------------------------------
@dataclass(frozen=True)
class Slice:
    """A sub-phase: its name, when it began, and where the dispatcher's log stood then."""

    name: str
    at: float
    offset: int


def _size(path: Path) -> int:
    with contextlib.suppress(OSError):
        return path.stat().st_size
    return 0


def _pieces(log: Path, slices: list[Slice]) -> Iterator[tuple[Slice, list[str]]]:
    """Each sub-phase (all but the closing mark) with its lines of ``log``."""
    text = log.read_bytes()
    for s, nxt in itertools.pairwise(slices):
        yield s, text[s.offset : nxt.offset].decode(errors="replace").splitlines()


def session_ends(log: Path | None, slices: list[Slice]) -> list[Anomaly]:
    """A violation for each sub-phase whose dispatcher log shows its session ending."""
    if log is None:
        return []
    out = []
    for s, lines in _pieces(log, slices):
        ended = [ln for ln in lines if any(m in ln for m in SESSION_ENDED)]
        if ended:
            evidence = " | ".join(ln[:300] for ln in ended[:3])
            out.append(
                Anomaly(
                    VIOLATION,
                    f"consumer-timeout/{s.name}",
                    s.at,
                    f"the dispatcher's broker session ended {len(ended)}x with heads held "
                    f"past consumer_timeout ({log.name}): {evidence}",
                )
            )
    return out


def held_heads(log: Path | None, slices: list[Slice]) -> dict[str, tuple[int, int]]:
    """Per sub-phase: the hand-backs the dispatcher logged and the most heads one held."""
    if log is None:
        return {}
    out = {}
    for s, lines in _pieces(log, slices):
        counts = [int(m.group(1)) for ln in lines if (m := HANDED_BACK.search(ln))]
        out[s.name] = (len(counts), max(counts, default=0))
    return out


class Marks:
    """Where the broker's and the workers' logs stood when the phase began."""

    def __init__(self, broker_log: Path, worker_logs: list[Path]) -> None:
        self.broker_log = broker_log
        self.worker_logs = worker_logs
        self.at: dict[Path, int] = {p: _size(p) for p in [broker_log, *worker_logs]}

    def grown(self, needle: str, workers: bool = False) -> int:
        """Lines with ``needle`` written since, in the broker's log (or the workers')."""
        paths = self.worker_logs if workers else [self.broker_log]
        return sum(_count(p, self.at[p], needle) for p in paths)


def _count(path: Path, offset: int, needle: str) -> int:
    with contextlib.suppress(OSError), open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace").count(needle)
    return 0
