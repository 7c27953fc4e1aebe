"""Entry point: ``carousel-flower`` — Celery's Flower with basic auth, on our broker."""

from __future__ import annotations

import logging
import secrets
import sys
from collections.abc import Callable

from tornado.log import enable_pretty_logging

from scheduler.celery_app import create_celery
from scheduler.flower.settings import FlowerSettings
from shared.preflight import flower_auth_problem

log = logging.getLogger(__name__)

#: the user of the password generated when FLOWER_BASIC_AUTH is unset
GENERATED_USER = "admin"


def _no_reply_is_not_a_failure(record: logging.LogRecord) -> bool:
    """Flower asks the workers for their details at start and on refresh, and warns
    "Inspect method ... failed" when no worker answered — which is simply the case until
    the first worker is up (``make up`` starts Flower with the rest). Drop that one;
    keep the warning for a broker connection error."""
    return record.msg != "Inspect method %s failed"


def auth_refusal(configured: str) -> str | None:
    """Why Flower must not start with ``FLOWER_BASIC_AUTH=configured``, or None. Unset
    is fine (a password is generated); a known placeholder is as open as no password."""
    if not configured.strip():
        return None
    problem = flower_auth_problem(configured)
    if problem is None:
        return None
    return (
        f"FLOWER_BASIC_AUTH {problem}: set it to user:password with a real password "
        "(e.g. admin:$(openssl rand -hex 16)), or unset it for one generated at each start"
    )


def basic_auth(configured: str, new_password: Callable[[], str]) -> tuple[str, str | None]:
    """Flower's ``--basic-auth`` and, when ``configured`` is empty, the password made for
    this run by ``new_password`` (user ``admin``), which the user must be told."""
    if configured.strip():
        return configured, None
    password = new_password()
    return f"{GENERATED_USER}:{password}", password


def flower_argv(settings: FlowerSettings, extra: list[str]) -> list[str]:
    """Flower's command line from the settings, then ``extra`` (which may override them).
    Retired elastic workers leave Flower's worker list ``FLOWER_PURGE_OFFLINE_WORKERS``
    seconds after going offline (Flower's default keeps them listed, Offline, for good)."""
    purge = settings.flower_purge_offline_workers
    return [
        "flower",
        f"--port={settings.flower_port}",
        f"--address={settings.flower_address}",
        f"--basic-auth={settings.flower_basic_auth}",
        *([f"--purge_offline_workers={purge}"] if purge else []),
        *extra,
    ]


def main(argv: list[str] | None = None) -> None:
    settings = FlowerSettings()
    refusal = auth_refusal(settings.flower_basic_auth)
    if refusal is not None:
        sys.exit(f"carousel-flower: refusing to start: {refusal}")
    auth, generated = basic_auth(settings.flower_basic_auth, lambda: secrets.token_urlsafe(16))
    settings = settings.model_copy(update={"flower_basic_auth": auth})
    # Flower's own logging (tornado's), set up now rather than when Flower parses its
    # options, so that the password line looks like Flower's other lines
    enable_pretty_logging()
    if generated is not None:
        log.warning(
            "FLOWER_BASIC_AUTH is not set: log in to Flower as %s with password %s "
            "(made for this run; set FLOWER_BASIC_AUTH=user:password to choose one)",
            GENERATED_USER,
            generated,
        )
    logging.getLogger("flower.inspector").addFilter(_no_reply_is_not_a_failure)
    app = create_celery(settings)
    app.start(flower_argv(settings, sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
