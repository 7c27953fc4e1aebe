"""`carousel top`'s frame, rendered from sample boards (the shape of the dispatcher's
``GET /board``) to text: states in words, why each head waits, the round-robin's last
dispatches, and a frame that stays within its terminal however many keys the board has;
and its arguments refused before any call."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from carousel_cli import top
from carousel_cli.main import app

AT = 1733380000.0


def shown(board: dict[str, Any], **options: Any) -> str:
    console = Console(record=True, width=120)
    console.print(top.frame(board, **options))
    return console.export_text()


def vm(
    name: str, running: list[str], policies: list[dict[str, Any]], state: str = "busy"
) -> dict[str, Any]:
    return {
        "vm": name,
        "available": True,
        "in_flight": len(running),
        "running": running,
        "backlog": sum(p["backlog"] for p in policies),
        "held": sum(p["held"] for p in policies),
        "state": state,
        "policies": policies,
    }


def policy(name: str, backlog: int, head: str | None, why: str | None) -> dict[str, Any]:
    return {
        "policy": name,
        "backlog": backlog,
        "held": 1 if head else 0,
        "head": head,
        "class": "normal" if head else None,
        "waiting": {"reason": "vm_busy", "text": why, "source": "dispatcher"} if why else None,
    }


def host(name: str, backlog: int, state: str, detail: list[dict[str, Any]] | None) -> dict:
    vms = len(detail) if detail is not None else 5
    return {
        "host": name,
        "available": state != "unavailable",
        "vms": vms,
        "keys": vms,
        "backlog": backlog,
        "held": sum(v["held"] for v in detail or []),
        "in_flight": sum(v["in_flight"] for v in detail or []),
        "state": state,
        "vms_shown": vms if detail is not None else 0,
        "detail": detail,
    }


def board(hosts: list[dict[str, Any]], **changes: Any) -> dict[str, Any]:
    made: dict[str, Any] = {
        "at": AT,
        "state": "active",
        "paused": False,
        "totals": {"hosts": 3, "vms": 15, "keys": 16, "backlog": 40, "held": 12, "in_flight": 3},
        "rate": {"window_seconds": 10.0, "dispatched_per_second": 1.3},
        "limits": {
            "max_parallel": {"limit": 10, "in_use": 3},
            "per_vm": {"limit": 1, "max_in_use": 1, "busiest": "h1/h1-vm1", "at_limit": 1},
            "per_host": {"limit": 0, "max_in_use": 1, "busiest": "h1", "at_limit": 0},
            "per_action": {},
            "per_group": {},
        },
        "dispatches": [
            {
                "event_id": f"ev-{n}",
                "host": f"h{n % 3 + 1}",
                "vm": f"h{n % 3 + 1}-vm1",
                "policy": "ops",
                "action": "heal",
                "at": AT - 20 + n,
                "priority": 0,
            }
            for n in range(20)
        ],
        "query": "",
        "hosts_matching": len(hosts),
        "hosts": hosts,
    }
    return made | changes


def sample() -> dict[str, Any]:
    busy = "VM h1-vm1 has 1 of 1 actions in flight"
    h1 = host(
        "h1",
        20,
        "busy",
        [
            vm(
                "h1-vm1",
                ["ev-7"],
                [policy("ops", 6, "ev-9", busy), policy("sec", 2, "ev-11", busy)],
            ),
            vm("h1-vm2", [], [policy("ops", 3, None, None)], state="waiting"),
            vm("h1-vm3", [], [], state="idle"),
            vm("h1-vm4", ["ev-1", "ev-2", "ev-3"], []),
        ],
    )
    return board([h1, host("h2", 12, "unavailable", None), host("h3", 0, "idle", [])])


def test_the_header_says_the_dispatchers_state_its_flight_rate_and_totals_in_words() -> None:
    text = shown(sample())
    assert "dispatcher active, not paused" in text
    assert "in flight 3 of 10 (1 per VM, no per-host cap)" in text
    assert "1.3 dispatched/s over the last 10 s" in text
    assert "3 hosts · 15 VMs · 16 keys · backlog 40 · held 12" in text


@pytest.mark.parametrize(
    ("state", "paused", "said"),
    [
        ("active", True, "dispatcher active, paused: nothing is dispatched until resumed"),
        ("active, paused", True, "dispatcher active, paused "),
        ("standby (another dispatcher leads)", False, "standby (another dispatcher leads), not"),
        ("no broker session", False, "dispatcher no broker session, not paused"),
    ],
)
def test_paused_and_every_other_state_are_said_in_words(
    state: str, paused: bool, said: str
) -> None:
    assert said in shown(board([], state=state, paused=paused))


def test_hosts_list_with_their_state_in_words_most_backlog_first() -> None:
    lines = shown(sample()).splitlines()
    rows = [line.split() for line in lines if line.split()[:1] in (["h1"], ["h2"], ["h3"])]
    assert rows == [
        ["h1", "busy", "20", "2", "4", "4"],
        ["h2", "unavailable", "12", "0", "0", "5"],
        ["h3", "idle", "0", "0", "0", "0"],
    ]


def test_each_vm_that_runs_or_waits_shows_each_policys_head_and_why_it_waits() -> None:
    text = shown(sample())
    assert "h1/h1-vm1   busy      ev-7" in text
    assert "ev-9 (normal)    VM h1-vm1 has 1 of 1 actions in flight" in text
    assert "sec" in text and "ev-11 (normal)" in text, "a VM's second policy has its own row"
    assert "h1/h1-vm2   waiting" in text and "no head held by the dispatcher yet" in text
    assert "h1/h1-vm4   busy      ev-1 +2" in text, "a VM that only runs has one row"
    assert "h1-vm3" not in text, "an idle VM is not listed"
    assert "the VMs of 1 listed host not shown (too many keys); --search narrows" in text


def test_the_last_dispatches_show_oldest_first_in_the_round_robins_order() -> None:
    lines = shown(sample(), dispatches=4).splitlines()
    start = next(n for n, line in enumerate(lines) if "dispatches, oldest first" in line)
    rows = [line.split() for line in lines[start + 3 :] if line.strip()]
    assert [(r[0], r[2], r[-1]) for r in rows] == [
        ("4", "h2", "ev-16"),
        ("3", "h3", "ev-17"),
        ("2", "h1", "ev-18"),
        ("1", "h2", "ev-19"),
    ]


def test_an_empty_board_says_so() -> None:
    empty = board([], dispatches=[], totals={})
    text = shown(empty)
    assert "no hosts" in text and "nothing runs or waits" in text and "none yet" in text
    searched = shown(board([], query="h9", dispatches=[]))
    assert "hosts by backlog: 0 of 0 matching 'h9'" in searched and "no host matches" in searched


def test_a_failed_refresh_is_said_above_the_last_board() -> None:
    text = shown(sample(), problem="cannot reach http://x:8001 (ConnectError): is it running?")
    first = text.splitlines()[0]
    assert first.startswith("cannot reach http://x:8001") and "showing the board of" in first
    assert "h1/h1-vm1" in text


def many_keys(total_hosts: int, vms_per_host: int, listed: int, detailed: int) -> dict:
    """A board as the dispatcher makes it for ``total_hosts`` hosts of ``vms_per_host``
    busy VMs, each with a backlog: ``listed`` hosts, the first ``detailed`` with detail."""
    why = "VM has 1 of 1 actions in flight"

    def one(n: int) -> dict[str, Any]:
        name = f"host-{n:05d}"
        detail = [
            vm(f"{name}-vm{m}", [f"ev-{n}-{m}"], [policy("ops", 2, f"ev-{n}-{m}-b", why)])
            for m in range(vms_per_host)
        ]
        made = host(name, 2 * vms_per_host, "busy", detail if n < detailed else None)
        made["vms"] = vms_per_host
        return made

    made = board([one(n) for n in range(listed)], hosts_matching=total_hosts)
    made["totals"] = {
        "hosts": total_hosts,
        "vms": total_hosts * vms_per_host,
        "keys": total_hosts * vms_per_host,
        "backlog": 2 * total_hosts * vms_per_host,
        "held": total_hosts * vms_per_host,
        "in_flight": 10,
    }
    return made


@pytest.mark.parametrize("height", [24, 40, 60])
def test_a_board_of_20000_keys_stays_within_the_terminal(height: int) -> None:
    """2,000 hosts of 10 VMs, 10 hosts listed: the frame fits ``height`` lines, and says
    what it leaves out and how to see it."""
    big = many_keys(total_hosts=2000, vms_per_host=10, listed=10, detailed=10)
    text = shown(big, rows=top.fit(height, hosts=10))
    assert len(text.splitlines()) <= max(height, top.FRAME_LINES + 10 + top.MIN_ROWS + 6)
    assert "1990 more hosts match; --search narrows" in text
    assert "20000 keys" in text and "hosts by backlog: 10 of 2000" in text
    assert "more rows not shown; --search narrows" in text


def test_the_most_hosts_a_board_lists_stay_bounded_by_the_rows_given() -> None:
    """500 hosts listed (the board's most), the detail of the first 50 (500 keys): one
    line per host, and the VMs within ``rows``."""
    big = many_keys(total_hosts=2000, vms_per_host=10, listed=500, detailed=50)
    lines = shown(big, rows=20).splitlines()
    assert len(lines) <= top.FRAME_LINES + 500 + 20 + top.DISPATCHES_SHOWN
    text = "\n".join(lines)
    assert "the VMs of 450 listed hosts not shown (too many keys)" in text
    assert "480 more rows not shown" in text


def test_fit_leaves_the_fewest_rows_on_a_small_terminal() -> None:
    assert top.fit(10, hosts=10) == top.MIN_ROWS
    assert top.fit(100, hosts=10, dispatches=6) == 100 - top.FRAME_LINES - 16


def test_top_arguments_are_refused_before_any_call() -> None:
    nobody = ["--dispatcher-url", "http://127.0.0.1:9"]
    for args in (["--hosts", "0"], ["--hosts", "501"], ["--interval", "0"]):
        result = CliRunner().invoke(app, [*nobody, "top", *args])
        assert result.exit_code == 2, result.output
    result = CliRunner().invoke(app, [*nobody, "top", "--once"])
    assert result.exit_code == 4 and "cannot reach http://127.0.0.1:9" in result.output
    assert "Traceback" not in result.output
