"""The `carousel` command line's pure parts: reading event files (and saying where they
are wrong), the demo burst, the watch loop on a fake clock, the summaries and exit
codes, the one-line refusals; `carousel ready`'s wait and banner; and its argument
errors (typer's runner, no service). `carousel status` with dispatcher shards asks a
dispatcher's real /shards route, served on loopback over a ledger."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from rich.console import Console
from typer.testing import CliRunner

from carousel_cli import ready, views, watching
from carousel_cli.client import Endpoints, _validation
from carousel_cli.errors import InputError
from carousel_cli.events import Burst, read_events, slices
from carousel_cli.main import app
from scheduler.dispatcher.shard_admin import shard_views
from shared.addresses import local_url
from shared.names import NAME_RULE, is_valid_name
from shared.shard_view import cluster
from shared.store import Store
from tests.asgi import served
from tests.unit.test_shard_view import PARTITIONS, two_shards


# -- files ---------------------------------------------------------------------------
def test_a_json_file_holds_one_event_a_list_or_a_batch(tmp_path: Path) -> None:
    one = {"host": "h1", "vm": "h1-vm1", "policy": "ops", "action": "heal"}
    for body in (one, [one, one], {"events": [one]}):
        path = tmp_path / "e.json"
        path.write_text(json.dumps(body))
        assert read_events(path)[0] == one


def test_a_csv_file_has_a_header_and_json_payloads(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text(
        'host,vm,policy,action,id,payload\nh1,v1,p,heal,,"{""a"": 1}"\nh2,v2,p,stop,x,\n'
    )
    assert read_events(path) == [
        {"host": "h1", "vm": "v1", "policy": "p", "action": "heal", "payload": {"a": 1}},
        {"host": "h2", "vm": "v2", "policy": "p", "action": "stop", "id": "x"},
    ]


@pytest.mark.parametrize(
    ("name", "text", "said"),
    [
        ("e.json", "[{", "e.json: line 1: not JSON"),
        ("e.json", "[]", "e.json: no events in it"),
        ("e.json", '[{"host": "h"}]', "e.json: event 1: missing vm, policy, action"),
        (
            "e.json",
            '{"host": "h", "vm": "v", "action": "heal", "policy": ""}',
            "e.json: event 1: missing policy",
        ),
        ("e.csv", "host,vm,action\nh,v,heal\n", "e.csv: line 2: missing policy"),
        ("e.csv", "host,vm,policy,action\nh,v,,heal\n", "e.csv: line 2: missing policy"),
        (
            "e.json",
            '[{"host": "h", "vm": "v", "policy": "p", "action": "a", "x": 1}]',
            "unknown field(s) x",
        ),
        (
            "e.json",
            '[{"host": "h", "vm": "v", "policy": "p", "action": "a", "payload": 3}]',
            "payload must be a JSON object",
        ),
        ("e.json", "3", "expected an event object or a list"),
        ("e.csv", "host,vm,colour\n", "e.csv: line 1: unknown column(s) colour"),
        ("e.csv", "host,vm,policy,action\nh,v,p,a\nh,,p,a\n", "e.csv: line 3: missing vm"),
        ("e.csv", "host,vm,policy,action,payload\nh,v,p,a,{nope\n", "line 2: payload is not JSON"),
    ],
)
def test_a_bad_file_is_refused_saying_where(
    tmp_path: Path, name: str, text: str, said: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        read_events(path)
    assert said in str(caught.value)


def test_a_missing_file_is_refused() -> None:
    with pytest.raises(InputError, match="No such file"):
        read_events(Path("/nonexistent/e.json"))


# -- the demo burst ------------------------------------------------------------------
def test_the_burst_spreads_over_every_host_and_vm_with_valid_unique_ids() -> None:
    events = Burst(events=24, hosts=3, vms_per_host=4, run="demo-1").make()
    assert {(e["host"], e["vm"]) for e in events[:12]} == {
        (f"h{h}", f"h{h}-vm{v}") for h in (1, 2, 3) for v in (1, 2, 3, 4)
    }
    assert [e["host"] for e in events[:3]] == ["h1", "h2", "h3"], "hosts take turns"
    ids = [e["id"] for e in events]
    assert len(set(ids)) == 24 and all(is_valid_name(i) for i in ids)
    assert {e["action"] for e in events} == {"heal", "update", "upgrade"}


def test_a_seeded_burst_is_the_same_every_time() -> None:
    one = Burst(events=50, seed=7).make()
    assert one == Burst(events=50, seed=7).make()
    assert one != Burst(events=50, seed=8).make()


def test_slices_cover_every_event_once_at_even_offsets() -> None:
    events = Burst(events=95).make()
    parts = list(slices(events, duration=1.0))
    assert [offset for offset, _ in parts] == [n / 10 for n in range(10)]
    assert [e for _, part in parts for e in part] == events
    assert list(slices(events, duration=0)) == [(0.0, events)]


# -- watching --------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_watch_polls_only_the_unfinished_until_all_are_done() -> None:
    rounds = [
        {"a": "queued", "b": "running", "c": "succeeded"},
        {"a": "running", "b": "failed"},
        {"a": "succeeded"},
    ]
    asked: list[list[str]] = []

    def poll(ids: Sequence[str]) -> dict[str, str]:
        asked.append(list(ids))
        return rounds[len(asked) - 1]

    clock = FakeClock()
    console = Console(file=io.StringIO())
    final = watching.watch(poll, ["a", "b", "c"], console, 60, 0.5, clock, clock.sleep)
    assert final == {"a": "succeeded", "b": "failed", "c": "succeeded"}
    assert asked == [["a", "b", "c"], ["a", "b"], ["a"]]
    assert watching.outcome(final) == 1


def test_watch_gives_up_at_its_timeout() -> None:
    clock = FakeClock()
    console = Console(file=io.StringIO())
    final = watching.watch(
        lambda ids: dict.fromkeys(ids, "queued"), ["a"], console, 5, 1, clock, clock.sleep
    )
    assert final == {"a": "queued"} and clock.now == 5
    assert watching.outcome(final) == 3


def test_an_id_the_producer_never_knows_is_not_found_after_a_grace() -> None:
    said = {"a": ["unknown", "queued", "succeeded"], "b": ["unknown"] * 100}

    def poll(ids: Sequence[str]) -> dict[str, str]:
        return {i: said[i].pop(0) if len(said[i]) > 1 else said[i][0] for i in ids}

    clock = FakeClock()
    console = Console(file=io.StringIO())
    final = watching.watch(poll, ["a", "b"], console, 60, 1, clock, clock.sleep, 5)
    assert final == {"a": "succeeded", "b": watching.NOT_FOUND}
    assert clock.now == 5, "given up once unknown for the grace, not at the timeout"
    assert watching.outcome(final) == 1


def test_cancelled_is_an_end_and_not_a_failure() -> None:
    clock = FakeClock()
    console = Console(file=io.StringIO())
    final = watching.watch(
        lambda ids: dict.fromkeys(ids, "cancelled"), ["a"], console, 60, 1, clock, clock.sleep
    )
    assert final == {"a": "cancelled"} and clock.now == 0
    assert watching.outcome({"a": "succeeded", "b": "cancelled"}) == 0
    assert watching.outcome({"a": "failed", "b": "cancelled"}) == 1
    assert watching.describe(watching.summary({"a": "cancelled", "b": "failed"})) == (
        "failed 1 · cancelled 1"
    )


def test_watch_shows_what_holds_the_queued_events() -> None:
    busy = watching.Seen("queued", "VM busy", "VM v busy with a (1/1 per VM)")
    rounds: list[dict[str, str | watching.Seen]] = [
        {
            "a": "running",
            "b": busy,
            "c": watching.Seen("queued", "behind in its key", "2nd in its key: behind b"),
            "d": watching.Seen("queued", "behind in its key", "2nd in its key: behind x"),
        },
        {"a": "succeeded", "b": busy, "c": "running", "d": "succeeded"},
        {"b": "succeeded", "c": "succeeded"},
    ]
    shown = io.StringIO()
    clock = FakeClock()
    console = Console(file=shown, width=200)
    final = watching.watch(
        lambda ids: rounds.pop(0), ["a", "b", "c", "d"], console, 1, 1, clock, clock.sleep
    )
    assert final == {"a": "succeeded", "b": "queued", "c": "running", "d": "succeeded"}
    assert "queued 1 (VM v busy with a (1/1 per VM))" in shown.getvalue()  # the last round
    first = {"b": ("VM busy", ""), "c": ("behind in its key", ""), "d": ("behind in its key", "")}
    counts = watching.summary({"a": "running", "b": "queued", "c": "queued", "d": "queued"})
    assert watching.describe(counts, first) == (
        "queued 3 (behind in its key 2, VM busy 1) · running 1"
    )


def test_the_waiting_line_shows_the_most_common_reasons() -> None:
    reasons = {str(i): (f"kind{i % 5}", "t") for i in range(20)}
    reasons.update({"x": ("kind0", "t"), "y": ("kind0", "t"), "z": ("kind1", "t")})
    assert watching.waiting_line(reasons) == "kind0 6, kind1 5, kind2 4, 2 other reasons"
    assert watching.waiting_line({}) == ""


def test_show_renders_what_holds_a_queued_event() -> None:
    shown = io.StringIO()
    Console(file=shown, width=200).print(
        views.event(
            {
                "id": "e1",
                "status": "queued",
                "host": "h",
                "vm": "v",
                "policy": "p",
                "action": "heal",
                "accepted_at": 0.0,
                "attempts": 0,
                "waiting": {
                    "reason": "paused",
                    "text": "the dispatcher is paused",
                    "source": "ledger",
                },
            }
        )
    )
    text = shown.getvalue()
    assert "the dispatcher is paused (ledger)" in text
    assert "host h, vm v, policy p" in text


def test_the_summary_reads_in_the_events_path_order() -> None:
    counts = watching.summary({"a": "failed", "b": "queued", "c": "queued", "d": "succeeded"})
    assert watching.describe(counts) == "queued 2 · succeeded 1 · failed 1"
    assert watching.outcome({"a": "succeeded"}) == 0


def test_the_last_batch_is_kept_for_watch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(InputError, match="post or demo first"):
        watching.load_batch()
    assert watching.save_last_batch(["x-1", "x-2"]) is None
    assert watching.load_batch() == ["x-1", "x-2"]
    (tmp_path / "junk.json").write_text("[]")
    with pytest.raises(InputError, match="not a batch file"):
        watching.load_batch(tmp_path / "junk.json")


def test_an_unwritable_cache_does_not_fail_the_post(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in the image, whose user has no writable home: the events were accepted, the
    ids just cannot be kept for `carousel watch`."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "below-a-file"))
    problem = watching.save_last_batch(["x-1"])
    assert problem is not None and "could not keep the ids" in problem


# -- status ----------------------------------------------------------------------------
def test_runs_of_alike_decisions_fold_so_a_scale_up_stays_in_view() -> None:
    def decision(at: float, backlog: int, reason: str, spawn: int = 0) -> dict[str, object]:
        said = {"reason": reason, "target": 4, "spawn": spawn, "retire": 0}
        return {"at": at, "backlog": backlog, **said}

    decisions = [
        decision(0, 200, "backlog 200 asks for 20, capped at the maximum 4", spawn=3),
        *(decision(5 * n, 200 - 20 * n, "steady") for n in range(1, 10)),
        decision(50, 0, "the scale-down window holds 4"),
        decision(55, 0, "the scale-down window holds 4"),
    ]
    runs = views.decision_runs(decisions)
    assert [(r.spawn, r.count, r.backlog) for r in runs] == [
        (3, 1, "200"),
        (0, 9, "180 → 20"),
        (0, 2, "0"),
    ]
    assert runs[-1].at == 55, "a run shows its newest decision's time"
    spawns = [decision(n, 1, "up", spawn=1) for n in range(2)]
    assert len(views.decision_runs(spawns)) == 2, "decisions that act are never folded"


def test_the_dispatcher_state_and_limits_read_as_words() -> None:
    assert views.dispatcher_state({"active": True, "connected": True}) == "active"
    standby = {"active": False, "standby": True, "paused": True, "ledger_ok": False}
    assert views.dispatcher_state(standby) == (
        "standby (another dispatcher leads), paused, ledger failing"
    )
    no_broker = {
        "active": False,
        "standby": False,
        "connected": False,
        "not_ready": "not connected to the broker: ConnectionRefusedError (reconnecting)",
    }
    assert views.dispatcher_state(no_broker) == no_broker["not_ready"]
    limits = {"max_parallel": 10, "per_vm": 1, "per_host": 0, "other": 3}
    assert views.limits(limits) == "10 at once, 1 per VM, no per-host cap, other 3"
    assert "2 per host" in views.limits({"per_host": 2})


SHARDS = {
    "partitions": 4,
    "marker": {"holder": "shards", "expires_in": 8.0, "paused": True},
    "shards": [
        {
            "shard": "dispatcher-1",
            "started_at": 1733380000.0,
            "expires_in": 7.4,
            "demand": 12,
            "in_flight": 5,
            "partitions_held": [0, 1, 3],
            "seen_version": 2,
            "share": 6,
        },
        {
            "shard": "dispatcher-2",
            "started_at": 1733380001.0,
            "expires_in": 9.0,
            "demand": 0,
            "in_flight": 0,
            "partitions_held": [],
            "seen_version": None,
            "share": None,
        },
    ],
    "partition_leases": [
        {"partition": p, "holder": h, "expires_in": 7.0 if h else None, "token": 1}
        for p, h in enumerate(["dispatcher-1", "dispatcher-1", None, "dispatcher-1"])
    ],
    "share_tables": {
        "newest": {"version": 2, "shares": {"dispatcher-1": 6, "dispatcher-2": 4}},
        "agreed": {"version": 1, "shares": {"dispatcher-1": 10}},
    },
}


def cells(text: str) -> list[list[str]]:
    """The cells of each row of the tables in ``text`` (rich's box drawing), header too."""
    return [
        [cell.strip() for cell in line.strip("┃│ ").replace("┃", "│").split("│")]
        for line in text.splitlines()
        if line.startswith(("┃", "│"))
    ]


def test_the_shards_table_has_a_row_per_shard() -> None:
    console = Console(record=True, width=120)
    console.print(views.shards(SHARDS))
    text = console.export_text()
    said = "dispatcher shards: 2 live, 4 partitions (1 unheld), share table v2 (agreed v1), paused"
    assert said in text
    assert cells(text) == [
        ["shard", "partitions", "share", "in flight", "demand", "lease left"],
        ["dispatcher-1", "3", "6", "5", "12", "7.4 s"],
        ["dispatcher-2", "0", "-", "0", "0", "9.0 s"],
    ]


def test_status_shows_each_shard_when_the_dispatcher_runs_as_shards(tmp_path: Path) -> None:
    """A dispatcher whose /stats says ``mode: shards``: status asks its /shards too (with
    the token), prints a row per shard, and gives the cluster as ``shards`` in --json;
    a single dispatcher (no ``mode``) is not asked, ``shards`` is null."""
    store = Store.connect(f"sqlite:///{tmp_path / 'ledger.db'}")
    two_shards(store.engine)

    def read() -> dict[str, Any]:
        with store.engine.begin() as conn:
            return cluster(conn, PARTITIONS)

    stats: dict[str, Any] = {"mode": "shards", "active": True, "in_flight": 2, "held": 0}
    dispatcher = FastAPI()
    dispatcher.include_router(shard_views(read, "s3cret"))
    dispatcher.get("/stats")(lambda: stats)
    dispatcher.get("/readyz")(lambda: {"status": "ready"})
    nobody = "http://127.0.0.1:9"
    with served(dispatcher) as url:
        args = ["--producer-url", nobody, "--elasticity-url", nobody, "--dispatcher-url", url]
        args += ["--token", "s3cret", "status"]
        shown = CliRunner().invoke(app, [*args, "--json"])
        assert shown.exit_code == 4, shown.output  # the others are unreachable
        body = json.loads(shown.stdout)
        assert body["ready"]["dispatcher"] == "ready"
        assert [(s["shard"], s["partitions_held"]) for s in body["shards"]["shards"]] == [
            ("a", [0, 1]),
            ("b", [2, 3]),
        ]
        table = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
        said = "dispatcher shards: 2 live, 4 partitions, share table v1 (none agreed)"
        assert said in table.stdout, table.stdout
        rows = [row for row in cells(table.stdout) if row[0] in ("a", "b")]
        assert [row[:5] for row in rows] == [["a", "2", "6", "2", "3"], ["b", "2", "4", "0", "1"]]
        assert all(row[5].endswith(" s") for row in rows), rows
        del stats["mode"]  # a single dispatcher
        single = json.loads(CliRunner().invoke(app, [*args, "--json"]).stdout)
        assert single["shards"] is None and single["dispatcher"] == stats
    store.engine.dispose()


# -- refusals --------------------------------------------------------------------------
def test_a_validation_error_names_the_event_and_its_field_in_the_producers_words() -> None:
    body = {
        "detail": [
            {"loc": ["body", "EventBatchIn", "events", 2, "vm"], "msg": NAME_RULE},
            {"loc": ["body", "EventBatchIn", "events", 2, "policy"], "msg": "Field required"},
            {"loc": ["body", "EventBatchIn", "events"], "msg": "List should have at least 1"},
        ]
    }
    response = httpx.Response(422, json=body)
    assert _validation(response) == (
        f"event 3: vm: {NAME_RULE}; event 3: policy: Field required; "
        "events: List should have at least 1"
    )
    one = {"detail": [{"loc": ["body", "VmEventIn", "host"], "msg": NAME_RULE}]}
    assert _validation(httpx.Response(422, json=one)) == f"host: {NAME_RULE}"


# -- arguments (no service is called) ----------------------------------------------------
@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["post", "--host", "h1"], "give --vm, --policy, --action (or --file)"),
        (["post", "--host", "h", "--vm", "v", "--action", "heal"], "give --policy (or --file)"),
        (
            [
                *("post", "--host", "h", "--vm", "v", "--policy", "p"),
                *("--action", "heal", "--payload", "{x"),
            ],
            "--payload is not JSON",
        ),
        (["demo", "--policies", " , "], "--policies is empty"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args: list[str], said: str) -> None:
    nobody = "http://127.0.0.1:9"
    result = CliRunner().invoke(app, ["--producer-url", nobody, *args])
    assert result.exit_code == 2
    assert said in result.output and "Traceback" not in result.output


