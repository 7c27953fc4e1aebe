"""Tests for producer.monitoring.policies, the built-in kinds (producer.monitoring.kinds)
and .rules: the pure policies (explicit times), the validation of the policies file, and
kinds looked up by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from producer.monitoring.kinds.auto_heal import AutoHealConfig
from producer.monitoring.kinds.autoscale import AutoscaleConfig
from producer.monitoring.kinds.host_maintenance import HostMaintenanceConfig
from producer.monitoring.model import (
    GroupRecord,
    HostRecord,
    HostState,
    Intent,
    Observation,
    View,
    VmRecord,
    VmState,
    VmStateChanged,
)
from producer.monitoring.policies import Policies, PolicyFileError, load_rules, parse_rules
from producer.monitoring.raiser import as_event as raised_event
from producer.monitoring.rules import Rules
from producer.monitoring.updater import apply, diff
from shared.models import Action
from shared.names import is_valid_name
from shared.priority import Priority

ROOT = Path(__file__).resolve().parents[2]
A, D = VmState.ACTIVE, VmState.DOWN


def vm(name: str, **kw: Any) -> VmRecord:
    fields: dict[str, Any] = {
        "vm": name,
        "host": "h1",
        "state": A,
        "cpu": 0.5,
        "ram": 0.5,
        "group": None,
        "version": 1,
    }
    fields.update(kw)
    return VmRecord(**fields)


class Cloud:
    """A view fed through the real updater, with policies on top, as the runner does."""

    def __init__(self, *rules: Any, source: str = "sim") -> None:
        self.view = View()
        self.source = source
        self.policies = Policies(Rules(tuple(rules)), source)

    def see(self, at: float, *vms: VmRecord, **kw: Any) -> list[Intent]:
        o = Observation(at=at, full=False, vms=vms, **kw)
        d = diff(self.view, o)
        apply(self.view, d, o.at)
        return self.policies.on_changes(self.view, d.changes, at) + self.policies.tick(
            self.view, at
        )

    def tick(self, now: float) -> list[Intent]:
        return self.policies.tick(self.view, now)


HEAL = AutoHealConfig(name="auto-heal", debounce=15, ignore_repeat_within=180)


# -- auto-heal -------------------------------------------------------------------------
def test_down_then_due_gives_one_heal() -> None:
    c = Cloud(HEAL)
    assert c.see(0.0, vm("a")) == []
    assert c.see(100.0, vm("a", state=D, version=2)) == []
    assert c.policies.next_due() == 115.0
    assert c.tick(114.9) == []
    [heal] = c.tick(115.0)
    assert (heal.action, heal.host, heal.vm, heal.policy) == (Action.HEAL, "h1", "a", "auto-heal")
    assert heal.cause.version == 2 and heal.cause.at == 100.0
    assert heal.payload["cause"]["new"] == "DOWN" and heal.payload["source"] == "sim"
    assert is_valid_name(heal.id)
    assert c.tick(200.0) == [] and c.policies.next_due() is None


def test_a_policys_coalesce_goes_with_its_events_to_the_rest_field() -> None:
    """``coalesce`` in the policies file: each intent carries it, and the raiser posts
    it as the event's coalesce field (absent: COALESCE_POLICIES decides)."""
    rules = parse_rules(
        {"policies": [{"name": "auto-heal", "kind": "auto_heal", "debounce": 0, "coalesce": True}]},
        "policies.yaml",
    )
    c = Cloud(*rules.policies)
    c.see(0.0, vm("a"))
    [heal] = c.see(1.0, vm("a", state=D, version=2))
    assert heal.coalesce is True
    assert raised_event(heal).coalesce is True
    [plain] = Cloud(HEAL.model_copy(update={"debounce": 0})).see(0.0, vm("a", state=D))
    assert plain.coalesce is None and raised_event(plain).coalesce is None
    with pytest.raises(PolicyFileError, match=r"policies\[0\]\.coalesce"):
        parse_rules(
            {"policies": [{"name": "x", "kind": "auto_heal", "coalesce": "often"}]},
            "policies.yaml",
        )


