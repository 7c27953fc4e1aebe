"""Tests for shared.names, shared.topology and producer.schemas (pure validation, no I/O)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from producer.schemas import MAX_BATCH, MAX_PAYLOAD_BYTES, EventBatchIn, VmEventIn
from shared.kombu_topology import queue as kombu_queue
from shared.models import Key
from shared.names import NAME_MAX, NAME_RULE, Name, is_valid_name
from shared.settings import CommonSettings
from shared.topology import MAX_QUEUE_NAME, ExchangeSpec, Topology

NAME = TypeAdapter(Name)

VALID_NAMES = [
    "compute-1.dc1.example.com",
    str(uuid.UUID("3f2b8c1e-9d4a-4e7b-8f6a-1c2d3e4f5a6b")),
    "a",
    "0",
    "a" * NAME_MAX,
    "vm_1:eth0",
    "A.b-c_d:e",
]

INVALID_NAMES = [
    pytest.param("", id="empty"),
    pytest.param("-x", id="leading-dash"),
    pytest.param(".x", id="leading-dot"),
    pytest.param("_x", id="leading-underscore"),
    pytest.param("a/b", id="slash"),
    pytest.param("a#b", id="hash"),
    pytest.param("a b", id="space"),
    pytest.param("a" * (NAME_MAX + 1), id="129-chars"),
    pytest.param("vm-\u00e9", id="unicode-latin"),
    pytest.param("\uff56\uff4d", id="unicode-fullwidth"),
    pytest.param("\u0663", id="unicode-digit"),
    pytest.param("a*b", id="star"),
]


def _name_accepted_by_pydantic(value: str) -> bool:
    try:
        NAME.validate_python(value)
    except ValidationError:
        return False
    return True


# -- names -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", VALID_NAMES)
def test_valid_names_are_accepted(value: str) -> None:
    assert is_valid_name(value)
    assert _name_accepted_by_pydantic(value)


@pytest.mark.parametrize("value", INVALID_NAMES)
def test_invalid_names_are_rejected_saying_the_rule_in_words(value: str) -> None:
    assert not is_valid_name(value)
    assert not _name_accepted_by_pydantic(value)
    with pytest.raises(ValidationError) as refused:
        NAME.validate_python(value)
    [error] = refused.value.errors()
    assert error["msg"] == NAME_RULE, "the rule, not the pattern"
    assert NAME_RULE.startswith("must be 1 to 128 characters of letters, digits")


@pytest.mark.parametrize("value", ["a\n", "a" * NAME_MAX + "\n"])
def test_pydantic_name_rejects_trailing_newline(value: str) -> None:
    assert not _name_accepted_by_pydantic(value)


@pytest.mark.parametrize("value", ["a\n", "a" * NAME_MAX + "\n"])
def test_is_valid_name_rejects_trailing_newline(value: str) -> None:
    assert not is_valid_name(value)


# -- topology: per-key event queues -------------------------------------------------------


def _key(host: str, vm: str, policy: str) -> Key:
    return Key(host=host, vm=vm, policy=policy)


def test_short_key_gets_the_readable_name() -> None:
    key = _key("compute-1.dc1.example.com", "vm-17", "auto-healing")
    assert (
        Topology("carousel").event_queue_name(key)
        == "carousel.ev.compute-1.dc1.example.com/vm-17/auto-healing"
    )


def test_name_of_exactly_255_bytes_stays_readable_and_256_is_hashed() -> None:
    topo = Topology("t")  # "t.ev." + h + "/" + v + "/" + p
    at_limit = _key("h" * 128, "v" * 100, "p" * 20)
    assert len(topo.event_queue_name(at_limit)) == MAX_QUEUE_NAME
    assert "#" not in topo.event_queue_name(at_limit)
    over = _key("h" * 128, "v" * 100, "p" * 21)
    name = topo.event_queue_name(over)
    assert "#" in name
    assert len(name.encode()) <= MAX_QUEUE_NAME


@pytest.mark.parametrize(
    "prefix",
    [
        pytest.param("t", id="short-prefix"),
        pytest.param("carousel", id="default-prefix"),
        pytest.param("p" * 64, id="longest-prefix-settings-allow"),
    ],
)
def test_three_128_char_names_fit_in_255_bytes(prefix: str) -> None:
    CommonSettings(carousel_prefix=prefix)  # the prefix is one the settings accept
    name = Topology(prefix).event_queue_name(_key("h" * 128, "v" * 128, "p" * 128))
    assert len(name.encode()) <= MAX_QUEUE_NAME
    assert name.startswith(f"{prefix}.ev.")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param(("a.b", "c", "p"), ("a", "b.c", "p"), id="host-vm-split"),
        pytest.param(("h", "a.b", "c"), ("h", "a", "b.c"), id="vm-policy-split"),
        pytest.param(("a-b", "c", "p"), ("a", "b-c", "p"), id="dash-split"),
        pytest.param(
            ("h" * 100 + "1", "v" * 128, "p" * 128),
            ("h" * 100 + "2", "v" * 128, "p" * 128),
            id="host-tail-beyond-cut",
        ),
        pytest.param(
            ("h" * 128, "v" * 127 + "1", "p" * 128),
            ("h" * 128, "v" * 127 + "2", "p" * 128),
            id="vm-tail-beyond-cut",
        ),
        pytest.param(
            ("h" * 128, "v" * 128, "p" * 127 + "1"),
            ("h" * 128, "v" * 128, "p" * 127 + "2"),
            id="policy-tail-beyond-cut",
        ),
        pytest.param(
            ("x" * 60 + "y" * 68, "v" * 128, "p" * 128),
            ("x" * 60, "y" * 68 + "v" * 60, "p" * 128),
            id="long-split-moves-chars-between-parts",
        ),
    ],
)
def test_queue_names_are_unique_across_ambiguous_keys(
    a: tuple[str, str, str], b: tuple[str, str, str]
) -> None:
    topo = Topology("carousel")
    assert topo.event_queue_name(_key(*a)) != topo.event_queue_name(_key(*b))


def test_hashed_name_keeps_readable_parts_and_separators() -> None:
    name = Topology("t").event_queue_name(_key("h" * 128, "v" * 128, "p" * 128))
    head, digest = name.split("#")
    assert head == f"t.ev.{'h' * 48}/{'v' * 48}/{'p' * 48}"
    assert len(digest) == 32
    assert all(c in "0123456789abcdef" for c in digest)


def test_event_queue_name_is_deterministic() -> None:
    key = _key("h" * 128, "v" * 128, "p" * 128)
    assert Topology("t").event_queue_name(key) == Topology("t").event_queue_name(key)


def test_event_queue_spec_is_durable_classic() -> None:
    spec = Topology("t").event_queue(_key("h", "v", "p"))
    assert spec.name == "t.ev.h/v/p"
    assert spec.durable
    assert not spec.exclusive
    assert not spec.auto_delete
    assert spec.arguments == {"x-queue-type": "classic"}


# -- topology: the prefix names everything ------------------------------------------------


def _all_names(topo: Topology) -> dict[str, str]:
    return {
        "event_queue": topo.event_queue_name(_key("h", "v", "p")),
        "long_event_queue": topo.event_queue_name(_key("h" * 128, "v" * 128, "p" * 128)),
        "actions": topo.actions_queue.name,
        "slow_actions": topo.actions_queue_of("slow").name,
        "completions": topo.completions_queue.name,
        "dead": topo.dead_letter_queue.name,
        "mapping": topo.mapping_exchange.name,
        "mapping_queue": topo.mapping_queue_of("s1").name,
    }


def test_prefix_changes_every_name() -> None:
    one, two = _all_names(Topology("one")), _all_names(Topology("two"))
    for what in one:
        assert one[what] != two[what], what
        assert one[what].startswith("one."), what
        assert two[what].startswith("two."), what


def test_shared_names_are_distinct_and_typed() -> None:
    topo = Topology("carousel")
    assert topo.actions_queue.name == "carousel.actions"
    assert topo.completions_queue.name == "carousel.completions"
    assert topo.mapping_exchange.name == "carousel.mapping"
    assert topo.mapping_exchange.type == "fanout"
    assert topo.mapping_exchange.durable
    assert topo.actions_queue.durable
    assert topo.completions_queue.durable


def test_actions_queues_are_bound_to_a_direct_exchange_of_their_name() -> None:
    topo = Topology("carousel")
    for profile, name in [("default", "carousel.actions"), ("slow", "carousel.actions.slow")]:
        spec = topo.actions_queue_of(profile)
        assert spec.name == name
        assert spec.exchange == ExchangeSpec(name, "direct")
        assert spec.routing_key == name


def test_a_dispatchers_mapping_queue_is_its_own_and_transient() -> None:
    spec = Topology("carousel").mapping_queue_of("abc")
    assert spec.name == "carousel.mapping.abc"
    assert spec.exchange == Topology("carousel").mapping_exchange
    assert (spec.durable, spec.exclusive, spec.auto_delete) == (False, True, True)


def test_a_whole_topology_lists_every_queue_and_exchange() -> None:
    topo = Topology("t")
    keys = [_key("h", "v", "p"), _key("h", "v", "q")]
    assert [q.name for q in topo.durable_queues(keys, ["slow"])] == [
        "t.ev.h/v/p",
        "t.ev.h/v/q",
        "t.actions",
        "t.actions.slow",
        "t.completions",
        "t.dead",
    ]
    assert [e.name for e in topo.exchanges(["slow", "default"])] == [
        "t.mapping",
        "t.events",
        "t.actions",
        "t.actions.slow",
    ]


def test_kombu_queues_follow_their_specs() -> None:
    topo = Topology("t")
    actions = kombu_queue(topo.actions_queue_of("slow"))
    assert (actions.name, actions.exchange.name, actions.exchange.type) == (
        "t.actions.slow",
        "t.actions.slow",
        "direct",
    )
    assert actions.routing_key == "t.actions.slow"
    event = kombu_queue(topo.event_queue(_key("h", "v", "p")))
    assert event.exchange.name == ""  # the default exchange routes by queue name
    assert event.queue_arguments == {"x-queue-type": "classic"}


# -- producer.schemas ----------------------------------------------------------------------

GOOD_EVENT: dict[str, Any] = {
    "host": "compute-1.dc1.example.com",
    "vm": "3f2b8c1e-9d4a-4e7b-8f6a-1c2d3e4f5a6b",
    "policy": "auto-healing",
    "action": "heal",
}


def test_minimal_event_is_valid() -> None:
    event = VmEventIn.model_validate(GOOD_EVENT)
    assert event.id is None
    assert event.payload == {}
    assert event.action == "heal"


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"extra": 1}, id="extra-field"),
        pytest.param({"action": "explode"}, id="bad-action"),
        pytest.param({"action": "HEAL"}, id="action-wrong-case"),
        pytest.param({"host": "a/b"}, id="bad-host"),
        pytest.param({"vm": ""}, id="empty-vm"),
        pytest.param({"policy": "p" * 129}, id="long-policy"),
        pytest.param({"id": "a#b"}, id="bad-id"),
        pytest.param({"payload": [1, 2]}, id="payload-not-object"),
        pytest.param({"payload": {"x": "y" * MAX_PAYLOAD_BYTES}}, id="payload-over-64KiB"),
    ],
)
def test_bad_event_is_rejected(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        VmEventIn.model_validate({**GOOD_EVENT, **change})


@pytest.mark.parametrize("missing", ["host", "vm", "policy", "action"])
def test_required_field_missing_is_rejected(missing: str) -> None:
    body = {k: v for k, v in GOOD_EVENT.items() if k != missing}
    with pytest.raises(ValidationError):
        VmEventIn.model_validate(body)


def test_payload_of_exactly_64KiB_is_accepted_and_one_more_byte_is_not() -> None:
    overhead = len('{"x":""}')
    at_limit = {"x": "y" * (MAX_PAYLOAD_BYTES - overhead)}
    assert VmEventIn.model_validate({**GOOD_EVENT, "payload": at_limit}).payload == at_limit
    over = {"x": "y" * (MAX_PAYLOAD_BYTES - overhead + 1)}
    with pytest.raises(ValidationError, match="payload larger than"):
        VmEventIn.model_validate({**GOOD_EVENT, "payload": over})


def test_event_with_id_and_payload() -> None:
    event = VmEventIn.model_validate(
        {**GOOD_EVENT, "id": "evt-1", "payload": {"flavor": "m1.large"}}
    )
    assert event.id == "evt-1"
    assert event.payload == {"flavor": "m1.large"}


@pytest.mark.parametrize(
    ("count", "ok"),
    [(0, False), (1, True), (2, True), (MAX_BATCH, True), (MAX_BATCH + 1, False)],
)
def test_batch_size_bounds(count: int, ok: bool) -> None:
    body = {"events": [GOOD_EVENT] * count}
    if ok:
        assert len(EventBatchIn.model_validate(body).events) == count
    else:
        with pytest.raises(ValidationError):
            EventBatchIn.model_validate(body)


def test_batch_rejects_extra_fields_and_bad_members() -> None:
    with pytest.raises(ValidationError):
        EventBatchIn.model_validate({"events": [GOOD_EVENT], "more": 1})
    with pytest.raises(ValidationError):
        EventBatchIn.model_validate({"events": [GOOD_EVENT, {**GOOD_EVENT, "action": "nope"}]})
