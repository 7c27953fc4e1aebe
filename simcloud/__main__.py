"""``python -m simcloud``: serve a simulated cloud over HTTP. Every flag can also be set
by its environment variable (the flag wins); a string default is parsed like a flag."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from types import FrameType

import uvicorn

from shared.http import is_loopback
from simcloud.app import create_app
from simcloud.errors import Invalid
from simcloud.model import Cloud, GroupSpec


def _env(name: str, default: str) -> str:
    return os.environ.get(f"SIMCLOUD_{name}") or default  # empty: the default


def _true(text: str) -> bool:
    """A yes as the services' settings read one (pydantic's booleans)."""
    return text.strip().lower() in {"1", "true", "t", "yes", "y", "on"}


def _group(text: str) -> GroupSpec:
    try:
        return GroupSpec.parse(text)
    except Invalid as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _action_time(text: str) -> tuple[str, float]:
    action, sep, seconds = text.partition("=")
    try:
        if sep:
            return action, float(seconds)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"bad {text!r}: want ACTION=SECONDS, e.g. migrate=5")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m simcloud",
        description="simcloud: a small simulated cloud (hosts, VMs, groups, lifecycle "
        "actions, faults) over HTTP, for testing and demonstrating Carousel.",
    )
    p.add_argument(
        "--host",
        default=_env("HOST", "127.0.0.1"),
        help="address to listen on; any but a loopback one needs --token "
        "(SIMCLOUD_HOST; default %(default)s)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=_env("PORT", "8100"),
        help="port to listen on (SIMCLOUD_PORT; default %(default)s)",
    )
    p.add_argument(
        "--hosts",
        type=int,
        default=_env("HOSTS", "3"),
        help="hosts h1..hN to seed (SIMCLOUD_HOSTS; default %(default)s)",
    )
    p.add_argument(
        "--vms-per-host",
        type=int,
        default=_env("VMS_PER_HOST", "4"),
        help="VMs <host>-vm1..M seeded on each host (SIMCLOUD_VMS_PER_HOST; default %(default)s)",
    )
    env_groups = [g for g in _env("GROUPS", "").split(",") if g.strip()]
    p.add_argument(
        "--group",
        dest="groups",
        action="append",
        type=_group,
        metavar="SPEC",
        help="a group (microservice) NAME:REPLICAS:MIN:MAX, e.g. web:3:1:5, its "
        "replicas NAME-1..R placed round-robin over the hosts; repeatable "
        "(SIMCLOUD_GROUPS, comma-separated: web:3:1:5,db:2:2:4)",
    )
    p.add_argument(
        "--action-seconds",
        type=float,
        default=_env("ACTION_SECONDS", "1"),
        help="how long an action takes (SIMCLOUD_ACTION_SECONDS; default %(default)s)",
    )
    p.add_argument(
        "--action-time",
        dest="action_times",
        action="append",
        metavar="A=S",
        type=_action_time,
        help="how long one action takes, e.g. migrate=5; repeatable "
        "(SIMCLOUD_ACTION_TIMES, comma-separated)",
    )
    p.add_argument(
        "--token",
        default=_env("TOKEN", ""),
        help="bearer token every route but /healthz requires; empty = none, on a loopback "
        "--host only (SIMCLOUD_TOKEN)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=_env("SEED", "0"),
        help="seed of the host-choice tie-breaks and API fault draws "
        "(SIMCLOUD_SEED; default %(default)s)",
    )
    p.add_argument(
        "--log-level",
        default=_env("LOG_LEVEL", "info").lower(),
        choices=["critical", "error", "warning", "info", "debug"],
        help="log level (SIMCLOUD_LOG_LEVEL)",
    )
    p.add_argument(
        "--access-log",
        action="store_true",
        default=_true(_env("ACCESS_LOG", os.environ.get("ACCESS_LOG", "false"))),
        help="log every request, one line each; unset, ACCESS_LOG decides, as for the "
        "Carousel services (SIMCLOUD_ACCESS_LOG)",
    )
    p.set_defaults(
        env_groups=env_groups,
        env_action_times=[t for t in _env("ACTION_TIMES", "").split(",") if t.strip()],
    )
    return p


def open_door(host: str, token: str) -> str | None:
    """Why simcloud must not listen on ``host`` with ``token``, or None: without a token
    anyone who reaches it could inject faults and act on its VMs, which is acceptable on
    a loopback address only (``make up``)."""
    if token or is_loopback(host):
        return None
    return (
        f"refusing to listen on {host or 'every interface'} without a token: "
        "set SIMCLOUD_TOKEN (or --token), or listen on 127.0.0.1"
    )


def main(argv: Sequence[str] | None = None) -> None:
    p = parser()
    args = p.parse_args(argv)
    refusal = open_door(args.host, args.token)
    if refusal is not None:
        p.exit(2, f"{p.prog}: {refusal}\n")
    try:
        groups = args.groups or [_group(g.strip()) for g in args.env_groups]
        times = args.action_times or [_action_time(t.strip()) for t in args.env_action_times]
        cloud = Cloud(
            action_seconds=args.action_seconds, per_action_seconds=dict(times), seed=args.seed
        )
        cloud.seed_inventory(args.hosts, args.vms_per_host, groups)
    except (argparse.ArgumentTypeError, Invalid) as exc:
        p.error(str(exc))
    app = create_app(cloud, args.token)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=args.access_log,
        timeout_graceful_shutdown=5,
    )
    _Server(config, on_exit=app.state.hub.stop).run()


class _Server(uvicorn.Server):
    """uvicorn, which also ends the pending watches when asked to stop: a long-poll would
    otherwise hold the graceful shutdown for its whole timeout."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)


if __name__ == "__main__":
    main()
