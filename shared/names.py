"""Validation of host, VM and policy names (one rule, used by every service)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

NAME_MAX = 128
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
_NAME_RE = re.compile(NAME_PATTERN)
#: the rule in words: what a refusal says (a 422's ``msg``), instead of the pattern
NAME_RULE = (
    f"must be 1 to {NAME_MAX} characters of letters, digits, '.', '_', ':' or '-', "
    "starting with a letter or digit"
)


def is_valid_name(value: str) -> bool:
    return _NAME_RE.fullmatch(value) is not None


def _checked(value: str) -> str:
    if not is_valid_name(value):
        raise PydanticCustomError("name_invalid", NAME_RULE)
    return value


#: A host, VM or policy name: 1-128 chars of ``[A-Za-z0-9_.:-]`` starting alphanumeric.
#: Wide enough for FQDN hosts and UUID VMs; ``/`` and ``#`` are never part of a name,
#: which is what keeps queue names unambiguous (see :mod:`shared.topology`). A value
#: that breaks the rule is refused with :data:`NAME_RULE`; the JSON schema (OpenAPI)
#: carries the pattern and the length.
Name = Annotated[
    str,
    AfterValidator(_checked),
    WithJsonSchema(
        {"type": "string", "pattern": NAME_PATTERN, "minLength": 1, "maxLength": NAME_MAX}
    ),
]
