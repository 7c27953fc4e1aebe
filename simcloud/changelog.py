"""The bounded change log: every mutation's entry, oldest first, found by version."""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

Change = dict[str, Any]


class ChangeLog:
    """Keeps the newest ``size`` entries (``{"kind", "type", "object", "version"}``),
    their versions strictly increasing. Dropped entries are removed in batches, so an
    append is amortised O(1) and a lookup O(log n)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"log size must be at least 1, not {size}")
        self.size = size
        self._entries: list[Change] = []
        self._start = 0  # entries before this index are dropped, not yet deleted

    def __len__(self) -> int:
        return len(self._entries) - self._start

    def append(self, entry: Change) -> None:
        self._entries.append(entry)
        if len(self) > self.size:
            self._start += 1
            if self._start >= self.size:
                del self._entries[: self._start]
                self._start = 0

    def since(self, rv: int, current: int, limit: int | None = None) -> list[Change] | None:
        """The entries with version > ``rv`` in order (at most ``limit``); ``None`` when
        some of them are gone (``rv`` older than the oldest entry minus one) or ``rv``
        is ahead of ``current`` (a version this cloud never had: relist)."""
        if rv > current:
            return None
        if rv == current:
            return []
        if not len(self) or rv < self._entries[self._start]["version"] - 1:
            return None
        first = bisect_right(self._entries, rv, lo=self._start, key=_version)
        end = len(self._entries) if limit is None else first + max(0, limit)
        return self._entries[first:end]


def _version(entry: Change) -> int:
    version: int = entry["version"]
    return version
