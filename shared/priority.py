"""Priority classes: the one definition the producer, the monitoring policies and the
dispatcher share (docs/design.md §5)."""

from __future__ import annotations

from enum import StrEnum


class Priority(StrEnum):
    """An event's class. A higher class is served first, within each class's minimum
    share (``CLASS_MIN_SHARES``)."""

    URGENT = "urgent"
    NORMAL = "normal"
    BACKGROUND = "background"


#: the classes, highest first: the order in which they are served
ORDER: tuple[Priority, ...] = (Priority.URGENT, Priority.NORMAL, Priority.BACKGROUND)

#: the class of an event that names none and whose policy has none
DEFAULT = Priority.NORMAL


def parse_table(text: str, what: str) -> dict[str, str]:
    """``"a=x,b=y"`` as ``{"a": "x", "b": "y"}`` (blanks around items ignored; an empty
    text is an empty table). Raises ValueError naming ``what`` and the bad item."""
    table: dict[str, str] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise ValueError(f"{what}: {item!r} is not name=value")
        if name in table:
            raise ValueError(f"{what}: {name!r} given twice")
        table[name] = value
    return table
