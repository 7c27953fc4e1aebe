"""Errors of the producer, under one root."""

from __future__ import annotations

from shared.errors import CarouselError


class ProducerError(CarouselError):
    """Root of the producer's errors."""


class BrokerUnavailable(ProducerError):
    """The broker could not be reached or did not confirm: nothing was accepted."""


class Unroutable(ProducerError):
    """A message came back unroutable even after its queue was declared again."""
