"""The board (scheduler.dispatcher.board), pure, and its routes and page on the admin API
(scheduler.dispatcher.live), in process."""

from __future__ import annotations

from typing import Any

from scheduler.dispatcher import board as board_module
from scheduler.dispatcher.admin import create_admin_app
from scheduler.dispatcher.board import Backlog, Query, activity, board, state_words
from scheduler.dispatcher.dispatcher import Dispatcher, Limits
from scheduler.dispatcher.live import BacklogReader, Boards, Proxy
from scheduler.dispatcher.state import DispatcherState
from shared.models import Action, VmEventMessage
from tests.asgi import call
from tests.unit.admin_doubles import FakeSession


def _event(id_: str, host: str, vm: str, policy: str = "ops") -> VmEventMessage:
    return VmEventMessage(
        id=id_, host=host, vm=vm, policy=policy, action=Action.HEAL, accepted_at=0
    )


NONE = Backlog.of({})


def _dispatcher() -> Dispatcher[str]:
    d: Dispatcher[str] = Dispatcher(Limits(max_parallel=2, per_vm=1, per_host=0))
    for host, vms in {"h1": ["a", "b"], "h2": ["c"], "h3": ["d"]}.items():
        for vm in vms:
            d.add_key(host, vm, "ops")
    return d


def test_hosts_most_backlog_first_with_why_each_head_waits() -> None:
    d = _dispatcher()
    d.offer(_event("e1", "h2", "c"), "m1")
    assert d.pick(now=100.0) is not None  # e1 runs on h2/c
    d.offer(_event("e2", "h2", "c"), "m2")  # waits: its VM is busy
    d.offer(_event("e3", "h3", "d"), "m3")
    d.rr.set_vm_available("h3", "d", False)
    backlog = {("h2", "c", "ops"): 1, ("h3", "d", "ops"): 4}
    out = board(d, Backlog.of(backlog), now=101.0, query=Query())
    assert [h["host"] for h in out["hosts"]] == ["h3", "h2", "h1"]
    assert out["totals"] == {
        "hosts": 3,
        "vms": 4,
        "keys": 4,
        "backlog": 5,
        "held": 2,
        "in_flight": 1,
    }
    h3, h2, h1 = out["hosts"]
    assert h1["state"] == "idle" and h2["state"] == "busy" and h3["state"] == "waiting"
    (vm_d,) = h3["detail"]
    assert vm_d["state"] == "unavailable" and not vm_d["available"]
    (key_d,) = vm_d["policies"]
    assert key_d["head"] == "e3" and key_d["waiting"]["reason"] == "vm_unavailable"
    (vm_c,) = h2["detail"]
    assert vm_c["running"] == ["e1"] and vm_c["policies"][0]["head"] == "e2"
    assert "busy with e1" in vm_c["policies"][0]["waiting"]["text"]
    assert out["rate"]["dispatched_per_second"] == 0.1
    assert [x["event_id"] for x in out["dispatches"]] == ["e1"]


def test_paused_is_said_in_words() -> None:
    d = _dispatcher()
    d.offer(_event("e1", "h1", "a"), "m1")
    d.paused = True
    out = board(d, Backlog.of({("h1", "a", "ops"): 1}), now=0.0, query=Query())
    assert out["paused"] and out["hosts"][0]["state"] == "paused"
    assert out["hosts"][0]["detail"][0]["policies"][0]["waiting"]["reason"] == "paused"
    assert state_words({"paused": True}) == "active, paused"
    assert state_words({"standby": True}) == "standby (another dispatcher leads)"
    shard = {"name": "d-1", "serving": [0, 3, 5], "partitions": 16}
    assert state_words({"shard": shard}) == "active shard d-1, serving 3 of 16 partitions"
    assert activity(available=True, paused=True, in_flight=0, backlog=0) == "idle"


def test_search_narrows_to_a_host_or_a_vm() -> None:
    d = _dispatcher()
    by_host = board(d, NONE, 0.0, Query("h1"))
    assert [h["host"] for h in by_host["hosts"]] == ["h1"]
    assert [v["vm"] for v in by_host["hosts"][0]["detail"]] == ["a", "b"]
    by_vm = board(d, NONE, 0.0, Query("h1/b"))
    assert [v["vm"] for v in by_vm["hosts"][0]["detail"]] == ["b"]
    assert by_vm["hosts_matching"] == 1 and board(d, NONE, 0.0, Query("nope"))["hosts"] == []


