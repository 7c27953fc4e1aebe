"""Which keys have had no work for long enough to be retired (pure: the time is an
argument).

A key is *used* when it enters the mapping and whenever one of its events is
dispatched; it is *idle* while it holds no event and its VM has none in flight. The keys
are kept in the order of their last use, so finding those unused for ``idle_for`` seconds
reads only them, however many keys there are. The adapter's time is the wall clock of
the dispatch log: a step of it changes only how soon a key retires, never whether that
is safe (the ledger decides: :meth:`shared.mapping_store.MappingStore.retire_keys`).
"""

from __future__ import annotations

from collections.abc import Callable

#: (host, vm, policy)
KeyT = tuple[str, str, str]


class IdleKeys:
    def __init__(self) -> None:
        self._since: dict[KeyT, float] = {}  # in the order of last use, oldest first

    def used(self, key: KeyT, now: float) -> None:
        """The key was used at ``now``: it goes to the back of the line."""
        self._since.pop(key, None)
        self._since[key] = now

    def forget(self, key: KeyT) -> None:
        self._since.pop(key, None)

    def due(
        self, now: float, idle_for: float, limit: int, busy: Callable[[KeyT], bool]
    ) -> list[KeyT]:
        """Up to ``limit`` keys unused since ``now - idle_for`` and not ``busy``, the
        longest unused first. A busy one among them counts as used now (it has work: its
        idle time starts again once that is done)."""
        cutoff = now - idle_for
        out: list[KeyT] = []
        again: list[KeyT] = []
        for key, since in self._since.items():
            if since > cutoff or len(out) >= limit:
                break
            (again if busy(key) else out).append(key)
        for key in again:
            self.used(key, now)
        return out
