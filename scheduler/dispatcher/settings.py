"""Settings of the dispatcher (``carousel-dispatcher``)."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import Field, ValidationInfo, field_validator

from scheduler.dispatcher.classes import validate_shares
from scheduler.dispatcher.dispatcher import Classes
from scheduler.dispatcher.limits import NamedLimits
from scheduler.dispatcher.roundrobin import Weights
from shared.addresses import local_url
from shared.models import Action
from shared.names import is_valid_name
from shared.priority import Priority, parse_table
from shared.settings import LimitSettings

#: the largest weight a host, VM or policy may have
MAX_WEIGHT = 10_000


class DispatcherSettings(LimitSettings):
    """What ``carousel-dispatcher`` reads."""

    per_vm_limit: int = Field(1, ge=1, description="Actions at once per VM (PER_VM_LIMIT).")
    per_host_limit: int = Field(
        0, ge=0, description="Actions at once per host, 0 = no limit (PER_HOST_LIMIT)."
    )
    prefetch: int = Field(1, ge=1, description="Heads held per event queue (PREFETCH).")
    dispatcher_host: str = Field(
        "127.0.0.1", description="Admin API bind address (DISPATCHER_HOST)."
    )
    dispatcher_port: int = Field(8001, description="Admin API port (DISPATCHER_PORT).")
    dispatcher_port_span: int = Field(
        1,
        ge=1,
        le=64,
        description="How many ports the admin API may choose from: DISPATCHER_PORT, then the "
        "next ones up, passing over the ports the other services on this machine are set "
        "to (PRODUCER_PORT, ELASTICITY_PORT, FLOWER_PORT, SIMCLOUD_PORT); it takes the "
        "first one free, and stops if none is. So shards started together on one machine "
        "(make up SHARDS=2 sets it) each get their own port (DISPATCHER_PORT_SPAN).",
    )
    start_paused: bool = Field(False, description="Start with dispatching paused (START_PAUSED).")
    carousel_producer_url: str = Field(
        default_factory=lambda: local_url("producer"),
        description="The producer's REST API, as the dispatcher reaches it: the live page "
        "shows its monitoring and looks events up there (CAROUSEL_PRODUCER_URL; default "
        "http://127.0.0.1:$PRODUCER_PORT, port 8000 if unset).",
    )
    carousel_elasticity_url: str = Field(
        default_factory=lambda: local_url("elasticity"),
        description="The elasticity worker's admin API, as the dispatcher reaches it: the "
        "live page shows its pools (CAROUSEL_ELASTICITY_URL; default "
        "http://127.0.0.1:$ELASTICITY_PORT, port 8002 if unset).",
    )
    resync_interval: float = Field(
        30.0,
        gt=0,
        description="Seconds between checks that the "
        "mapping version has not moved unseen (RESYNC_INTERVAL).",
    )
    reconcile_interval: float = Field(
        5.0,
        gt=0,
        description="Seconds between checks of the "
        "in-flight events against the ledger, freeing slots "
        "whose completion was lost (RECONCILE_INTERVAL).",
    )
    sweep_interval: float = Field(
        5.0,
        gt=0,
        description="Seconds between sweeps for in-flight events whose task message was "
        "lost or whose worker's claim expired; their task is sent again (SWEEP_INTERVAL).",
    )
    resend_after: float = Field(
        120.0,
        gt=0,
        description="Seconds a dispatched event may wait unclaimed before the sweeper "
        "sends its task again (RESEND_AFTER).",
    )
    head_refresh_interval: float = Field(
        600.0,
        ge=0,
        description="Seconds between hand-backs of every held head to its queue (one "
        "basic.nack with requeue; the broker delivers each again at once, in its place): "
        "no delivery stays unacked longer, so the broker's consumer_timeout (30 min by "
        "default) never closes the session while heads wait for a busy VM, a paused "
        "dispatcher or their turn. Keep it below consumer_timeout; 0 = never "
        "(HEAD_REFRESH_INTERVAL).",
    )
    unknown_event_grace: float = Field(
        60.0,
        gt=0,
        description="Seconds an event message the ledger does not know is parked, "
        "waiting for its row, before it is moved to the dead-letter queue "
        "(UNKNOWN_EVENT_GRACE).",
    )
    dispatch_batch: int = Field(
        64,
        ge=1,
        description="Events dispatched per ledger "
        "transaction and per round of pipelined confirms "
        "(DISPATCH_BATCH).",
    )
    dispatcher_lease_seconds: float = Field(
        10.0,
        gt=0,
        description="Seconds the dispatcher lease lasts unless renewed: one dispatcher "
        "dispatches, others wait and take over this long after it dies "
        "(DISPATCHER_LEASE_SECONDS).",
    )
    dispatcher_advertise_url: str = Field(
        "",
        description="Where the other dispatcher shards reach this one's admin API, to "
        "ask it about the hosts it serves; empty: http://127.0.0.1:<port> when "
        "DISPATCHER_HOST is a loopback address, else this machine's address as its "
        "host name resolves (a container's own address) (DISPATCHER_ADVERTISE_URL).",
    )
    dispatcher_partitions: int = Field(
        0,
        ge=0,
        le=4096,
        description="0: one dispatcher dispatches, others wait as standbys. More: every "
        "dispatcher started is an active shard, serving the hosts of the partitions it "
        "holds (the hosts split into this many by a hash of their name), the partitions "
        "spread over the live shards through leases in the ledger; the same on every "
        "shard, and at least 4 per shard you mean to run (DISPATCHER_PARTITIONS).",
    )
    task_sent_events: bool = Field(
        False,
        description="Publish Celery's task-sent event for each task, for Flower's "
        '"sent" state: one more message per event; Flower lists a task from its '
        "worker's task-received event anyway (TASK_SENT_EVENTS).",
    )
    key_idle_seconds: float = Field(
        600.0,
        ge=0,
        description="Seconds a key may go without work (no event held, none of its VM's "
        "in flight, none dispatched) before it is retired: its queue deleted and its row "
        "taken out of the mapping, so that live queues follow the keys with work, not "
        "every key ever seen. Its next event adds it again. 0 = keys live as long as "
        "their VM (KEY_IDLE_SECONDS).",
    )
    task_persistent: bool = Field(
        False,
        description="Publish each task message persistent (it survives a broker restart) "
        "instead of transient, at a cost to the broker per event. Off, the tasks a broker "
        "restart dropped are sent again as the dispatcher's next session starts (every "
        "dispatched event no worker claimed); quorum queues keep every message anyway "
        "(TASK_PERSISTENT).",
    )
    dispatch_log_size: int = Field(
        10000, ge=1, description="Dispatches kept for GET /dispatches (DISPATCH_LOG_SIZE)."
    )
    policy_priorities: str = Field(
        "",
        description="The class (urgent, normal or background) of each policy's events that "
        "name none, as policy=class,... (e.g. auto-heal=urgent,upgrade=background); a "
        "policy not named is normal. An event's own priority wins; the monitoring's "
        "policies stamp theirs (policies.yaml). PUT /classes changes it live "
        "(POLICY_PRIORITIES).",
    )
    class_min_shares: str = Field(
        "normal=0.2,background=0.1",
        description="Each class's minimum share of the dispatches while it has ready work, "
        "as class=share,... (each in [0, 1], their sum at most 1; a class not named has "
        "none): a higher class goes first, but never starves a lower one below its share. "
        "A class without ready work lends its share, and banks nothing. PUT /classes "
        "changes it live (CLASS_MIN_SHARES).",
    )
    host_weights: str = Field(
        "",
        description="Weights (integers >= 1, default 1) of hosts, as host=weight,...: under "
        "saturation each host's share of the dispatches follows its weight, however many "
        "VMs and policies its events are spread over. PUT /weights changes it live "
        "(HOST_WEIGHTS).",
    )
    vm_weights: str = Field(
        "",
        description="Weights (integers >= 1, default 1) of VMs within their host, as "
        "host/vm=weight,... A weight is the number of consecutive turns a VM gets while it "
        "can take them: with PER_VM_LIMIT 1 a VM is busy after each dispatch, so its "
        "weight shows only with PER_VM_LIMIT above 1. PUT /weights changes it live "
        "(VM_WEIGHTS).",
    )
    policy_weights: str = Field(
        "",
        description="Weights (integers >= 1, default 1) of policies within each VM, as "
        "policy=weight,... PUT /weights changes it live (POLICY_WEIGHTS).",
    )

    action_limits: str = Field(
        "",
        description="At most this many actions of a kind in flight at once, as "
        "action=limit,... (e.g. live_migrate=2,migrate=2); an action not named has no "
        "limit of its own. A head whose action is at its limit waits, its key skipped "
        "while others go. PUT /named-limits changes it live (ACTION_LIMITS).",
    )
    group_budgets: str = Field(
        "",
        description="Disruption budgets: at most this many of a VM group's VMs with an "
        "action in flight at once, as group=budget,... (e.g. web=1,db=1). An event's "
        "group is its own group field, else the one the producer's monitoring last saw "
        "the VM in. PUT /named-limits changes it live (GROUP_BUDGETS).",
    )
    default_group_budget: int = Field(
        0,
        ge=0,
        description="The disruption budget of a group GROUP_BUDGETS does not name; 0 = "
        "none (DEFAULT_GROUP_BUDGET).",
    )

    @field_validator(
        "action_limits",
        "group_budgets",
        "policy_priorities",
        "class_min_shares",
        "host_weights",
        "vm_weights",
        "policy_weights",
    )
    @classmethod
    def _table(cls, value: str, info: ValidationInfo) -> str:
        TABLES[info.field_name or ""](value)  # a bad table is refused, naming its setting
        return value

    @property
    def classes(self) -> Classes:
        """POLICY_PRIORITIES and CLASS_MIN_SHARES."""
        return Classes(policy_classes(self.policy_priorities), min_shares(self.class_min_shares))

    @property
    def named_limits(self) -> NamedLimits:
        """ACTION_LIMITS, GROUP_BUDGETS and DEFAULT_GROUP_BUDGET."""
        return NamedLimits(
            actions=action_limits(self.action_limits),
            groups=group_budgets(self.group_budgets),
            default_group=self.default_group_budget,
        )

    @property
    def weights(self) -> Weights:
        """HOST_WEIGHTS, VM_WEIGHTS and POLICY_WEIGHTS."""
        return Weights(
            hosts=host_weights(self.host_weights),
            vms=vm_weights(self.vm_weights),
            policies=policy_weights(self.policy_weights),
        )


def _name(name: str, what: str) -> str:
    if not is_valid_name(name):
        raise ValueError(f"{what}: {name!r} is not a valid name")
    return name


def policy_classes(text: str) -> dict[str, Priority]:
    out: dict[str, Priority] = {}
    for policy, value in parse_table(text, "POLICY_PRIORITIES").items():
        try:
            out[_name(policy, "POLICY_PRIORITIES")] = Priority(value)
        except ValueError:
            classes = ", ".join(p.value for p in Priority)
            raise ValueError(
                f"POLICY_PRIORITIES: {policy}={value}: the class must be one of {classes}"
            ) from None
    return out


def min_shares(text: str) -> dict[Priority, float]:
    out: dict[Priority, float] = {}
    for name, value in parse_table(text, "CLASS_MIN_SHARES").items():
        try:
            cls = Priority(name)
            share = float(value)
        except ValueError:
            raise ValueError(
                f"CLASS_MIN_SHARES: {name}={value} is not class=share (a class of "
                f"{', '.join(p.value for p in Priority)}, a number)"
            ) from None
        out[cls] = share
    return validate_shares(out)


def weights_of(text: str, what: str, names: bool = True, noun: str = "a weight") -> dict[str, int]:
    """``name=weight,...``; ``names``: each name must be a valid name."""
    out: dict[str, int] = {}
    for name, value in parse_table(text, what).items():
        if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_WEIGHT:
            raise ValueError(f"{what}: {name}={value}: {noun} is an integer 1..{MAX_WEIGHT}")
        out[_name(name, what) if names else name] = int(value)
    return out


def action_limits(text: str) -> dict[str, int]:
    """``action=limit,...``: each an action carousel knows, each limit 1..MAX_WEIGHT."""
    out = weights_of(text, "ACTION_LIMITS", noun="a limit")
    for action in out:
        if action not in {a.value for a in Action}:
            known = ", ".join(a.value for a in Action)
            raise ValueError(f"ACTION_LIMITS: {action!r} is not an action (one of {known})")
    return out


def group_budgets(text: str) -> dict[str, int]:
    return weights_of(text, "GROUP_BUDGETS", noun="a budget")


def host_weights(text: str) -> dict[str, int]:
    return weights_of(text, "HOST_WEIGHTS")


def policy_weights(text: str) -> dict[str, int]:
    return weights_of(text, "POLICY_WEIGHTS")


def vm_weights(text: str) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for name, weight in weights_of(text, "VM_WEIGHTS", names=False).items():
        host, sep, vm = name.partition("/")
        if not sep:
            raise ValueError(f"VM_WEIGHTS: {name!r} is not host/vm")
        out[(_name(host, "VM_WEIGHTS"), _name(vm, "VM_WEIGHTS"))] = weight
    return out


#: each table setting and how it is read (a ValueError names the setting)
TABLES: dict[str, Callable[[str], object]] = {
    "action_limits": action_limits,
    "group_budgets": group_budgets,
    "policy_priorities": policy_classes,
    "class_min_shares": min_shares,
    "host_weights": host_weights,
    "vm_weights": vm_weights,
    "policy_weights": policy_weights,
}