def test_many_keys_stay_bounded(monkeypatch: Any) -> None:
    """However many keys, the board lists ``top`` hosts and details ``DETAIL_KEYS`` keys."""
    monkeypatch.setattr(board_module, "DETAIL_KEYS", 30)
    d: Dispatcher[str] = Dispatcher(Limits(10, 1, 0))
    for h in range(100):
        for v in range(20):
            d.add_key(f"h{h}", f"v{v}", "ops")
    backlog = {(f"h{h}", f"v{v}", "ops"): h for h in range(100) for v in range(20)}
    out = board(d, Backlog.of(backlog), 0.0, Query(top=5))
    assert out["totals"]["keys"] == 2000 and out["hosts_matching"] == 100
    assert [h["host"] for h in out["hosts"]] == ["h99", "h98", "h97", "h96", "h95"]
    shown = [h["vms_shown"] for h in out["hosts"]]
    assert shown == [20, 10, 0, 0, 0]
    assert out["hosts"][2]["detail"] is None


def test_backlog_is_read_at_most_once_a_second_and_survives_a_failing_ledger() -> None:
    reads: list[int] = []
    now = [0.0]

    def read() -> dict[tuple[str, str, str], int]:
        reads.append(1)
        if len(reads) == 3:
            raise OSError("ledger away")
        return {("h", "v", "p"): len(reads)}

    backlog = BacklogReader(read, max_age=1.0, clock=lambda: now[0])
    assert backlog().keys == {("h", "v", "p"): 1} and backlog().hosts == {"h": 1}
    now[0] = 0.5
    assert backlog().keys == {("h", "v", "p"): 1} and len(reads) == 1
    now[0] = 1.5
    assert backlog().keys == {("h", "v", "p"): 2}
    now[0] = 3.0
    assert backlog().keys == {("h", "v", "p"): 2} and backlog.error is not None
    now[0] = 4.5
    assert backlog().keys == {("h", "v", "p"): 4} and backlog.error is None


def _app(views_open: bool = True) -> Any:
    d = _dispatcher()
    d.offer(_event("e1", "h1", "a"), "m1")
    state: DispatcherState[Any] = DispatcherState(d)
    session = FakeSession()
    session.connected.set()
    return create_admin_app(
        state,
        session,
        token="s3cret",
        views_open=views_open,
        backlog=BacklogReader(lambda: {("h1", "a", "ops"): 1}),
        # nothing answers there: the page is told so, in words
        proxy=Proxy({"producer": "http://127.0.0.1:9", "elasticity": "http://127.0.0.1:9"}),
    )


def test_the_page_and_its_board_are_served() -> None:
    app = _app()
    page = call(app, "GET", "/live")
    assert page.status_code == 200 and "/live/assets/live.js" in page.text
    for asset in ("live.js", "live.css"):
        assert call(app, "GET", f"/live/assets/{asset}").status_code == 200
    root = call(app, "GET", "/")
    assert root.status_code == 307 and root.headers["location"] == "/live"
    out = call(app, "GET", "/board?q=h1").json()
    assert out["state"] == "active" and out["hosts"][0]["backlog"] == 1
    assert set(out["classes"]) == {"classes", "window"}
    monitor = call(app, "GET", "/board/monitor").json()
    assert monitor["ok"] is False and monitor["error"].startswith("unreachable")
    pool = call(app, "GET", "/board/pool").json()
    assert pool["status"]["ok"] is False and pool["history"]["ok"] is False
    assert call(app, "GET", "/board?top=0").status_code == 422


def test_the_views_need_the_token_when_they_are_closed_but_the_page_does_not() -> None:
    app = _app(views_open=False)
    assert call(app, "GET", "/live").status_code == 200
    for path in ("/board", "/board/pool", "/board/monitor", "/board/events/x"):
        assert call(app, "GET", path).status_code == 401, path
    ok = call(app, "GET", "/board", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200


def test_a_board_is_made_at_most_once_per_query_in_its_max_age() -> None:
    """However many pages poll, the dispatcher's lock is taken for one board per query
    every BOARD_MAX_AGE seconds."""
    made: list[Query] = []
    now = [0.0]

    def make(query: Query) -> dict[str, Any]:
        made.append(query)
        return {"n": len(made)}

    boards = Boards(make, max_age=0.5, clock=lambda: now[0])
    assert boards(Query()) == {"n": 1}
    now[0] = 0.4
    assert boards(Query()) == {"n": 1} and boards(Query("h1")) == {"n": 2}
    now[0] = 0.6
    assert boards(Query()) == {"n": 3} and len(made) == 3
