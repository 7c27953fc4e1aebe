"""Settings every service reads. Each service extends :class:`CommonSettings` with its own
and builds it in its entry point, never at import time."""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.db import Pool
from shared.models import Action
from shared.topology import DEFAULT_PROFILE, PREFIX_PATTERN, Topology

#: how every settings class of Carousel reads the environment: no .env file of its own
#: (`make up` and compose provide the variables), unknown variables ignored, and an empty
#: variable means the default (docker-compose.yml passes ``${NAME:-}`` through, and the
#: defaults are written once: in the Field)
ENVIRONMENT = SettingsConfigDict(
    env_file=None, extra="ignore", populate_by_name=True, env_ignore_empty=True
)


#: variables renamed since 0.1.0, each with its new name: a service refuses to start while
#: an old one is set, rather than ignore a value someone meant
RENAMED = {
    "SCHEDULER_HOST": "DISPATCHER_HOST",
    "SCHEDULER_PORT": "DISPATCHER_PORT",
    "SCHEDULER_LEASE_SECONDS": "DISPATCHER_LEASE_SECONDS",
    "WEBHOOK_TIMEOUT": "DRIVER_HTTP_TIMEOUT",
}


class CommonSettings(BaseSettings):
    model_config = ENVIRONMENT

    @model_validator(mode="before")
    @classmethod
    def _no_old_names(cls, data: object) -> object:
        old = [name for name in RENAMED if os.environ.get(name)]
        if old:
            raise ValueError(
                "; ".join(f"{name} is now called {RENAMED[name]}: rename it" for name in old)
            )
        return data

    amqp_url: str = Field(
        "amqp://guest:guest@localhost:5672//",
        description="RabbitMQ URL (AMQP_URL), or the URLs of a cluster's nodes separated "
        "by ';' (amqp://a:5672//;amqp://b:5672//): a service connects to the first that "
        "answers and, when that node goes away, to the next, so list each machine's "
        "nearest node first. Anything but amqp:// or amqps:// URLs is refused at start.",
    )
    carousel_prefix: str = Field(
        "carousel",
        pattern=PREFIX_PATTERN,
        description="Prefix of every queue and exchange name (CAROUSEL_PREFIX).",
    )
    carousel_db_url: str = Field(
        "sqlite:///data/carousel.db",
        description="SQLAlchemy URL of the event ledger shared by all services "
        "(CAROUSEL_DB_URL). SQLite for one machine, PostgreSQL for many.",
    )
    db_pool_size: int = Field(
        5,
        ge=1,
        le=1000,
        description="Connections to a PostgreSQL ledger each process keeps open "
        "(DB_POOL_SIZE). A worker's pool children are processes of their own, as are "
        "PRODUCER_PROCESSES: size PostgreSQL's max_connections for all of them (each "
        "process may add DB_POOL_OVERFLOW).",
    )
    db_pool_overflow: int = Field(
        10,
        ge=0,
        le=1000,
        description="Connections a process may open beyond DB_POOL_SIZE under load, "
        "closed when returned (DB_POOL_OVERFLOW).",
    )

    @property
    def db_pool(self) -> Pool:
        """The ledger connection pool's size and overflow, per process."""
        return Pool(self.db_pool_size, self.db_pool_overflow)

    queue_type: Literal["classic", "quorum"] = Field(
        "classic",
        description="Type of every durable queue (event, actions, completions, dead-letter "
        "queues): classic, or quorum for a RabbitMQ cluster (each queue replicated over "
        "its nodes). Every service must use the same; an existing queue keeps its type, "
        "so a switch needs new queues — a new CAROUSEL_PREFIX or drained, deleted ones "
        "(QUEUE_TYPE). On quorum queues (RabbitMQ before 4.0) a removed VM's queues are "
        "kept: their delete-if-empty is not implemented there.",
    )
    log_level: str = Field("INFO", description="Logging level (LOG_LEVEL).")
    access_log: bool = Field(
        False,
        description="Log every HTTP request the producer and the admin APIs answer, one "
        "line each (uvicorn's access log; simcloud follows it too, Flower logs none); "
        "false = only what the services themselves have to say (ACCESS_LOG).",
    )
    carousel_api_token: str = Field(
        "",
        description="Bearer token required on every producer call but health checks, and "
        "on the dispatcher admin API's POST /pause, POST /resume, PUT /limits, PUT "
        "/classes, PUT /weights and POST /dead-letters/{id}/redrive (CAROUSEL_API_TOKEN); "
        "empty = no auth. Required under compose.",
    )
    claim_lease_seconds: float = Field(
        30.0,
        gt=0,
        description="Seconds a worker's claim on an event lasts unless renewed (it renews "
        "every third of it while the action runs); once it expires, the event may be "
        "taken over by another task message. The dispatcher's sweeper takes over expired "
        "claims only after the ledger has answered it for this long (CLAIM_LEASE_SECONDS).",
    )
    admin_views_open: bool = Field(
        True,
        description="The admin APIs' views (dispatcher GET /stats, /dispatches, /classes, "
        "/weights, /limits, /waiting/{id}, "
        "/shards, /dead-letters; elasticity GET /status) answer without the token; false = they "
        "need it too (ADMIN_VIEWS_OPEN).",
    )
    action_profiles: dict[str, list[str]] = Field(
        default_factory=dict,
        description='Worker profiles and their actions, JSON, e.g. {"slow": ["migrate", '
        '"live_migrate"]}; each profile has its own actions queue '
        "(<prefix>.actions.<profile>) and worker pool; other actions go to the "
        '"default" profile, <prefix>.actions (ACTION_PROFILES).',
    )

    @field_validator("amqp_url")
    @classmethod
    def _amqp_urls(cls, value: str) -> str:
        for url in amqp_urls(value):
            if not re.match(r"amqps?://", url):
                raise ValueError(f"not an amqp:// or amqps:// URL: {url!r}")
        return value

    @property
    def amqp_urls(self) -> list[str]:
        """AMQP_URL as a list: one URL per broker node, in the order to try them."""
        return amqp_urls(self.amqp_url)

    @field_validator("action_profiles")
    @classmethod
    def _profiles(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        actions = {a.value for a in Action}
        for profile, listed in value.items():
            if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", profile):
                raise ValueError(f"bad profile name {profile!r}")
            if unknown := set(listed) - actions:
                raise ValueError(f"profile {profile!r} lists unknown actions {sorted(unknown)}")
        return value

    @property
    def profiles(self) -> list[str]:
        """Every worker profile, the default one first."""
        return [DEFAULT_PROFILE, *(p for p in self.action_profiles if p != DEFAULT_PROFILE)]

    def profile_for(self, action: str) -> str:
        for profile, actions in self.action_profiles.items():
            if action in actions:
                return profile
        return DEFAULT_PROFILE

    @property
    def topology(self) -> Topology:
        return Topology(self.carousel_prefix, self.queue_type)


class LimitSettings(CommonSettings):
    """The global cap, read by the dispatcher (which enforces it) and by the elasticity
    worker (which grows no profile past what could run at once)."""

    max_parallel: int = Field(
        10,
        ge=1,
        description="Actions running at once overall (MAX_PARALLEL); the elasticity "
        "worker grows no profile past what could run at once.",
    )


def amqp_urls(value: str) -> list[str]:
    """The node URLs of an ``AMQP_URL`` (``;``-separated, as kombu and Celery read it)."""
    urls = [part.strip() for part in value.split(";") if part.strip()]
    if not urls:
        raise ValueError("no broker URL")
    return urls


def explain_settings(exc: ValidationError) -> str:
    """A settings class's validation error in one line, each problem naming its
    environment variable and the value given (``DRIVER_HTTP_TIMEOUT: Input should be greater
    than 0 (got '-1')``): what an operator sets, not pydantic's report for programmers."""
    problems = []
    for error in exc.errors():
        name, *rest = [str(part) for part in error["loc"]] or [""]
        where = ".".join([name.upper(), *rest]) if name else ""
        message = error["msg"].removeprefix("Value error, ")
        if where and error["type"] != "missing":
            message += f" (got {error['input']!r})"
        named = where and not message.startswith(f"{where}: ")  # said once, not twice
        problems.append(f"{where}: {message}" if named else message)
    return "; ".join(problems)
