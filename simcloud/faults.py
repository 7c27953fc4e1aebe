"""Faults of the API itself, not of the cloud's objects: a slow or failing API and a
cut change stream. They change no object, so they bump no resource version."""

from __future__ import annotations

import math
import random
from typing import Any

from simcloud.errors import Invalid

MAX_DELAY = 60.0


class ApiFaults:
    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self.delay = 0.0
        self.fail_rate = 0.0
        self.until: float | None = None  # None: until cleared
        self.cut_until = -math.inf

    def set_api(self, now: float, delay: float, fail_rate: float, duration: float | None) -> None:
        if not 0 <= delay <= MAX_DELAY:
            raise Invalid(f"delay must be within 0..{MAX_DELAY:g} s, not {delay!r}")
        if not 0 <= fail_rate <= 1:
            raise Invalid(f"fail_rate must be within 0..1, not {fail_rate!r}")
        if duration is not None and not 0 < duration < math.inf:
            raise Invalid(f"duration must be > 0 s, not {duration!r}")
        self.delay, self.fail_rate = delay, fail_rate
        self.until = None if duration is None else now + duration

    def set_stream_cut(self, now: float, seconds: float) -> None:
        if not 0 < seconds < math.inf:
            raise Invalid(f"seconds must be > 0, not {seconds!r}")
        self.cut_until = now + seconds

    def clear(self) -> None:
        self.delay = self.fail_rate = 0.0
        self.until = None
        self.cut_until = -math.inf

    def expire(self, now: float) -> None:
        if self.until is not None and now >= self.until:
            self.delay = self.fail_rate = 0.0
            self.until = None

    def decide(self, now: float) -> tuple[float, bool]:
        """For one API call now: how long to delay it and whether to fail it."""
        self.expire(now)
        fail = self.fail_rate > 0 and self._rng.random() < self.fail_rate
        return self.delay, fail

    def stream_cut(self, now: float) -> bool:
        return now < self.cut_until

    def status(self, now: float) -> dict[str, Any]:
        self.expire(now)
        return {
            "api": {
                "delay": self.delay,
                "fail_rate": self.fail_rate,
                "remaining": None if self.until is None else max(0.0, self.until - now),
            }
            if self.delay or self.fail_rate
            else None,
            "stream_cut_remaining": max(0.0, self.cut_until - now),
        }
