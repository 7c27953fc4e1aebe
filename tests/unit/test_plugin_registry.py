"""Plug-ins by name (shared.plugins) and what uses them: drivers and monitoring policy
kinds from another package.

Each test puts a package's metadata on sys.path as pip would install it — a
``.dist-info`` with its ``entry_points.txt`` — with the package's module beside it: the
lookup (importlib.metadata) is the real one. tests/integration/test_plugins.py installs
a real package with pip and runs it in real processes."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from producer.monitoring.kinds.auto_heal import AutoHealConfig
from producer.monitoring.model import Observation, View, VmRecord, VmState
from producer.monitoring.policies import Policies, PolicyFileError, parse_rules
from producer.monitoring.rules import Rules
from producer.monitoring.updater import apply, diff
from scheduler.worker.drivers import build_driver
from scheduler.worker.hold import Hold
from scheduler.worker.settings import WorkerSettings
from shared.models import Action, VmEventMessage
from shared.plugins import BrokenPlugin, Registry, UnknownPlugin

Register = Callable[..., str]

#: a driver and a policy kind, as another package would write them
PLUGIN = '''
from __future__ import annotations

from typing import Literal, Self

from pydantic import Field

from producer.monitoring.kind import PolicyConfig, PolicyKind
from producer.monitoring.model import VmState, VmStateChanged
from scheduler.worker.driver import DriverConfig, DriverPlugin
from shared.models import Action


class NoteConfig(DriverConfig):
    note_prefix: str = Field("did", description="What each note starts with (NOTE_PREFIX).")


class NoteDriver(DriverPlugin[NoteConfig]):
    config_model = NoteConfig

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    @classmethod
    def from_config(cls, config: NoteConfig, worker: object) -> Self:
        return cls(config.note_prefix)

    def execute(self, event, hold):
        return f"{self.prefix} {event.action.value} of {event.vm}"


class StopPausedConfig(PolicyConfig):
    kind: str = "stop_paused"
    action: Literal["stop", "heal"] = "stop"


class StopPaused(PolicyKind[StopPausedConfig]):
    """Every PAUSED VM gets the configured action, once per pause."""

    config_model = StopPausedConfig

    def start(self, view, now):
        return [
            i
            for r in view.vms.values()
            if r.state == VmState.PAUSED
            and (i := self._ask(VmStateChanged(r.vm, r.host, None, r.state, None, r.version, now)))
        ]

    def on_changes(self, view, changes, now):
        return [
            i
            for c in changes
            if isinstance(c, VmStateChanged) and c.new == VmState.PAUSED
            and (i := self._ask(c))
        ]

    def _ask(self, c):
        action = Action(self.config.action)
        return self.intent(self.event_id(c.vm, action, c.version), c.host, c.vm, action, c)


class Broken(StopPaused):
    def on_changes(self, view, changes, now):
        raise RuntimeError("a bug in a plug-in")


class NotAKind:
    pass
'''


@pytest.fixture
def register(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Register:
    """``register(group, {name: "module:Class"}, dist=...)``: a distribution named
    ``dist`` registering those entry points, installed on sys.path with the module
    ``plugin_<n>`` (the source above); returns that module's name."""
    made = 0

    def make(group: str, entries: dict[str, str], dist: str = "fake-plugin") -> str:
        nonlocal made
        made += 1
        root = tmp_path / f"site{made}"
        module = f"plugin_{tmp_path.name.replace('-', '_')}_{made}"
        info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        lines = "".join(f"{name} = {value.format(m=module)}\n" for name, value in entries.items())
        (info / "entry_points.txt").write_text(f"[{group}]\n{lines}")
        (root / f"{module}.py").write_text(textwrap.dedent(PLUGIN))
        monkeypatch.syspath_prepend(str(root))
        return module

    return make


# -- the registry ------------------------------------------------------------------------
class Base:
    pass


def test_an_unknown_name_is_refused_listing_the_known_ones(register: Register) -> None:
    register("carousel.test-a", {"one": "{m}:NotAKind", "two": "{m}:NotAKind"})
    registry: Registry[Base] = Registry("carousel.test-a", Base, "widget")
    assert registry.names() == ["one", "two"]
    with pytest.raises(UnknownPlugin) as raised:
        registry.load("three")
    assert str(raised.value).startswith("unknown widget 'three'; known: one, two")
    assert raised.value.known == ["one", "two"]
    with pytest.raises(UnknownPlugin, match="known: none"):
        Registry("carousel.test-empty", Base, "widget").load("one")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("no_such_module_anywhere:Thing", r"cannot be loaded: ModuleNotFoundError"),
        ("{m}:NoSuchClass", r"cannot be loaded: AttributeError"),
        ("{m}:NotAKind", r"is <class '.*NotAKind'>, not a subclass of .*PolicyKind"),
    ],
)
def test_a_name_that_names_no_plug_in_is_broken_naming_its_package(
    register: Register, value: str, message: str
) -> None:
    register("carousel.policies", {"broken": value}, dist="broken-kinds")
    with pytest.raises(PolicyFileError) as raised:
        parse_rules({"policies": [{"name": "x", "kind": "broken"}]}, "p.yaml")
    text = str(raised.value)
    assert text.startswith("p.yaml: policies[0].kind: policy kind 'broken' ("), text
    assert "from broken-kinds 1.0" in text
    assert re.search(message, text), text


