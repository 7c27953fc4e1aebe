"""Validation of host, VM and policy names (one rule, used by every service)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import StringConstraints

NAME_MAX = 128
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
_NAME_RE = re.compile(NAME_PATTERN)

#: A host, VM or policy name: 1-128 chars of ``[A-Za-z0-9_.:-]`` starting alphanumeric.
#: Wide enough for FQDN hosts and UUID VMs; ``/`` and ``#`` are never part of a name,
#: which is what keeps queue names unambiguous (see :mod:`shared.topology`).
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=NAME_MAX)]


def is_valid_name(value: str) -> bool:
    return _NAME_RE.fullmatch(value) is not None