def test_a_flap_inside_the_debounce_is_not_healed() -> None:
    c = Cloud(HEAL)
    c.see(0.0, vm("a"))
    c.see(100.0, vm("a", state=D, version=2))
    c.see(105.0, vm("a", state=A, version=3))  # a reboot: DOWN then ACTIVE
    assert c.tick(200.0) == []
    assert c.policies.flaps_suppressed == 1 and c.policies.pending() == 0


def test_a_vm_gone_while_down_is_not_healed() -> None:
    c = Cloud(HEAL)
    c.see(0.0, vm("a"))
    c.see(100.0, vm("a", state=D, version=2))
    c.see(105.0, gone_vms=("a",))
    assert c.tick(200.0) == [] and c.policies.flaps_suppressed == 1


def test_the_same_outage_gives_the_same_id_a_new_one_a_new_id() -> None:
    live = Cloud(HEAL)
    live.see(0.0, vm("a"))
    live.see(100.0, vm("a", state=D, version=2))
    [first] = live.tick(115.0)
    # a restarted producer finds the VM DOWN since 100 (its view came from the repository)
    again = Policies(Rules((HEAL,)), "sim")
    [restarted] = again.start(live.view, 300.0)
    assert restarted.id == first.id and restarted.cause.at == 100.0
    live.see(400.0, vm("a", state=A, version=3))
    live.see(500.0, vm("a", state=D, version=4))
    [second] = live.tick(515.0)
    assert second.id != first.id


def test_start_heals_only_when_due() -> None:
    c = Cloud(HEAL)
    c.see(100.0, vm("a", state=D), vm("b"))
    p = Policies(Rules((HEAL,)), "sim")
    assert p.start(c.view, 110.0) == []
    assert p.next_due() == 115.0
    [heal] = p.tick(c.view, 115.0)
    assert heal.vm == "a" and heal.cause == VmStateChanged("a", "h1", None, D, None, 1, 100.0)


def test_ignore_repeat_within() -> None:
    c = Cloud(HEAL)
    c.see(0.0, vm("a"))
    c.see(100.0, vm("a", state=D, version=2))
    [heal] = c.tick(115.0)
    c.policies.raised(heal, 116.0)
    c.see(150.0, vm("a", state=A, version=3))
    c.see(200.0, vm("a", state=D, version=4))  # DOWN again 84 s after the heal: left alone
    assert c.tick(1000.0) == [] and c.policies.repeats_ignored == 1
    c.see(1100.0, vm("a", state=A, version=5))
    c.see(1200.0, vm("a", state=D, version=6))  # long after: healed again
    assert [i.vm for i in c.tick(1215.0)] == ["a"]


def test_zero_debounce_and_no_repeat_window() -> None:
    c = Cloud(AutoHealConfig(name="heal-now", debounce=0, ignore_repeat_within=0))
    c.see(0.0, vm("a"))
    [heal] = c.see(10.0, vm("a", state=D, version=2))
    c.policies.raised(heal, 9.0)  # the raise's clock may trail the observation's
    c.see(11.0, vm("a", state=A, version=3))
    assert [i.vm for i in c.see(12.0, vm("a", state=D, version=4))] == ["a"]
    assert c.policies.repeats_ignored == 0


def test_invalid_names_are_skipped_and_counted() -> None:
    c = Cloud(AutoHealConfig(name="heal-now", debounce=0))
    intents = c.see(0.0, vm("bad/name", state=D), vm("good", state=D))
    assert [i.vm for i in intents] == ["good"] and c.policies.invalid == 1


# -- host maintenance --------------------------------------------------------------------
MAINT = HostMaintenanceConfig(name="host-maintenance")