def test_no_package_takes_a_built_in_name(register: Register) -> None:
    register("carousel.policies", {"auto_heal": "{m}:StopPaused"}, dist="usurper")
    with pytest.raises(PolicyFileError, match=r"'auto_heal' is registered more than once: "):
        parse_rules({"policies": [{"name": "heal", "kind": "auto_heal"}]}, "p.yaml")
    with pytest.raises(BrokenPlugin) as raised:
        Rules((AutoHealConfig(name="heal"),))
    message = str(raised.value)
    assert "from usurper 1.0" in message and "AutoHeal from carousel" in message
    assert message.endswith("; uninstall one of them")


# -- a policy kind from another package ----------------------------------------------------
def vm(name: str, state: VmState, version: int) -> VmRecord:
    return VmRecord(name, "h1", state, 0.5, 0.5, None, version)


def see(view: View, policies: Policies, at: float, *vms: VmRecord) -> list[str]:
    obs = Observation(at=at, full=False, vms=vms)
    found = diff(view, obs)
    apply(view, found, at)
    return [
        f"{i.action.value} {i.vm} ({i.policy})"
        for i in policies.on_changes(view, found.changes, at)
    ]


def test_a_kind_from_another_package_is_validated_and_runs(register: Register) -> None:
    register("carousel.policies", {"stop_paused": "{m}:StopPaused"})
    text = {"policies": [{"name": "park", "kind": "stop_paused", "action": "stop"}]}
    policies = Policies(parse_rules(text, "p.yaml"), "sim")
    view = View()
    assert see(view, policies, 0.0, vm("a", VmState.ACTIVE, 1)) == []
    assert see(view, policies, 1.0, vm("a", VmState.PAUSED, 2)) == ["stop a (park)"]
    [again] = Policies(parse_rules(text, "p.yaml"), "sim").start(view, 5.0)
    assert again.action == Action.STOP and again.payload["cause"]["new"] == "PAUSED"
    with pytest.raises(PolicyFileError) as raised:
        parse_rules(
            {"policies": [{"name": "park", "kind": "stop_paused", "action": "x"}]}, "p.yaml"
        )
    assert str(raised.value).startswith("p.yaml: policies[0].action: Input should be 'stop' or")


def test_an_unknown_kind_names_the_installed_ones(register: Register) -> None:
    register("carousel.policies", {"stop_paused": "{m}:StopPaused"})
    with pytest.raises(PolicyFileError) as raised:
        parse_rules({"policies": [{"name": "a", "kind": "stop_pause"}]}, "p.yaml")
    assert str(raised.value).startswith(
        "p.yaml: policies[0].kind: unknown kind 'stop_pause'; expected one of auto_heal, "
        "autoscale, host_maintenance, stop_paused"
    )


def test_a_policy_that_raises_does_not_stop_the_others(register: Register) -> None:
    register("carousel.policies", {"broken": "{m}:Broken", "stop_paused": "{m}:StopPaused"})
    rules = parse_rules(
        {
            "policies": [
                {"name": "bad", "kind": "broken"},
                {"name": "heal", "kind": "auto_heal", "debounce": 0},
                {"name": "park", "kind": "stop_paused"},
            ]
        },
        "p.yaml",
    )
    policies = Policies(rules, "sim")
    view = View()
    see(view, policies, 0.0, vm("a", VmState.ACTIVE, 1), vm("b", VmState.ACTIVE, 1))
    assert see(view, policies, 1.0, vm("b", VmState.PAUSED, 2)) == ["stop b (park)"]
    see(view, policies, 2.0, vm("a", VmState.DOWN, 2))
    assert [i.vm for i in policies.tick(view, 2.0)] == ["a"]
    failures = policies.take_failures()
    assert [(f.policy, f.call, str(f.error)) for f in failures] == [
        ("bad", "on_changes", "a bug in a plug-in")
    ] * 3
    assert policies.take_failures() == []


# -- a driver from another package -----------------------------------------------------------
def test_a_driver_from_another_package_reads_its_own_settings(
    register: Register, monkeypatch: pytest.MonkeyPatch
) -> None:
    register("carousel.drivers", {"note": "{m}:NoteDriver"})
    monkeypatch.setenv("NOTE_PREFIX", "noted")
    driver = build_driver(WorkerSettings(driver="note"))
    event = VmEventMessage(
        id="e1", host="h1", vm="a", policy="p", action=Action.STOP, payload={}, accepted_at=0
    )
    assert driver.execute(event, Hold(1)) == "noted stop of a"
