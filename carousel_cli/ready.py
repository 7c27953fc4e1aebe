"""``carousel ready``: wait until every service answers ready, then print where each is,
in one short block: the APIs and their reference, Flower with its login, simcloud; with
several dispatchers on this machine (shards, `make up SHARDS=2`), each of them.

`make up` runs it beside the services (the Procfile's ``banner``), so that what a user
needs is said once, after the services' start-up lines. Waiting is :func:`wait`, driven by
a clock and a sleep it is given; the block is :func:`banner`, pure."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from carousel_cli.client import Endpoints
from shared.addresses import PORTS, dispatcher_ports

READY = "ready"


@dataclass(frozen=True)
class Service:
    """One service: its address, the path that answers 2xx once it is ready, the page a
    person opens first, and a note beside it."""

    name: str
    url: str
    check: str
    page: str = ""
    note: str = ""


def services(
    ends: Endpoints, flower: str, simcloud: str, flower_auth: str, shards: Sequence[str] = ()
) -> list[Service]:
    """The services `make up` runs, in the banner's order; with two or more ``shards``
    (their addresses: `make up SHARDS=N`), one row for each in place of the dispatcher's,
    numbered in the order of their ports (not honcho's dispatcher.1, dispatcher.2, ...:
    which one took which port is a race)."""
    dispatchers = [Service("dispatcher", ends.dispatcher, "/readyz", "/live", note="the live page")]
    if len(shards) > 1:
        dispatchers = [
            Service(
                f"dispatcher-{i}",
                url,
                "/readyz",
                "/live",
                note=f"the live page of shard {i} of {len(shards)}",
            )
            for i, url in enumerate(shards, 1)
        ]
    return [
        Service("producer", ends.producer, "/readyz", note=f"API reference {ends.producer}/docs"),
        *dispatchers,
        Service("elasticity", ends.elasticity, "/readyz", "/status"),
        # /healthcheck answers without the login
        Service("flower", flower, "/healthcheck", note=login(flower_auth)),
        Service("simcloud", simcloud, "/healthz", "/v1/state"),
    ]


def shard_urls(count: int, env: Mapping[str, str]) -> list[str]:
    """Where ``count`` dispatchers started together on this machine answer (`make up
    SHARDS=N`): each took the first free port of the same
    :func:`~shared.addresses.dispatcher_ports`, from ``env``'s DISPATCHER_PORT and
    DISPATCHER_PORT_SPAN (at least ``count``), so together they hold its first ``count``
    ports, unless something else holds one of them."""
    variable, default = PORTS["dispatcher"]
    first = int(env.get(variable) or default)
    span = max(count, int(env.get("DISPATCHER_PORT_SPAN") or 1))
    return [f"http://127.0.0.1:{port}" for port in dispatcher_ports(first, span, env)[:count]]


def wait(
    ask: Callable[[Service], str],
    pending: Sequence[Service],
    timeout: float,
    interval: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, str]:
    """Ask each service until it says :data:`READY` (a ready one is not asked again) or
    ``timeout`` seconds have passed; what each one still not ready said last (empty when
    all are ready)."""
    deadline = clock() + timeout
    left = list(pending)
    while True:
        said = {s.name: ask(s) for s in left}
        left = [s for s in left if said[s.name] != READY]
        if not left or clock() >= deadline:
            return {s.name: said[s.name] for s in left}
        sleep(interval)


def login(basic_auth: str) -> str:
    """Flower's first ``user:password`` of ``FLOWER_BASIC_AUTH``, as the banner shows it."""
    user, sep, password = basic_auth.split(",", 1)[0].partition(":")
    if not (sep and user.strip() and password):
        return "log in with the password it logged at start"
    return f"log in as {user.strip()}, password {password}"


def banner(shown: Sequence[Service]) -> str:
    """The block printed once everything is ready."""
    width = max(len(s.name) for s in shown) + 2
    lines = ["Carousel is ready:"]
    for s in shown:
        note = f"   {s.note}" if s.note else ""
        lines.append(f"  {s.name:<{width}}{s.url}{s.page}{note}")
    return "\n".join(lines)


def not_ready(waiting: Mapping[str, str], timeout: float) -> str:
    """What is printed when some service is not ready within ``timeout``."""
    said = "; ".join(f"{name}: {reason}" for name, reason in waiting.items())
    return f"not ready after {timeout:.0f} s: {said} (its own log lines say why)"