def test_maintenance_migrates_every_vm_with_stable_ids() -> None:
    c = Cloud(MAINT)
    vms = [vm(f"vm{i}", host="h1") for i in range(10)]
    c.see(0.0, *vms, vm("other", host="h2"), hosts=(HostRecord("h1", HostState.UP, 1),))
    intents = c.see(10.0, hosts=(HostRecord("h1", HostState.MAINTENANCE, 2),))
    assert len(intents) == 10 and len({i.id for i in intents}) == 10
    assert {i.vm for i in intents} == {f"vm{i}" for i in range(10)}
    assert {(i.action, i.host, i.policy) for i in intents} == {
        (Action.LIVE_MIGRATE, "h1", "host-maintenance")
    }
    restarted = Policies(Rules((MAINT,)), "sim").start(c.view, 500.0)
    assert {i.id for i in restarted} == {i.id for i in intents}
    c.see(20.0, hosts=(HostRecord("h1", HostState.UP, 3),))
    again = c.see(30.0, hosts=(HostRecord("h1", HostState.MAINTENANCE, 4),))
    assert not {i.id for i in again} & {i.id for i in intents}  # a new maintenance


def test_cold_migrate_and_empty_host() -> None:
    c = Cloud(HostMaintenanceConfig(name="drain", action="migrate"))
    c.see(0.0, vm("a", host="h1"), hosts=(HostRecord("h2", HostState.UP, 1),))
    assert c.see(1.0, hosts=(HostRecord("h2", HostState.MAINTENANCE, 2),)) == []
    [i] = c.see(2.0, hosts=(HostRecord("h1", HostState.MAINTENANCE, 1),))
    assert i.action == Action.MIGRATE


# -- autoscale ---------------------------------------------------------------------------
SCALE = AutoscaleConfig(name="autoscale", high=0.8, low=0.2, cooldown=60)


def group_cloud(n: int = 2, lo: int = 1, hi: int = 4, cpu: float = 0.5) -> Cloud:
    c = Cloud(SCALE)
    web = GroupRecord("web", lo, hi, 1)
    assert c.see(0.0, *[vm(f"w{i}", group="web", cpu=cpu) for i in range(n)], groups=(web,)) == []
    return c


def test_busy_group_scales_out_once_then_cools_down() -> None:
    c = group_cloud()
    assert c.see(5.0, vm("w0", group="web", cpu=0.9, version=2)) == []  # mean 0.7
    [out] = c.see(10.0, vm("w1", group="web", cpu=0.9, version=2))
    assert (out.action, out.host, out.vm, out.policy) == (
        Action.SCALE_OUT,
        "vm-groups",
        "web",
        "autoscale",
    )
    assert out.payload["group"] == "web" and out.payload["members"] == 2
    assert out.payload["mean"] == 0.9 and out.cause.version == 2
    c.policies.raised(out, 11.0)
    assert c.see(20.0, vm("w1", group="web", cpu=0.99, version=3)) == []  # cooling down
    assert c.policies.next_due() == 71.0
    c.see(30.0, vm("w2", group="web", cpu=0.9))  # the new replica; still cooling down
    [again] = c.tick(71.0)  # the cooldown ends, the group is still busy
    assert again.action == Action.SCALE_OUT and again.id != out.id
    assert again.payload["members"] == 3


def test_same_change_is_not_asked_twice() -> None:
    c = group_cloud(n=1)
    [out] = c.see(10.0, vm("w0", group="web", cpu=1.0, version=2))
    # not raised (one was in flight, say): the group is evaluated again, same cause
    assert c.see(20.0, groups=(GroupRecord("web", 1, 5, 2),)) == []
    assert c.tick(100.0) == []
    restarted = Policies(Rules((SCALE,)), "sim").start(c.view, 200.0)
    assert [i.id for i in restarted] == [out.id]


def test_idle_group_scales_in_with_a_cooldown_too() -> None:
    c = group_cloud(n=3)
    [scale_in] = c.see(10.0, *[vm(f"w{i}", group="web", cpu=0.1, version=2) for i in range(3)])
    assert scale_in.action == Action.SCALE_IN
    c.policies.raised(scale_in, 10.0)
    assert c.see(20.0, vm("w0", group="web", cpu=0.0, version=3)) == []
    assert c.see(30.0, gone_vms=("w2",)) == []
    [more] = c.tick(70.0)
    assert more.action == Action.SCALE_IN and more.payload["members"] == 2


