"""Carousel's command line: post events, run a demo burst, watch events drain, show or
cancel events, see the system's status or its live board, wait until it is ready.

Every command reads the services' addresses and the token from options or the
environment (CAROUSEL_PRODUCER_URL, CAROUSEL_DISPATCHER_URL, CAROUSEL_ELASTICITY_URL,
CAROUSEL_API_TOKEN); an address not given is this machine at the port the service reads
(PRODUCER_PORT, ...). Exit codes: 0 done (every watched event succeeded), 1 some failed,
2 bad input, 3 timed out, 4 a service unreachable or refusing, 5 a service not ready
(`status`)."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape

from carousel_cli import ready as readiness
from carousel_cli import top as toplive
from carousel_cli import views, watching
from carousel_cli.client import Client, Endpoints
from carousel_cli.errors import NOT_READY, SERVICE, TIMED_OUT, CliError, InputError
from carousel_cli.events import DEMO_ACTIONS, Burst, Event, read_events, slices
from shared.addresses import PORTS, local_url

#: what `carousel --help` ends with
EXIT_CODES = (
    "Exit codes: 0 done (every watched event succeeded, or every service ready); 1 some "
    "events failed or are unknown; 2 bad input; 3 timed out; 4 a service unreachable or "
    "refusing; 5 a service not ready (status)."
)

app = typer.Typer(
    help=__doc__.split("\n\n")[0] if __doc__ else None,
    epilog=EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)


def _url_option(envvar: str, what: str, port: str) -> Any:
    return typer.Option(
        envvar=envvar,
        help=f"{what} Default: http://127.0.0.1:${port[0]} (port {port[1]} if unset).",
        show_default=False,
    )


@app.callback()
def common(
    ctx: typer.Context,
    producer_url: Annotated[
        str, _url_option("CAROUSEL_PRODUCER_URL", "The producer's REST API.", PORTS["producer"])
    ] = "",
    dispatcher_url: Annotated[
        str,
        _url_option("CAROUSEL_DISPATCHER_URL", "The dispatcher's admin API.", PORTS["dispatcher"]),
    ] = "",
    elasticity_url: Annotated[
        str,
        _url_option("CAROUSEL_ELASTICITY_URL", "The elasticity admin API.", PORTS["elasticity"]),
    ] = "",
    token: Annotated[
        str,
        typer.Option(
            envvar="CAROUSEL_API_TOKEN",
            help="Bearer token, if the APIs need one.",
            show_default=False,
        ),
    ] = "",
) -> None:
    ctx.obj = Endpoints(
        producer=(producer_url or local_url("producer")).rstrip("/"),
        dispatcher=(dispatcher_url or local_url("dispatcher")).rstrip("/"),
        elasticity=(elasticity_url or local_url("elasticity")).rstrip("/"),
        token=token,
    )


def _run(ctx: typer.Context, body: Callable[[Client], int]) -> None:
    """Run ``body`` with a client; a CliError becomes one line and its exit code."""
    try:
        with Client(ctx.obj) as client:
            code = body(client)
    except CliError as exc:
        err.print(f"[bold red]carousel:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.code) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise typer.Exit(code)


def _follow(client: Client, ids: Sequence[str], timeout: float, as_json: bool) -> int:
    statuses = watching.watch(client.progress, ids, err if as_json else out, timeout)
    failed = [i for i, s in statuses.items() if s in ("failed", watching.NOT_FOUND)][:20]
    errors = {
        i: "the producer knows no such event"
        if statuses[i] == watching.NOT_FOUND
        else str((client.event(i) or {}).get("error") or "")
        for i in failed
    }
    code = watching.outcome(statuses)
    if as_json:
        print(json.dumps({"statuses": statuses, "errors": errors, "exit": code}))
    else:
        out.print(watching.table(statuses))
        if errors:
            out.print(watching.failures(errors))
        if code == 3:
            err.print(
                f"[yellow]timed out after {timeout:.0f} s[/]; `carousel watch` goes on",
                soft_wrap=True,
            )
    return code


@app.command()
def post(
    ctx: typer.Context,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="A .json file (an event or a list) or a .csv one."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="The compute host.")] = None,
    vm: Annotated[str | None, typer.Option(help="The VM.")] = None,
    policy: Annotated[
        str | None,
        typer.Option(help="The policy raising it (required, as in the REST API and files)."),
    ] = None,
    action: Annotated[str | None, typer.Option(help="heal, migrate, pause, ... ")] = None,
    event_id: Annotated[
        str | None, typer.Option("--id", help="Idempotency key (generated if absent).")
    ] = None,
    payload: Annotated[str | None, typer.Option(help="A JSON object.")] = None,
    watch: Annotated[bool, typer.Option(help="Follow the events to the end.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to watch at most.")] = 300.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Post one event (from the options) or a file of them; print the accepted ids.

    One event needs --host, --vm, --policy and --action, as the REST API and a file's
    events do: the policy is part of the event's queue (host, VM, policy) and of what a
    re-post of its id must match."""

    def body(client: Client) -> int:
        events = read_events(file) if file else [_one(host, vm, policy, action, event_id, payload)]
        ids = client.post(events)
        _keep(ids)
        if as_json and not watch:
            print(json.dumps({"ids": ids}))
        elif not as_json:
            out.print(
                f"accepted {len(ids)} event(s): {' '.join(ids[:10])}"
                + (" …" if len(ids) > 10 else "")
            )
        return _follow(client, ids, timeout, as_json) if watch else 0

    _run(ctx, body)