def test_watch_takes_ids_or_one_batch_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    nobody = ["--producer-url", "http://127.0.0.1:9"]
    for args in (["watch"], ["watch", "--batch"]):
        result = CliRunner().invoke(app, [*nobody, *args])
        assert result.exit_code == 2 and "post or demo first" in result.output
    result = CliRunner().invoke(app, [*nobody, "watch", "--batch", "a.json", "b.json"])
    assert result.exit_code == 2 and "--batch takes one batch file" in result.output
    batch = tmp_path / "batch.json"
    batch.write_text('{"ids": ["x-1"]}')
    # the file is read (then the producer is unreachable: exit 4, naming it)
    result = CliRunner().invoke(app, [*nobody, "watch", "--batch", str(batch)])
    assert result.exit_code == 4 and "cannot reach http://127.0.0.1:9" in result.output


def test_a_refusal_is_one_line_whatever_it_contains(tmp_path: Path) -> None:
    path = tmp_path / "[/x]" / ("long-" * 30 + ".json")
    result = CliRunner().invoke(app, ["post", "--file", str(path)])
    assert result.exit_code == 2
    assert result.output == f"carousel: {path}: No such file or directory\n"


def test_a_number_out_of_range_is_refused_by_the_parser() -> None:
    result = CliRunner().invoke(app, ["demo", "--events", "0"])
    assert result.exit_code == 2


