"""Errors of the producer, under one root."""

from __future__ import annotations

from shared.errors import CarouselError


class ProducerError(CarouselError):
    """Root of the producer's errors."""


class BrokerUnavailable(ProducerError):
    """The broker could not be reached or did not confirm: nothing was accepted."""


class Unroutable(ProducerError):
    """A message came back unroutable even after its queue was declared again."""


class VmHasUnfinishedEvents(ProducerError):
    """A VM cannot be removed while events of it are accepted and not finished."""

    def __init__(self, count: int) -> None:
        super().__init__(f"the VM still has {count} unfinished events")
        self.count = count


class VmBeingRemoved(ProducerError):
    """Events for a VM that is being removed are refused."""

    def __init__(self, host: str, vm: str) -> None:
        super().__init__(f"VM {vm!r} on host {host!r} is being removed")