def test_never_below_min_or_above_max() -> None:
    c = group_cloud(n=1, lo=1, hi=4)
    assert c.see(10.0, vm("w0", group="web", cpu=0.05, version=2)) == []  # at min
    c = group_cloud(n=4, lo=1, hi=4)
    assert c.see(10.0, *[vm(f"w{i}", group="web", cpu=0.99, version=2) for i in range(4)]) == []


def test_only_active_members_count_and_bounds_changes_reevaluate() -> None:
    c = group_cloud(n=2, hi=2)
    assert c.see(10.0, vm("w0", group="web", cpu=0.95, version=2)) == []  # at max
    assert c.see(20.0, vm("w1", group="web", cpu=0.5, state=D, version=2)) == []  # at max
    [out] = c.see(30.0, groups=(GroupRecord("web", 1, 3, 2),))  # max raised: re-evaluated
    assert out.action == Action.SCALE_OUT and out.payload["mean"] == 0.95


def test_groups_filter_and_ram_metric() -> None:
    c = Cloud(AutoscaleConfig(name="ram-scale", metric="ram", groups=("db",), groups_host="g"))
    c.see(0.0, groups=(GroupRecord("web", 1, 4, 1), GroupRecord("db", 1, 4, 1)))
    assert c.see(10.0, vm("w0", group="web", ram=0.9)) == []
    [out] = c.see(20.0, vm("d0", group="db", ram=0.9, cpu=0.1))
    assert (out.host, out.vm, out.policy) == ("g", "db", "ram-scale")


def test_a_scaling_by_one_policy_cools_the_group_down_for_the_others() -> None:
    """A CPU policy and a RAM policy on one group: after the CPU one scales it out, the
    RAM one does not scale it back in before its own cooldown is over."""
    cpu = AutoscaleConfig(name="cpu-scale", metric="cpu", cooldown=60)
    ram = AutoscaleConfig(name="ram-scale", metric="ram", cooldown=30)
    c = Cloud(cpu, ram)
    web = GroupRecord("web", 1, 4, 1)
    assert c.see(0.0, *[vm(f"w{i}", group="web", ram=0.5) for i in range(2)], groups=(web,)) == []
    [out] = c.see(10.0, *[vm(f"w{i}", group="web", cpu=0.9, version=2) for i in range(2)])
    assert (out.action, out.policy) == (Action.SCALE_OUT, "cpu-scale")
    c.policies.raised(out, 10.0)
    idle = [vm(f"w{i}", group="web", cpu=0.5, ram=0.1, version=3) for i in range(2)]
    assert c.see(20.0, *idle) == []  # RAM says scale in: the group is cooling down
    assert c.policies.next_due() == 40.0
    [back] = c.tick(40.0)  # the RAM policy's cooldown is over, the group still idle
    assert (back.action, back.policy) == (Action.SCALE_IN, "ram-scale")


# -- the policies file -------------------------------------------------------------------
def test_example_file_loads() -> None:
    rules = load_rules(ROOT / "policies.example.yaml")
    assert [r.kind for r in rules.policies] == ["auto_heal", "host_maintenance", "autoscale"]
    heal, maintenance, scale = rules.policies
    assert heal == HEAL
    assert isinstance(maintenance, HostMaintenanceConfig)
    assert maintenance.event_action == Action.LIVE_MIGRATE
    assert scale == SCALE


