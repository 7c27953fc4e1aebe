"""carousel-flower's command line (scheduler/flower/main.py): the settings become Flower's
options, and Flower knows each option it is given; no known password lets anyone in."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest
from flower.options import options

from harness.processes import free_port
from scheduler.flower.main import auth_refusal, basic_auth, flower_argv
from scheduler.flower.settings import FlowerSettings
from shared.preflight import flower_auth_problem


def test_retired_workers_leave_flower_after_a_minute_by_default() -> None:
    argv = flower_argv(FlowerSettings(), [])
    assert "--purge_offline_workers=60" in argv
    for option in argv[1:]:
        name = option.removeprefix("--").split("=", 1)[0]
        assert name in options, f"Flower has no option {option}"


def test_zero_keeps_offline_workers_listed_and_extra_arguments_come_last() -> None:
    settings = FlowerSettings(FLOWER_PURGE_OFFLINE_WORKERS=0)
    argv = flower_argv(settings, ["--purge_offline_workers=5"])
    assert [a for a in argv if "purge" in a] == ["--purge_offline_workers=5"]
    assert argv[-1] == "--purge_offline_workers=5"


def test_no_known_password_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset, FLOWER_BASIC_AUTH gives user admin a new random password at each start."""
    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)
    configured = FlowerSettings().flower_basic_auth
    assert configured == ""
    assert auth_refusal(configured) is None
    made = [basic_auth(configured, lambda: secrets.token_urlsafe(16)) for _ in range(2)]
    (first, first_password), (second, second_password) = made
    assert first == f"admin:{first_password}" and second == f"admin:{second_password}"
    assert first_password != second_password
    assert flower_auth_problem(first) is None


def test_a_configured_password_is_used_as_it_is() -> None:
    def never() -> str:
        raise AssertionError("no password is generated when one is configured")

    assert basic_auth("ops:fl0wer-Pw,viewer:an0ther", never) == (
        "ops:fl0wer-Pw,viewer:an0ther",
        None,
    )
    argv = flower_argv(FlowerSettings(FLOWER_BASIC_AUTH="ops:fl0wer-Pw"), [])
    assert "--basic-auth=ops:fl0wer-Pw" in argv


@pytest.mark.parametrize(
    ("configured", "refused"),
    [
        ("", False),
        ("ops:fl0wer-Pw", False),
        ("ops:fl0wer-Pw,viewer:an0ther-Pw", False),
        ("admin:carousel", True),  # the old default
        ("admin:change-me", True),  # .env.example's old value
        ("admin:admin", True),
        ("ops:fl0wer-Pw,admin:changeme", True),
        ("ops", True),
        ("ops:", True),
    ],
)
def test_placeholder_or_malformed_passwords_are_refused(configured: str, refused: bool) -> None:
    refusal = auth_refusal(configured)
    assert (refusal is not None) == refused
    if refusal is not None:
        assert refusal.startswith("FLOWER_BASIC_AUTH ") and "set it to user:password" in refusal


def test_carousel_flower_refuses_a_placeholder_in_one_line() -> None:
    """Before connecting to anything: exit code 1, one line naming the setting, the value
    not echoed."""
    env = {
        **os.environ,
        "FLOWER_BASIC_AUTH": "admin:carousel",
        "FLOWER_PORT": str(free_port()),
        "AMQP_URL": "amqp://nobody:nothing@127.0.0.1:1//",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler.flower.main"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith("carousel-flower: refusing to start: FLOWER_BASIC_AUTH has a placeholder")
    assert "carousel" not in err.removeprefix("carousel-flower")
