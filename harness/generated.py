"""The generated parts of the documents: a part sits between a begin and an end marker
(HTML comments, invisible when rendered), and only that part is rewritten — the rest of
the document is written by hand. Used by :mod:`harness.settings_doc`, :mod:`bench.docs`
and :mod:`harness.faults.docs`."""

from __future__ import annotations

from pathlib import Path


def current(path: Path, begin: str, end: str) -> str:
    """What ``path`` holds from ``begin`` to ``end``, the markers included."""
    text = path.read_text()
    return text[text.index(begin) : text.index(end) + len(end)]


def write(path: Path, begin: str, end: str, part: str) -> None:
    """Replace that part of ``path`` with ``part`` (which carries the markers)."""
    path.write_text(path.read_text().replace(current(path, begin, end), part))