def test_defaults_and_several_policies_of_a_kind() -> None:
    rules = parse_rules(
        {
            "policies": [
                {"name": "scale-web", "kind": "autoscale", "groups": ["web"]},
                {"name": "scale-db", "kind": "autoscale", "groups": ["db"], "metric": "ram"},
            ]
        },
        "x.yaml",
    )
    assert [r.name for r in rules.policies] == ["scale-web", "scale-db"]
    web = rules.policies[0]
    assert isinstance(web, AutoscaleConfig)
    assert web.groups_host == "vm-groups" and web.cooldown == 60
    assert parse_rules({"policies": []}, "x.yaml").policies == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "policies:\n  - {name: a, kind: auto_heal}\n"
            "  - {name: b, kind: auto_heal, debounce: -1}",
            "p.yaml: policies[1].debounce: Input should be greater than or equal to 0",
        ),
        ("policies:\n  - {name: a, kind: autoheal}", "p.yaml: policies[0].kind: unknown kind"),
        ("policies:\n  - {name: a}", "p.yaml: policies[0].kind: missing"),
        (
            "policies:\n  - {name: a, kind: auto_heal}\n  - {name: a, kind: autoscale}",
            "p.yaml: policies[1].name: duplicate policy name 'a'",
        ),
        (
            "policies:\n  - {name: a, kind: auto_heal, debounse: 3}",
            "p.yaml: policies[0].debounse: Extra inputs are not permitted",
        ),
        (
            "policies:\n  - {name: a, kind: autoscale, low: 0.9, high: 0.8}",
            "p.yaml: policies[0]: low (0.9) must be below high (0.8)",
        ),
        (
            "policies:\n  - {name: a, kind: autoscale, high: 1.5}",
            "p.yaml: policies[0].high: Input should be less than or equal to 1",
        ),
        (
            "policies:\n  - {name: a, kind: autoscale, low: -0.1}",
            "p.yaml: policies[0].low: Input should be greater than or equal to 0",
        ),
        (
            "policies:\n  - {name: a, kind: host_maintenance, action: evacuate}",
            "p.yaml: policies[0].action: Input should be 'live_migrate' or 'migrate'",
        ),
        (
            "policies:\n  - {name: 'a b', kind: auto_heal}",
            "p.yaml: policies[0].name: must be 1 to 128 characters",
        ),
        ("policies:\n  - 3", "p.yaml: policies[0]: Input should be a valid dictionary"),
        ("policies: [", "p.yaml: not valid YAML"),
        ("", "p.yaml: expected a mapping with a 'policies' list, got nothing"),
        ("- a", "p.yaml: expected a mapping with a 'policies' list, got a list"),
        ("policy: []", "p.yaml: policies: Field required"),
    ],
)
def test_bad_files_give_clear_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("p.yaml").write_text(text)
    with pytest.raises(PolicyFileError) as raised:
        load_rules("p.yaml")
    assert str(raised.value).startswith(message), str(raised.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match=r"nope\.yaml: no such file"):
        load_rules(tmp_path / "nope.yaml")


# -- priority classes ------------------------------------------------------------------
def test_heals_are_urgent_and_maintenance_normal_by_default() -> None:
    c = Cloud(HEAL, HostMaintenanceConfig(name="maint"))
    c.see(0.0, vm("a"), vm("b"), hosts=(HostRecord("h1", HostState.UP, 1),))
    c.see(1.0, vm("a", state=D, version=2))
    [heal] = c.tick(16.0)
    assert heal.priority == Priority.URGENT
    moves = c.see(20.0, hosts=(HostRecord("h1", HostState.MAINTENANCE, 2),))
    assert moves and {(m.policy, m.priority) for m in moves} == {("maint", Priority.NORMAL)}


def test_a_policys_priority_is_set_in_the_file() -> None:
    rules = parse_rules(
        {"policies": [{"name": "heal-later", "kind": "auto_heal", "priority": "background"}]},
        "x.yaml",
    )
    c = Cloud(*rules.policies)
    c.see(0.0, vm("a"))
    c.see(1.0, vm("a", state=D, version=2))
    [heal] = c.tick(100.0)
    assert heal.priority == Priority.BACKGROUND


def test_a_bad_priority_in_the_file_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("p.yaml").write_text("policies:\n  - {name: a, kind: autoscale, priority: asap}")
    with pytest.raises(PolicyFileError) as raised:
        load_rules("p.yaml")
    assert str(raised.value).startswith(
        "p.yaml: policies[0].priority: Input should be 'urgent', 'normal' or 'background'"
    ), str(raised.value)
