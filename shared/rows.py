"""An event as a row of the ledger's ``events`` table, and back."""

from __future__ import annotations

import json
from typing import Any

from shared.models import Status, VmEventMessage


def event_message(row: Any) -> VmEventMessage:
    """The event as it was accepted, from its row (a mapping of column to value)."""
    return VmEventMessage(
        id=row["id"],
        host=row["host"],
        vm=row["vm"],
        policy=row["policy"],
        action=row["action"],
        payload=json.loads(row["payload"]),
        accepted_at=row["accepted_at"],
        group=row.get("grp"),
    )


def event_row(e: VmEventMessage, status: Status, coalescing: bool = False) -> dict[str, Any]:
    """A new row for ``e`` (see :mod:`shared.coalescing` for ``coalescing``)."""
    return {
        "id": e.id,
        "host": e.host,
        "vm": e.vm,
        "policy": e.policy,
        "action": e.action.value,
        "payload": json.dumps(e.payload),
        "status": status.value,
        "attempts": 0,
        "fence": 0,
        "accepted_at": e.accepted_at,
        "coalescing": coalescing,
        "grp": e.group,
    }
