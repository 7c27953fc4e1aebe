"""The elasticity worker's admin API over HTTP: /status and the operations routes, with
the in-memory doubles (no broker, no processes)."""

from __future__ import annotations

from scheduler.elasticity.admin import create_admin_app
from scheduler.elasticity.engine import Engine
from scheduler.elasticity.model import Backlog, ProfileConfig
from scheduler.elasticity.tracker import WorkerTracker
from tests.asgi import call, get
from tests.unit.elasticity_doubles import Clock, FakeControl, InMemoryProvider


def make() -> tuple[Engine, WorkerTracker, Clock]:
    clock = Clock()
    tracker = WorkerTracker(app=None)
    engine = Engine(
        configs={"default": ProfileConfig(name="default")},
        budget=1,
        provider=InMemoryProvider(),
        tracker=tracker,
        control=FakeControl(),  # type: ignore[arg-type]
        queue_of=lambda p: f"q.{p}",
        backlog_of=lambda p, running: Backlog(100),
        clock=clock,
    )
    return engine, tracker, clock


def test_status_explains_each_profile() -> None:
    engine, tracker, clock = make()
    app = create_admin_app(engine, dry_run=False)
    engine.tick()
    [name] = engine.handles
    tracker.on_event({"type": "worker-heartbeat", "hostname": name, "active": 1}, clock.now)
    clock.now += 5
    engine.tick()
    body = get(app, "/status").json()
    assert (body["ready"], body["dry_run"], body["budget"]) == (True, False, 1)
    profile = body["profiles"]["default"]
    assert profile["config"] == {
        "name": "default",
        "min_workers": 1,
        "max_workers": 4,
        "concurrency": 1,
        "target_latency": 10.0,
        "default_action_seconds": 1.0,
        "tolerance": 0.1,
        "scale_up_window": 0.0,
        "scale_down_window": 30.0,
        "scale_up_utilisation": 0.8,
        "scale_down_utilisation": 0.2,
    }
    assert next(iter(profile["config"])) == "name"  # as /status has always shown it
    assert profile["workers"] == [{"name": name, "state": "busy", "since": 1000.0, "pid": None}]
    assert profile["counts"] == {"booting": 0, "idle": 0, "busy": 1, "draining": 0, "lost": 0}
    assert (profile["backlog"], profile["desired"]) == (100, 1)
    last = profile["decisions"][-1]
    assert (last["allotted"], last["blocked_by"], last["workers"]["busy"]) == (
        1,
        None,
        1,
    )
    assert [e["kind"] for e in profile["events"]] == ["spawned"]


def test_readyz_and_metrics() -> None:
    engine, tracker, clock = make()
    app = create_admin_app(engine, dry_run=True)
    assert get(app, "/healthz").json() == {"status": "ok"}
    not_ready = get(app, "/readyz")
    assert (not_ready.status_code, not_ready.json()) == (
        503,
        {"status": "below the minimum of workers"},
    )
    engine.dry_run = False
    engine.tick()
    [name] = engine.handles
    tracker.on_event({"type": "worker-heartbeat", "hostname": name, "active": 0}, clock.now)
    assert get(app, "/readyz").json() == {"status": "ready"}
    metrics = get(app, "/metrics").text
    assert 'carousel_desired_workers{profile="default"} 1.0' in metrics
    assert 'carousel_backlog{profile="default"} 100.0' in metrics
    assert 'carousel_workers{profile="default",state="idle"} 1.0' in metrics


def test_with_views_closed_status_needs_the_token_and_health_stays_open() -> None:
    engine, _, _ = make()
    app = create_admin_app(engine, dry_run=False, views_token="s3cret")
    refused = get(app, "/status")
    assert (refused.status_code, refused.headers["www-authenticate"]) == (401, "Bearer")
    assert (
        call(app, "GET", "/status", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    )
    assert get(app, "/healthz").status_code == 200


def test_the_backlog_and_the_counts_beside_it_are_from_one_instant() -> None:
    """/status's backlog, desired and counts are the last decision's observation, with
    its time: a worker that changed state since shows in the live list only."""
    engine, tracker, clock = make()
    app = create_admin_app(engine, dry_run=False)
    engine.tick()
    [name] = engine.handles
    tracker.on_event({"type": "worker-heartbeat", "hostname": name, "active": 0}, clock.now)
    clock.now += 5
    engine.tick()  # decided with the worker idle
    decided_at = clock.now
    clock.now += 2
    tracker.on_event({"type": "worker-heartbeat", "hostname": name, "active": 1}, clock.now)
    profile = get(app, "/status").json()["profiles"]["default"]
    assert profile["observed_at"] == decided_at
    assert profile["counts"]["idle"] == 1 and profile["counts"]["busy"] == 0
    assert profile["workers"][0]["state"] == "busy"
    assert profile["decisions"][-1]["workers"] == profile["counts"]


def test_history_draws_each_decision_s_pool_against_its_backlog() -> None:
    """/history: one sample per decision (one per step at most), the workers by state the
    decision saw, its backlog and target, oldest first; ``seconds`` looks back less."""
    engine, tracker, clock = make()
    app = create_admin_app(engine, dry_run=False)
    engine.tick()  # spawns: the worker boots
    first = clock.now
    [name] = engine.handles
    tracker.on_event({"type": "worker-heartbeat", "hostname": name, "active": 1}, clock.now)
    clock.now += 3  # the same step: this decision replaces the first one's sample
    engine.tick()
    clock.now += 600
    tracker.on_event({"type": "worker-heartbeat", "hostname": name, "active": 1}, clock.now)
    engine.tick()
    body = get(app, "/history").json()
    assert (body["window_seconds"], body["step_seconds"]) == (3600, 10)
    samples = body["profiles"]["default"]["samples"]
    assert samples == [
        {
            "at": first + 3,
            "workers": {"booting": 0, "idle": 0, "busy": 1, "draining": 0, "lost": 0},
            "backlog": 100,
            "desired": 1,
        },
        {
            "at": clock.now,
            "workers": {"booting": 0, "idle": 0, "busy": 1, "draining": 0, "lost": 0},
            "backlog": 100,
            "desired": 1,
        },
    ]
    recent = get(app, "/history?seconds=60").json()["profiles"]["default"]["samples"]
    assert [s["at"] for s in recent] == [clock.now]


def test_history_refuses_a_bad_seconds_naming_it() -> None:
    engine, _, _ = make()
    app = create_admin_app(engine, dry_run=False)
    for bad in ("0", "3601", "-5", "an-hour", "1.5"):
        refused = get(app, f"/history?seconds={bad}")
        assert refused.status_code == 422, bad
        assert [e["loc"] for e in refused.json()["detail"]] == [["query", "seconds"]]
    assert get(app, "/history?seconds=3600").status_code == 200
    assert get(app, "/history?seconds=1").json()["profiles"] == {"default": {"samples": []}}


def test_with_views_closed_history_needs_the_token() -> None:
    engine, _, _ = make()
    app = create_admin_app(engine, dry_run=False, views_token="s3cret")
    refused = get(app, "/history")
    assert (refused.status_code, refused.headers["www-authenticate"]) == (401, "Bearer")
    allowed = call(app, "GET", "/history", headers={"Authorization": "Bearer s3cret"})
    assert allowed.status_code == 200
    assert (
        call(app, "GET", "/history?seconds=0", headers={"Authorization": "Bearer nope"}).status_code
        == 401
    )  # the token first, then the query