# -- carousel ready ------------------------------------------------------------------


def test_each_url_defaults_to_this_machine_at_the_port_its_service_reads() -> None:
    assert local_url("producer", {}) == "http://127.0.0.1:8000"
    assert local_url("flower", {"FLOWER_PORT": "5601"}) == "http://127.0.0.1:5601"
    assert local_url("dispatcher", {"DISPATCHER_PORT": ""}) == "http://127.0.0.1:8001"


def test_ready_asks_only_the_services_not_ready_yet_until_all_are() -> None:
    shown = ready.services(Endpoints("p", "s", "e"), "f", "c", "")
    rounds = [{"p": "starting"}, {"p": "ready"}]
    asked: list[str] = []

    def ask(service: ready.Service) -> str:
        asked.append(service.url)
        return rounds[asked.count("p") - 1].get(service.url, "ready")

    clock = FakeClock()
    assert ready.wait(ask, shown, 60, 0.5, clock, clock.sleep) == {}
    assert asked == ["p", "s", "e", "f", "c", "p"] and clock.now == 0.5


def test_ready_gives_up_at_its_timeout_saying_what_each_said_last() -> None:
    shown = ready.services(Endpoints("p", "s", "e"), "f", "c", "")
    clock = FakeClock()
    said = {"e": "waiting for 1 worker", "f": "unreachable"}
    waiting = ready.wait(lambda s: said.get(s.url, "ready"), shown, 5, 1, clock, clock.sleep)
    assert waiting == {"elasticity": "waiting for 1 worker", "flower": "unreachable"}
    assert clock.now == 5
    assert ready.not_ready(waiting, 5) == (
        "not ready after 5 s: elasticity: waiting for 1 worker; flower: unreachable "
        "(its own log lines say why)"
    )


