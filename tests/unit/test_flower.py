"""carousel-flower's command line (scheduler/flower/main.py): the settings become Flower's
options, and Flower knows each option it is given."""

from __future__ import annotations

from flower.options import options

from scheduler.flower.main import flower_argv
from scheduler.flower.settings import FlowerSettings


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