def _keep(ids: Sequence[str]) -> None:
    problem = watching.save_last_batch(ids)
    if problem:
        err.print(f"[yellow]{escape(problem)}[/]", highlight=False, soft_wrap=True)


def _one(
    host: str | None,
    vm: str | None,
    policy: str | None,
    action: str | None,
    event_id: str | None,
    payload: str | None,
) -> Event:
    given = (("host", host), ("vm", vm), ("policy", policy), ("action", action))
    missing = [f"--{n}" for n, v in given if not v]
    if missing:
        raise InputError(f"give {', '.join(missing)} (or --file)")
    event: Event = {"host": host, "vm": vm, "policy": policy, "action": action}
    if event_id:
        event["id"] = event_id
    if payload:
        try:
            event["payload"] = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise InputError(f"--payload is not JSON: {exc.msg}") from None
    return event


@app.command()
def demo(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(min=1, help="How many events.")] = 200,
    duration: Annotated[float, typer.Option(min=0, help="Seconds to spread them over.")] = 1.0,
    hosts: Annotated[int, typer.Option(min=1, help="Hosts h1..hN.")] = 3,
    vms: Annotated[int, typer.Option(min=1, help="VMs per host, hN-vm1..hN-vmM.")] = 4,
    policies: Annotated[str, typer.Option(help="Comma-separated policies.")] = "demo",
    actions: Annotated[str, typer.Option(help="Comma-separated actions.")] = ",".join(DEMO_ACTIONS),
    seed: Annotated[int | None, typer.Option(help="Pick actions at random with this seed.")] = None,
    watch: Annotated[bool, typer.Option(help="Follow the burst to the end.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to watch at most.")] = 300.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Post a burst spread over hosts and VMs, then watch it drain.

    The defaults target the VMs of the demo cloud (simcloud: 3 hosts of 4 VMs, h1-vm1 ...)
    with actions it runs on any healthy VM, so that against `make up` or compose every
    event ends `succeeded`. With DRIVER=simulated any names work."""

    def body(client: Client) -> int:
        run = f"demo-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:4]}"
        burst = Burst(
            events=events,
            hosts=hosts,
            vms_per_host=vms,
            policies=_listed(policies, "--policies"),
            actions=_listed(actions, "--actions"),
            run=run,
            seed=seed,
        ).make()
        ids: list[str] = []
        start = time.monotonic()
        for offset, part in slices(burst, duration):
            time.sleep(max(0.0, start + offset - time.monotonic()))
            ids += client.post(part)
        _keep(ids)
        took = time.monotonic() - start
        target = f"{hosts} host(s) x {vms} VM(s)"
        if not as_json:
            out.print(f"posted {len(ids)} events ({run}-*) over {took:.1f} s to {target}")
        elif not watch:
            print(json.dumps({"ids": ids}))
        return _follow(client, ids, timeout, as_json) if watch else 0

    _run(ctx, body)


def _listed(value: str, option: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise InputError(f"{option} is empty")
    return items


@app.command("watch")
def watch_command(
    ctx: typer.Context,
    ids: Annotated[
        list[str] | None,
        typer.Argument(help="Event ids (with --batch: a batch file); none: the last batch."),
    ] = None,
    batch: Annotated[
        bool,
        typer.Option(
            "--batch",
            help="Read the ids from the batch file given (JSON with `ids`, as post and demo "
            "write them), or from the last post or demo's.",
        ),
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to watch at most.")] = 300.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Follow events until each has succeeded, failed or been cancelled, with a live
    progress bar.

    `carousel watch ID ...` follows those events; `carousel watch` or `carousel watch
    --batch` the last `post` or `demo` (its ids are kept in
    $XDG_CACHE_HOME/carousel/last-batch.json); `carousel watch --batch FILE` the ids of
    a batch file. At the end, a table of the counts by status and why each failed event
    failed. An id the producer does not know is `not found` after 5 s. Exit code: 0 all
    succeeded (or were cancelled), 1 some failed or not found, 3 timed out."""

    def body(client: Client) -> int:
        if batch and len(ids or []) > 1:
            raise InputError("--batch takes one batch file")
        if batch or not ids:
            chosen = watching.load_batch(Path(ids[0]) if ids else None)
        else:
            chosen = list(ids)
        if not chosen:
            raise InputError("no event ids to watch")
        return _follow(client, chosen, timeout, as_json)

    _run(ctx, body)


