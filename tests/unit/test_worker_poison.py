"""Tests for scheduler.worker.poison.parse_arguments: what a task message must carry."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.worker.poison import PoisonArguments, parse_arguments

EVENT = {"id": "e", "host": "h", "vm": "v", "policy": "p", "action": "heal", "accepted_at": 1.0}


def test_an_event_and_a_dispatch_id_are_parsed() -> None:
    event, dispatch_id = parse_arguments((EVENT, "d1"), {})
    assert (event.id, event.action, dispatch_id) == ("e", "heal", "d1")


@pytest.mark.parametrize(
    ("args", "kwargs", "says"),
    [
        ((), {}, "got 0 arguments"),
        ((EVENT,), {}, "got 1 arguments"),
        ((EVENT, "d", "extra"), {}, "got 3 arguments"),
        ((EVENT, "d"), {"x": 1}, "['x']"),
        ((EVENT, 7), {}, "dispatch_id is not a string"),
        (({"id": "e"}, "d"), {}, "not an event"),
        (("text", "d"), {}, "not an event"),
        (({**EVENT, "action": "format_disk"}, "d"), {}, "not an event"),
    ],
)
def test_anything_else_is_poison_and_says_why(
    args: tuple[Any, ...], kwargs: dict[str, Any], says: str
) -> None:
    with pytest.raises(PoisonArguments, match=None) as err:
        parse_arguments(args, kwargs)
    assert says in str(err.value)
