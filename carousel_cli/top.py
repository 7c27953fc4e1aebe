"""``carousel top``: one frame of the dispatcher's board (``GET /board``) — its state and
totals, the listed hosts by backlog, the VMs that run or wait with why each policy's head
waits, and the last dispatches in the order the round-robin made them.

Pure: a board in, a rich renderable out; the time shown is the board's own. Every state
is said in words (colour only repeats it), and the frame stays within the rows it is
given whatever the number of keys: what does not fit is counted, and ``--search`` is
named as the way to see it."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from carousel_cli.views import limits as limit_words

#: the colour that repeats a host's or a VM's state (the word is always shown)
STATE_STYLES: Mapping[str, str] = {
    "busy": "green",
    "waiting": "yellow",
    "paused": "red",
    "unavailable": "red",
    "idle": "dim",
}
#: the last dispatches shown, oldest first
DISPATCHES_SHOWN = 6
#: VM rows when the height of the screen is not known (``--once`` into a pipe)
ROWS_WITHOUT_TERMINAL = 30
#: the fewest VM rows a frame gives, however small the terminal
MIN_ROWS = 3
#: lines of a frame besides the rows of its three tables: the problem, the header (three
#: lines), and for each table a blank line, its title, its column names and their rule,
#: and under two of them a line (the hosts that match beyond those listed, the VM rows
#: not shown)
FRAME_LINES = 1 + 3 + 3 * 4 + 2


def fit(height: int, hosts: int, dispatches: int = DISPATCHES_SHOWN) -> int:
    """The VM rows that fit a terminal ``height`` lines high beside ``hosts`` host rows
    and ``dispatches`` dispatch rows (at least :data:`MIN_ROWS`)."""
    return max(MIN_ROWS, height - FRAME_LINES - max(hosts, 1) - max(dispatches, 1))


def frame(
    board: Mapping[str, Any],
    rows: int = ROWS_WITHOUT_TERMINAL,
    dispatches: int = DISPATCHES_SHOWN,
    problem: str | None = None,
) -> RenderableType:
    """The board as one frame: at most ``rows`` VM rows and ``dispatches`` dispatches.
    ``problem`` (the last call failed) is said above the board last shown."""
    parts: list[RenderableType] = []
    if problem:
        parts.append(Text(f"{problem} (showing the board of {_clock(board)})", style="bold red"))
    parts += [*header(board), hosts(board)]
    more = int(board.get("hosts_matching", 0)) - len(board.get("hosts") or [])
    if more > 0:
        parts.append(Text(f"{more} more host{_s(more)} match; --search narrows"))
    parts += vms(board, rows)
    parts.append(recent(board.get("dispatches") or [], float(board.get("at", 0.0)), dispatches))
    return Group(*parts)


def header(board: Mapping[str, Any]) -> list[RenderableType]:
    """``dispatcher active, not paused``; ``in flight 3 of 10 (1 per VM, no per-host cap) ·
    1.3 dispatched/s over the last 10 s``; the totals."""
    state = str(board.get("state") or "state unknown")
    paused = bool(board.get("paused"))
    if "paused" not in state:
        state += ", paused: nothing is dispatched until resumed" if paused else ", not paused"
    totals = board.get("totals") or {}
    use = board.get("limits") or {}
    cap = (use.get("max_parallel") or {}).get("limit")
    in_flight = totals.get("in_flight", (use.get("max_parallel") or {}).get("in_use"))
    caps = {n: (use.get(n) or {}).get("limit") for n in ("per_vm", "per_host")}
    said = limit_words({n: v for n, v in caps.items() if v is not None})
    rate = board.get("rate") or {}
    per_second = float(rate.get("dispatched_per_second") or 0.0)
    first = Text("dispatcher ")
    first.append(state, style="bold red" if paused or not state.startswith("active") else "bold")
    first.append(f"  (at {_clock(board)})")
    second = Text(
        f"in flight {in_flight}"
        + (f" of {cap}" if cap is not None else "")
        + (f" ({said})" if said else "")
        + f" · {per_second:.1f} dispatched/s"
        + (
            f" over the last {float(rate['window_seconds']):.0f} s"
            if rate.get("window_seconds")
            else ""
        )
    )
    third = Text(
        f"{totals.get('hosts', 0)} hosts · {totals.get('vms', 0)} VMs · "
        f"{totals.get('keys', 0)} keys · backlog {totals.get('backlog', 0)} · "
        f"held {totals.get('held', 0)}"
    )
    return [first, second, third]


def hosts(board: Mapping[str, Any]) -> Group:
    """The listed hosts, most backlog first (the board's order)."""
    listed = board.get("hosts") or []
    query = board.get("query") or ""
    matching = int(board.get("hosts_matching", len(listed)))
    which = f" matching {query!r}" if query else ""
    title = f"hosts by backlog: {len(listed)} of {matching}{which}"
    out = _table(("host", "state", "backlog", "held", "in flight", "VMs"))
    for host in listed:
        out.add_row(
            Text(str(host.get("host"))),
            _state(host),
            str(host.get("backlog", 0)),
            str(host.get("held", 0)),
            str(host.get("in_flight", 0)),
            str(host.get("vms", 0)),
        )
    if not listed:
        out.add_row(Text("no host matches" if query else "no hosts"), "", "", "", "", "")
    return _titled(title, out)


@dataclass(frozen=True)
class VmRow:
    """One row of the VMs table: a VM's policy (the VM's own cells on its first row)."""

    vm: Text
    state: Text
    running: str
    policy: str
    backlog: str
    head: str
    waits: Text


def vm_rows(board: Mapping[str, Any]) -> Iterator[VmRow]:
    """For each VM that runs or waits in the listed hosts (the board's order), a row per
    policy with a backlog or a held head; a VM that only runs has one row."""
    for host in board.get("hosts") or []:
        for vm in host.get("detail") or []:
            if not (vm.get("in_flight") or vm.get("backlog") or vm.get("held")):
                continue
            policies = [p for p in vm.get("policies") or [] if p.get("backlog") or p.get("held")]
            name = Text(f"{host.get('host')}/{vm.get('vm')}")
            first = True
            for policy in policies or [{}]:
                yield VmRow(
                    vm=name if first else Text(""),
                    state=_state(vm) if first else Text(""),
                    running=_running(vm.get("running") or []) if first else "",
                    policy=str(policy.get("policy", "")),
                    backlog=str(policy.get("backlog", "")),
                    head=_head(policy),
                    waits=_waits(policy),
                )
                first = False


#: the VM table's columns that keep their width (VM, state, policy, backlog), at most
#: SHORT_MAX wide; the event ids' columns are at most ID_MAX wide
SHORT_COLUMNS = (0, 1, 3, 4)
SHORT_MAX = 24
ID_MAX = 28


def _cells(row: VmRow) -> tuple[Text | str, ...]:
    return (row.vm, row.state, row.running, row.policy, row.backlog, row.head, row.waits)


def vms(board: Mapping[str, Any], rows: int) -> list[RenderableType]:
    """The VMs table (at most ``rows`` rows) and what it leaves out: the rows beyond it,
    and the listed hosts beyond the board's detail budget."""
    out = _table(("VM", "state", "running", "policy", "backlog", "head (class)", "waits because"))
    every = list(vm_rows(board))
    kept, left = every[:rows], len(every) - min(len(every), rows)
    # the short columns keep their width; the ids and the reason share what is left
    for i in SHORT_COLUMNS:
        widest = max((len(str(_cells(r)[i])) for r in kept), default=0)
        out.columns[i].min_width = min(SHORT_MAX, max(widest, len(str(out.columns[i].header))))
    out.columns[2].max_width = out.columns[5].max_width = ID_MAX
    out.columns[-1].overflow = "ellipsis"
    for row in kept:
        out.add_row(*_cells(row))
    shown = len(kept)
    if not shown:
        out.add_row(Text("nothing runs or waits"), "", "", "", "", "", "")
    parts: list[RenderableType] = [
        _titled("VMs that run or wait, and why each policy's head waits", out)
    ]
    notes = []
    if left:
        notes.append(f"{left} more row{_s(left)} not shown")
    hidden = sum(1 for h in board.get("hosts") or [] if h.get("detail") is None)
    if hidden:
        notes.append(f"the VMs of {hidden} listed host{_s(hidden)} not shown (too many keys)")
    if notes:
        parts.append(Text("; ".join(notes) + "; --search narrows"))
    return parts


def recent(dispatches: Sequence[Mapping[str, Any]], at: float, shown: int) -> Group:
    """The last ``shown`` dispatches, oldest first: the round-robin's order."""
    last = list(dispatches)[-shown:] if shown > 0 else []
    out = _table(("ago", "host", "VM", "policy", "action", "event"))
    for one in last:
        ago = at - float(one.get("at", at))
        out.add_row(
            f"{max(ago, 0.0):.0f} s",
            Text(str(one.get("host"))),
            Text(str(one.get("vm"))),
            Text(str(one.get("policy"))),
            Text(str(one.get("action"))),
            Text(str(one.get("event_id"))),
        )
    if not last:
        out.add_row("", Text("none yet"), "", "", "", "")
    title = f"last {len(last)} dispatches, oldest first (the round-robin's order)"
    return _titled(title, out)


def _table(columns: Sequence[str]) -> Table:
    out = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in columns:
        numeric = column in ("backlog", "held", "in flight", "VMs", "ago")
        out.add_column(column, justify="right" if numeric else "left", no_wrap=True)
    return out


def _titled(title: str, table: Table) -> Group:
    """``table`` under ``title``, a line of its own (a table's title wraps to the
    table's width)."""
    return Group(Text(""), Text(title, style="bold"), table)


def _state(item: Mapping[str, Any]) -> Text:
    word = str(item.get("state") or "unknown")
    return Text(word, style=STATE_STYLES.get(word, ""))


def _running(ids: Sequence[str]) -> str:
    return "" if not ids else str(ids[0]) + (f" +{len(ids) - 1}" if len(ids) > 1 else "")


def _head(policy: Mapping[str, Any]) -> str:
    head = policy.get("head")
    if not head:
        return ""
    return str(head) + (f" ({policy['class']})" if policy.get("class") else "")


def _waits(policy: Mapping[str, Any]) -> Text:
    waiting = policy.get("waiting")
    if waiting:
        return Text(str(waiting.get("text") or waiting.get("reason")))
    if policy.get("backlog") and not policy.get("head"):
        return Text("no head held by the dispatcher yet", style="dim")
    return Text("")


def _clock(board: Mapping[str, Any]) -> str:
    at = board.get("at")
    return "--:--:--" if at is None else time.strftime("%H:%M:%S", time.localtime(float(at)))


def _s(n: int) -> str:
    return "" if n == 1 else "s"