def test_the_banner_names_every_address_and_flowers_login() -> None:
    ends = Endpoints("http://127.0.0.1:8000", "http://127.0.0.1:8001", "http://127.0.0.1:8002")
    shown = ready.services(
        ends, "http://127.0.0.1:5555", "http://127.0.0.1:8100", "admin:s3cret-Pw,ops:other"
    )
    assert ready.banner(shown).splitlines() == [
        "Carousel is ready:",
        "  producer    http://127.0.0.1:8000   API reference http://127.0.0.1:8000/docs",
        "  dispatcher  http://127.0.0.1:8001/live   the live page",
        "  elasticity  http://127.0.0.1:8002/status",
        "  flower      http://127.0.0.1:5555   log in as admin, password s3cret-Pw",
        "  simcloud    http://127.0.0.1:8100/v1/state",
    ]


def test_the_banner_names_every_shard_make_up_started() -> None:
    """`make up SHARDS=2`: two dispatchers on the first two ports of their span, which
    passes over the elasticity worker's 8002."""
    ends = Endpoints("http://127.0.0.1:8000", "http://127.0.0.1:8001", "http://127.0.0.1:8002")
    shards = ready.shard_urls(2, {})
    assert shards == ["http://127.0.0.1:8001", "http://127.0.0.1:8003"]
    shown = ready.services(ends, "http://127.0.0.1:5555", "http://127.0.0.1:8100", "", shards)
    assert ready.banner(shown).splitlines()[1:5] == [
        "  producer      http://127.0.0.1:8000   API reference http://127.0.0.1:8000/docs",
        "  dispatcher-1  http://127.0.0.1:8001/live   the live page of shard 1 of 2",
        "  dispatcher-2  http://127.0.0.1:8003/live   the live page of shard 2 of 2",
        "  elasticity    http://127.0.0.1:8002/status",
    ]
    # ports moved in .env move them; a wider span still puts the shards on its first ports
    moved = {"DISPATCHER_PORT": "9100", "DISPATCHER_PORT_SPAN": "4", "PRODUCER_PORT": "9101"}
    assert ready.shard_urls(3, moved) == [
        "http://127.0.0.1:9100",
        "http://127.0.0.1:9102",
        "http://127.0.0.1:9103",
    ]
    # one dispatcher: the one row, at the dispatcher's own address
    one = ready.services(ends, "f", "c", "", ready.shard_urls(1, {}))
    assert [s.name for s in one] == ["producer", "dispatcher", "elasticity", "flower", "simcloud"]


@pytest.mark.parametrize("configured", ["", "  ", "admin", "admin:"])
def test_without_a_login_to_show_the_banner_points_at_flowers_log(configured: str) -> None:
    assert ready.login(configured) == "log in with the password it logged at start"


def test_ready_with_nothing_answering_times_out_naming_each_service() -> None:
    nobody = "http://127.0.0.1:9"
    urls = ["--producer-url", nobody, "--dispatcher-url", nobody, "--elasticity-url", nobody]
    result = CliRunner().invoke(
        app,
        [*urls, "ready", "--flower-url", nobody, "--simcloud-url", nobody, "--timeout", "0"],
    )
    assert result.exit_code == 3, result.output
    assert "not ready after 0 s: producer: unreachable;" in result.output
    assert "simcloud: unreachable" in result.output and "Carousel is ready" not in result.output
