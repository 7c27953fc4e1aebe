"""Refuse to start a compose deployment whose secrets are unset or placeholders.

docker-compose.yml runs ``python -m shared.preflight`` as the one-shot ``preflight``
service, which every other service waits for (``service_completed_successfully``). It
checks the values compose actually hands the services, exits 0 when all are real, and
otherwise prints one line naming each variable to set in ``.env`` and exits 1, so nothing
starts. ``${VAR:?...}`` interpolation in docker-compose.yml already refuses unset and empty
secrets before anything is built; this adds what interpolation cannot see: placeholders
(``change-me``, ``guest``, ``password``, ...) and values the deployment cannot use.

Nothing here echoes a value: the error names variables and reasons only.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: Variables the compose deployment needs, and what each one is.
REQUIRED: Mapping[str, str] = {
    "RABBITMQ_DEFAULT_USER": "the RabbitMQ account",
    "RABBITMQ_DEFAULT_PASS": "the RabbitMQ password",
    "POSTGRES_PASSWORD": "the ledger database's password",
    "FLOWER_BASIC_AUTH": "Flower's user:password",
    "CAROUSEL_API_TOKEN": "the API bearer token",
    "SIMCLOUD_TOKEN": "simcloud's bearer token",
}

#: Known placeholders and defaults, compared after :func:`_normalise` (case, punctuation and
#: spaces ignored: ``Change_Me`` and ``<change-me>`` are ``changeme``).
PLACEHOLDERS: frozenset[str] = frozenset(
    {
        "admin",
        "carousel",
        "changeit",
        "changeme",
        "changethis",
        "default",
        "example",
        "fixme",
        "guest",
        "letmein",
        "passw0rd",
        "passwd",
        "password",
        "qwerty",
        "replaceme",
        "secret",
        "test",
        "todo",
        "token",
        "xxx",
        "123456",
        "12345678",
    }
)

#: A normalised value starting with one of these is a placeholder too (``change-me-please``,
#: ``your-token-here``).
PLACEHOLDER_PREFIXES: tuple[str, ...] = (
    "changeme",
    "replaceme",
    "yourpassword",
    "yoursecret",
    "yourtoken",
)

#: Characters that cannot stand unencoded in the user or password of the AMQP_URL compose
#: builds (``amqp://USER:PASS@rabbitmq:5672//``) for kombu and aio-pika (yarl), while
#: RabbitMQ takes the same value raw: percent-encoding them would give RabbitMQ a different
#: password than the services send. (``@`` is fine: both split at the last one.)
_AMQP_UNSAFE = re.compile(r"[/?#%\[\]\\\s]")
_AMQP_UNSAFE_USER = re.compile(r"[/?#%\[\]\\\s:]")
#: The same for the password in the ledger's URL (``postgresql+psycopg://carousel:PASS@...``),
#: where SQLAlchemy splits at the first ``@``.
_DB_UNSAFE = re.compile(r"[/?#%\[\]\\\s@]")


@dataclass(frozen=True)
class Problem:
    """One variable that must be set (differently) in ``.env``."""

    variable: str
    reason: str

    def __str__(self) -> str:
        return f"{self.variable} {self.reason}"


def _normalise(value: str) -> str:
    return re.sub(r"[^0-9a-z]", "", value.lower())


def is_placeholder(value: str) -> bool:
    """Whether ``value`` is empty or a known placeholder or default, not a real secret."""
    if not value.strip():
        return True
    norm = _normalise(value)
    return norm in PLACEHOLDERS or any(norm.startswith(p) for p in PLACEHOLDER_PREFIXES)


def _check_secret(name: str, value: str | None) -> Problem | None:
    if value is None or not value.strip():
        return Problem(name, f"is not set ({REQUIRED[name]})")
    if is_placeholder(value):
        return Problem(name, f"is a placeholder ({REQUIRED[name]})")
    return None


def _check_rabbitmq(env: Mapping[str, str]) -> list[Problem]:
    problems: list[Problem] = []
    user = env.get("RABBITMQ_DEFAULT_USER")
    if user is None or not user.strip():
        problems.append(Problem("RABBITMQ_DEFAULT_USER", "is not set (the RabbitMQ account)"))
    elif _normalise(user) == "guest":
        problems.append(
            Problem("RABBITMQ_DEFAULT_USER", "is guest (RabbitMQ allows it from localhost only)")
        )
    elif _AMQP_UNSAFE_USER.search(user):
        problems.append(
            Problem(
                "RABBITMQ_DEFAULT_USER",
                "has a character AMQP_URL cannot carry: / ? # % : [ ] \\ or whitespace",
            )
        )
    password = env.get("RABBITMQ_DEFAULT_PASS")
    problem = _check_secret("RABBITMQ_DEFAULT_PASS", password)
    if problem is None and password is not None and _AMQP_UNSAFE.search(password):
        problem = Problem(
            "RABBITMQ_DEFAULT_PASS",
            "has a character AMQP_URL cannot carry: / ? # % [ ] \\ or whitespace",
        )
    if problem is not None:
        problems.append(problem)
    return problems


def _check_postgres(value: str | None) -> Problem | None:
    name = "POSTGRES_PASSWORD"
    problem = _check_secret(name, value)
    if problem is None and value is not None and _DB_UNSAFE.search(value):
        problem = Problem(
            name, "has a character the ledger's URL cannot carry: / ? # % @ [ ] \\ or whitespace"
        )
    return problem


def flower_auth_problem(value: str) -> str | None:
    """Why ``value`` cannot be Flower's ``--basic-auth`` (a comma-separated list of
    user:password pairs, each with a real password), or None when it can. Flower's own
    launcher refuses the same values outside compose."""
    for entry in value.split(","):
        user, sep, password = entry.partition(":")
        if not sep or not user.strip() or not password:
            return "is not user:password"
        if is_placeholder(password):
            return "has a placeholder password"
    return None


def _check_flower(value: str | None) -> Problem | None:
    name = "FLOWER_BASIC_AUTH"
    if value is None or not value.strip():
        return Problem(name, f"is not set ({REQUIRED[name]})")
    reason = flower_auth_problem(value)
    return None if reason is None else Problem(name, reason)


def check(env: Mapping[str, str]) -> list[Problem]:
    """Every problem with the compose deployment's secrets in ``env``; empty when none."""
    problems = _check_rabbitmq(env)
    for problem in (
        _check_postgres(env.get("POSTGRES_PASSWORD")),
        _check_flower(env.get("FLOWER_BASIC_AUTH")),
        _check_secret("CAROUSEL_API_TOKEN", env.get("CAROUSEL_API_TOKEN")),
        _check_secret("SIMCLOUD_TOKEN", env.get("SIMCLOUD_TOKEN")),
    ):
        if problem is not None:
            problems.append(problem)
    return problems


def error_line(problems: Sequence[Problem]) -> str:
    """The one line the user sees: which variables to set in ``.env``, and why."""
    names = ", ".join(dict.fromkeys(p.variable for p in problems))
    reasons = "; ".join(str(p) for p in problems)
    return (
        f"carousel preflight: refusing to start: set {names} in .env (see .env.example): {reasons}"
    )


def main(env: Mapping[str, str] | None = None) -> int:
    """Check ``env`` (default: the process environment); 0 if it can start, else 1."""
    problems = check(os.environ if env is None else env)
    if problems:
        print(error_line(problems), file=sys.stderr)
        return 1
    print("carousel preflight: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
