"""Raising the policies' events through the producer's own publish path (the ledger,
the mapping, confirms), exactly as a REST client's would be.

An intent's id is derived from the change that caused it, so raising the same intent
again (after a restart, or a relist that saw the change again) finds the ledger's row
and publishes nothing. And while an event for a VM and policy is unfinished, another
one for them is not raised at all."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from producer.monitoring.model import Intent
from producer.monitoring.retry import in_thread, until_done
from producer.schemas import VmEventIn
from producer.service import EventService
from shared.errors import Conflict

log = logging.getLogger(__name__)


@dataclass
class Raised:
    #: accepted now, or already accepted under the same id
    raised: list[Intent] = field(default_factory=list)
    #: not raised: an event for the same (host, vm, policy) is unfinished
    suppressed: list[Intent] = field(default_factory=list)
    #: refused by the ledger: the id exists with other content (logged)
    conflicts: list[Intent] = field(default_factory=list)


class Raiser:
    def __init__(self, service: EventService, batch: int = 500) -> None:
        self.service = service
        self.batch = batch

    async def raise_all(self, intents: Sequence[Intent]) -> Raised:
        """Raise ``intents``, retrying while the ledger or the broker is away (the caller
        writes the repository only afterwards, so a crash in between loses no change:
        the next run sees it again and derives the same ids)."""
        out = Raised()
        unique = list({i.id: i for i in intents}.values())
        if not unique:
            return out
        keys = [(i.host, i.vm, i.policy) for i in unique]
        busy = await in_thread(
            "looking up unfinished events", lambda: self.service.store.unfinished_of(keys)
        )
        fresh: list[Intent] = []
        for intent in unique:
            holder = busy.get((intent.host, intent.vm, intent.policy))
            if holder is None or holder == intent.id:
                fresh.append(intent)
            else:
                out.suppressed.append(intent)
        for i in range(0, len(fresh), self.batch):
            await self._accept(fresh[i : i + self.batch], out)
        return out

    async def _accept(self, intents: list[Intent], out: Raised) -> None:
        events = [as_event(i) for i in intents]
        try:
            await until_done(
                f"raising {len(events)} monitoring events", lambda: self.service.accept(events)
            )
        except Conflict:
            if len(intents) == 1:
                log.error("monitoring event %s exists with other content", intents[0].id)
                out.conflicts.extend(intents)
                return
            for intent in intents:  # find the one in conflict, raise the others
                await self._accept([intent], out)
            return
        out.raised.extend(intents)


def as_event(intent: Intent) -> VmEventIn:
    """The REST event an intent is raised as (through the producer's own accept)."""
    return VmEventIn(
        id=intent.id,
        host=intent.host,
        vm=intent.vm,
        policy=intent.policy,
        action=intent.action,
        payload=intent.payload,
        coalesce=intent.coalesce,
        priority=intent.priority,
    )
