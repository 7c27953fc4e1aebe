"""What the API fuzz tests share: bounded, reproducible Hypothesis settings, a driver
that runs one OpenAPI operation through schemathesis' generated cases in both modes, and
the checks Carousel adds to schemathesis' own.

The tests drive Hypothesis themselves (``operation.as_strategy`` under ``@given``) rather
than through ``schemathesis.pytest``: its lazy ``from_fixture(...).parametrize()`` breaks
on pytest 9 (it sets ``Function._nodeid``, which pytest 9 no longer has), and one pytest
item per operation, named after it, reads better anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, BaseSchema, Case, CheckContext, GenerationMode, Response
from schemathesis.checks import CheckFunction
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

#: a check on one response (schemathesis' signature)
Check = CheckFunction
#: one operation of an OpenAPI schema, as schemathesis loads it
Operation = APIOperation[Any, Any, Any, Any]

#: modest and reproducible: the same examples on every run, no example database on disk,
#: and no shrinking (each step calls a live service: a failure is reported at once, with
#: the request that triggered it as a curl command, instead of minutes later)
FUZZ = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
REQUEST_PARTS = frozenset({"body", "query", "path", "header", "cookie"})

#: schemathesis' checks, named so that none is off by default or by accident (a test
#: asserts that these are all of them). On every response: the conformance of its status
#: code, content type, headers and body to the OpenAPI, no 5xx, invalid data refused
#: (``negative_data_rejection``: a 4xx), valid data accepted (``positive_data_acceptance``,
#: schemathesis' expected statuses: a 2xx, or a 401, 404 or 409, which a valid request
#: gets without the token or naming something unknown or in the wrong state).
#: ``missing_required_header``, ``unsupported_method`` and ``allow_header_conformance``
#: act on the cases they generate, ``use_after_free``, ``ensure_resource_availability``
#: and ``object_level_authorization`` in stateful runs; ``ignored_auth`` (a 2xx without
#: valid credentials) needs a configured token and is on only where there is one.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "use_after_free",
    "ensure_resource_availability",
    "object_level_authorization",
)

#: a response is what the OpenAPI documents: for an answer the fuzzing cannot meet (a
#: 503, a 413), tried on its own (``not_a_server_error`` would refuse a 503)
CONFORMANCE: list[CheckFunction] = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def config(*, token: bool, off: Collection[str] = (), **extra: Any) -> schemathesis.Config:
    """Positive and negative cases, every check on but those named in ``off``. Without a
    token configured the APIs still declare the bearer scheme but do not enforce it:
    then no Authorization header is generated, and ``ignored_auth`` does not apply."""
    checks = {name: {"enabled": name not in off} for name in CHECKS}
    return schemathesis.Config.from_dict(
        {
            "generation": {"mode": "all", "with-security-parameters": token},
            "checks": {**checks, "ignored_auth": {"enabled": token}},
            **extra,
        }
    )


def labels(openapi: dict[str, Any]) -> list[str]:
    """``"METHOD /path"`` of every operation of an OpenAPI document."""
    return [
        f"{method.upper()} {path}"
        for path, item in openapi["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch"}
    ]


def operation(schema: BaseSchema, label: str) -> Operation:
    method, path = label.split(" ", 1)
    found: Operation = schema[path][method]
    return found


def fuzz(op: Operation, test: Callable[[Case[Any]], None], how: settings = FUZZ) -> None:
    """``test`` on generated cases of ``op``, positive then negative. An operation with
    nothing to get wrong (no parameter, no body, no credentials) has no negative case."""
    raw = op.definition.raw
    secured = bool(raw.get("security")) and op.schema.config.generation.with_security_parameters
    breakable = bool(raw.get("parameters")) or "requestBody" in raw or secured
    for mode in op.schema.config.generation.modes:
        if mode is GenerationMode.NEGATIVE and not breakable:
            continue

        @how
        @given(case=op.as_strategy(generation_mode=mode))
        def run(case: Case[Any]) -> None:
            test(case)

        try:
            run()
        except Unsatisfiable:
            if mode is GenerationMode.NEGATIVE:
                continue  # nothing to get wrong but a parameter that takes any string
            raise


# -- checks on top of schemathesis' own ------------------------------------------------
def _names_in(value: Any) -> set[str]:
    if isinstance(value, dict):
        return {str(k) for k in value} | {n for v in value.values() for n in _names_in(v)}
    if isinstance(value, list):
        return {n for v in value for n in _names_in(v)}
    return set()


def _declared_properties(openapi: dict[str, Any]) -> set[str]:
    components = openapi.get("components", {}).get("schemas", {})
    return {p for c in components.values() for p in c.get("properties", {})}


def validation_error_names_the_field(
    ctx: CheckContext, response: Response, case: Case[Any]
) -> None:
    """A 422 lists its errors, each with a ``loc`` in a part of the request (and a
    parameter's name, for a parameter) and a message; for a JSON object body, at least
    one error names a field: one the body has, or one its schema declares."""
    if response.status_code != 422:
        return
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail, f"a 422 without a list of errors: {detail!r}"
    for err in detail:
        loc = err["loc"]
        assert isinstance(loc, list) and loc and loc[0] in REQUEST_PARTS, err
        assert isinstance(err["msg"], str) and err["msg"], err
        if loc[0] != "body":
            assert len(loc) >= 2, f"a {loc[0]} error names no parameter: {err}"
    if isinstance(case.body, dict) and case.body and case.media_type == "application/json":
        known = _names_in(case.body) | _declared_properties(case.operation.schema.raw_schema)
        named = {x for err in detail for x in err["loc"][1:] if isinstance(x, str)}
        undecodable = any(err["type"] == "json_invalid" for err in detail)
        assert undecodable or named & known, f"no error names a field: {detail!r}"


def refused_without_the_token(ctx: CheckContext, response: Response, case: Case[Any]) -> None:
    """Called without the configured token: 401 or 403, never 2xx, 5xx or anything else."""
    assert response.status_code in (401, 403), (
        f"{case.operation.label} without the token answered {response.status_code}"
    )


#: the bearer token of the fuzz runs that set one (schemathesis never generates it)
TOKEN = "fuzz-token-4c0a1b9e2d7f"
