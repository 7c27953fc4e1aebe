"""Handing held deliveries back to their queues (``HEAD_REFRESH_INTERVAL``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from amqp import spec


def hand_back(channel: Any, tags: Iterable[int]) -> int | None:
    """Return the deliveries of ``channel`` this process holds unacked (``tags``) to
    their queues with one ``basic.nack`` (multiple, requeue) through the highest of
    them; returns that tag (None: nothing held, nothing sent).

    Through that tag, not through "every delivery outstanding" (tag 0): the broker may
    have sent deliveries this process has not handled yet (on the socket, or in an
    inbox). Returned unseen, each would be delivered again while its first copy is
    handled as a live head: the second copy is then taken for a duplicate and acked —
    the event's only message gone — and acking the first ends the session (``unknown
    delivery tag``). A channel's deliveries arrive in the order of their tags, so every
    one through the highest in ``tags`` has reached this process and is either in
    ``tags`` or settled already; and that highest one is outstanding, as the tag of a
    multiple nack must be."""
    last = max(tags, default=None)
    if last is not None:
        # py-amqp sends no basic.nack of its own: the method frame, (tag, multiple, requeue)
        channel.send_method(spec.Basic.Nack, "Lbb", (last, True, True))
    return last