@app.command()
def cancel(
    ctx: typer.Context,
    ids: Annotated[list[str], typer.Argument(help="Event ids.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Cancel events not yet dispatched: each ends `cancelled` and never runs.

    An event dispatched already (dispatched, running or finished) is not cancelled: its
    status is printed instead. Works while no dispatcher runs. Exit code: 0 every event
    cancelled (now or before), 1 some dispatched already or unknown."""

    def body(client: Client) -> int:
        said = {event_id: client.cancel(event_id) for event_id in ids}
        if as_json:
            print(json.dumps({"statuses": said}))
        for event_id, status_ in said.items():
            if as_json:
                break
            if status_ == "cancelled":
                out.print(f"{escape(event_id)}: cancelled", highlight=False)
            elif status_ == "unknown":
                out.print(f"[red]{escape(event_id)}: no such event[/]", highlight=False)
            else:
                out.print(
                    f"[yellow]{escape(event_id)}: {status_} already, not cancelled[/]",
                    highlight=False,
                )
        return 0 if all(s == "cancelled" for s in said.values()) else 1

    _run(ctx, body)


@app.command()
def show(
    ctx: typer.Context,
    ids: Annotated[list[str], typer.Argument(help="Event ids.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show events: status, key, action, times, error, and for a queued one what holds
    it (its place in its key, a busy VM, a limit, its class, a pause...).

    Exit code: 0 every event found, 1 some unknown."""

    def body(client: Client) -> int:
        found = {event_id: client.event(event_id) for event_id in ids}
        if as_json:
            print(json.dumps({"events": found}))
        else:
            for event_id, event in found.items():
                if event is None:
                    out.print(f"[red]{escape(event_id)}: no such event[/]", highlight=False)
                else:
                    out.print(views.event(event))
        return 0 if all(e is not None for e in found.values()) else 1

    _run(ctx, body)


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Readiness, the dispatcher's counters and each worker pool with its decisions.

    The services' /readyz, the dispatcher's limits and counters, with dispatcher shards
    each shard (its partitions, share, events in flight, demand and lease left; "shards"
    in --json, null with a single dispatcher), and each elasticity pool: its workers by
    state, backlog, target, and the last scaling decisions with why.

    Exit code: 0 every service ready, 4 one unreachable, 5 one not ready (each one's
    reason is printed, also on stderr)."""

    def body(client: Client) -> int:
        ends: Endpoints = ctx.obj
        urls = {
            "producer": ends.producer,
            "dispatcher": ends.dispatcher,
            "elasticity": ends.elasticity,
        }
        ready = {name: (url, client.ready(url)) for name, url in urls.items()}
        stats = _maybe(client.stats) if ready["dispatcher"][1] != "unreachable" else None
        # dispatcher shards: each one, from the ledger (a single dispatcher: no "mode" or
        # "single", and no shards)
        sharded = stats is not None and stats.get("mode") == "shards"
        shards = _maybe(client.shards) if sharded else None
        pools = _maybe(client.elasticity) if ready["elasticity"][1] != "unreachable" else None
        if as_json:
            print(
                json.dumps(
                    {
                        "ready": {k: v[1] for k, v in ready.items()},
                        "dispatcher": stats,
                        "shards": shards,
                        "elasticity": pools,
                    }
                )
            )
        else:
            out.print(views.readiness(ready))
            if stats is not None:
                out.print(views.dispatcher(stats))
            if shards is not None:
                out.print(views.shards(shards))
            if pools is not None:
                out.print(views.pools(pools))
        return _readiness_code(ready)

    _run(ctx, body)


@app.command()
def top(
    ctx: typer.Context,
    search: Annotated[
        str,
        typer.Option(
            help='Only the hosts whose name, or "host/vm", contains this text (case sensitive).'
        ),
    ] = "",
    hosts: Annotated[
        int, typer.Option(min=1, max=500, help="Hosts listed, most backlog first.")
    ] = 10,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between frames.")] = 2.0,
    once: Annotated[bool, typer.Option(help="Print one frame and exit (for scripts).")] = False,
) -> None:
    """The carousel live: hosts by backlog, what runs, and why the rest waits.

    The dispatcher's board (GET /board), refreshed in place every --interval seconds
    until Ctrl-C: its state, whether it is paused, in flight of its global cap, the
    dispatch rate and the totals; the hosts with most backlog; the VMs that run or wait,
    with each policy's head and why it waits (as many as fit the terminal); the last
    dispatches in the round-robin's order. With many hosts, --search narrows.

    Exit code: 0 (also on Ctrl-C); 4 the dispatcher unreachable or refusing at the first
    call. Once a frame is shown, a failed refresh is said above the last board and the
    next one is tried after --interval: a dispatcher restarting does not end the view."""

    def body(client: Client) -> int:
        try:
            board = client.board(search, hosts)
            if once:
                rows = _fitting(board) if out.is_terminal else toplive.ROWS_WITHOUT_TERMINAL
                out.print(toplive.frame(board, rows))
                return 0
            _live(client, board, search, hosts, interval)
        except KeyboardInterrupt:
            pass
        return 0

    _run(ctx, body)


def _fitting(board: dict[str, Any]) -> int:
    """The VM rows that fit this terminal beside the hosts ``board`` lists."""
    return toplive.fit(out.size.height, len(board.get("hosts") or []))


def _live(client: Client, board: dict[str, Any], search: str, hosts: int, wait: float) -> None:
    """Refresh ``board`` in place every ``wait`` seconds until Ctrl-C; a failed refresh
    is said above the last board, and the next is tried."""
    problem: str | None = None
    with Live(console=out, auto_refresh=False, vertical_overflow="ellipsis") as live:
        while True:
            live.update(toplive.frame(board, _fitting(board), problem=problem), refresh=True)
            time.sleep(wait)
            try:
                board, problem = client.board(search, hosts), None
            except CliError as exc:
                problem = f"{exc}; trying again every {wait:g} s"


@app.command()
def ready(
    ctx: typer.Context,
    flower_url: Annotated[
        str,
        typer.Option(
            envvar="CAROUSEL_FLOWER_URL",
            help="Flower. Default: http://127.0.0.1:$FLOWER_PORT (port 5555 if unset).",
            show_default=False,
        ),
    ] = "",
    simcloud_url: Annotated[
        str, typer.Option(envvar="SIMCLOUD_URL", help="simcloud, the demo cloud.")
    ] = "http://127.0.0.1:8100",
    flower_auth: Annotated[
        str,
        typer.Option(
            envvar="FLOWER_BASIC_AUTH", help="Flower's user:password, to show.", show_default=False
        ),
    ] = "",
    dispatchers: Annotated[
        int,
        typer.Option(
            envvar="CAROUSEL_DISPATCHERS",
            min=1,
            help="How many dispatchers to wait for. More than one are shards started together "
            "on this machine (make up SHARDS=N), at the first ports of DISPATCHER_PORT_SPAN: "
            "DISPATCHER_PORT, then the next ones up past the other services' ports.",
        ),
    ] = 1,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most.")] = 120.0,
    hold: Annotated[
        bool,
        typer.Option(
            help="Keep waiting past --timeout, and keep running once done (honcho, which "
            "runs it under `make up`, stops everything once one process exits)."
        ),
    ] = False,
) -> None:
    """Wait until every service answers ready, then print where each is.

    The producer, the dispatcher (or each of --dispatchers shards), the elasticity worker,
    Flower and simcloud; then one block with their addresses, the API reference and
    Flower's login (the first user:password of FLOWER_BASIC_AUTH). `make up` runs it
    beside the services. Exit
    code: 0 all ready, 3 some not within --timeout (each with what it last said)."""

    def body(client: Client) -> int:
        shown = readiness.services(
            ctx.obj,
            (flower_url or local_url("flower")).rstrip("/"),
            simcloud_url.rstrip("/"),
            flower_auth,
            readiness.shard_urls(dispatchers, os.environ) if dispatchers > 1 else (),
        )

        def ask(service: readiness.Service) -> str:
            return client.ready(service.url, service.check)

        waiting = readiness.wait(ask, shown, timeout)
        if waiting:
            said = readiness.not_ready(waiting, timeout)
            err.print(escape(said), highlight=False, soft_wrap=True)
            if not hold:
                return TIMED_OUT
            readiness.wait(ask, shown, float("inf"))
        # plain text: a terminal's width does not apply to honcho's pipe
        print(readiness.banner(shown), flush=True)
        if hold:
            threading.Event().wait()  # until honcho's SIGTERM, or Ctrl-C
        return 0

    _run(ctx, body)


def _readiness_code(ready: dict[str, tuple[str, str]]) -> int:
    """0 if every service is ready; else say which are not, and why, on stderr: 4 if one
    is unreachable, else 5."""
    not_ready = {name: said for name, (_, said) in ready.items() if said != "ready"}
    for name, said in not_ready.items():
        err.print(f"[red]{name} not ready:[/] {escape(said)}", highlight=False, soft_wrap=True)
    if not not_ready:
        return 0
    return SERVICE if "unreachable" in not_ready.values() else NOT_READY


def _maybe(call: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    try:
        return call()
    except CliError as exc:
        err.print(f"[yellow]{escape(str(exc))}[/]", highlight=False, soft_wrap=True)
        return None


def main() -> None:
    app(prog_name="carousel")


if __name__ == "__main__":
    main()
