"""A server action as a simcloud operation: which operation each action starts (and the
task state a server shows while it runs), the operation's params from the action's
body (checked as Nova checks it, per microversion), the operation's id and fencing token
from the request's headers, and the cloud's refusal as Nova's error answer."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Request

from shared.cloud import FENCING_HEADER, OPERATION_HEADER
from simcloud.actions import Operation
from simcloud.compute.errors import Fault, bad_request, conflict, not_found
from simcloud.compute.versions import Version
from simcloud.errors import CloudError, Conflict, Invalid, NotFound, StaleToken
from simcloud.model import Cloud

#: server action -> (simcloud action, task state while it runs)
ACTIONS: dict[str, tuple[str, str]] = {
    "os-start": ("heal", "powering-on"),
    "unpause": ("heal", "unpausing"),
    "os-stop": ("stop", "powering-off"),
    "pause": ("pause", "pausing"),
    "os-migrateLive": ("live_migrate", "migrating"),
    "migrate": ("migrate", "resize_prep"),
    "resize": ("resize", "resize_prep"),
    "rebuild": ("update", "rebuilding"),
    "evacuate": ("heal", "rebuilding"),
}
#: actions whose success Nova asks to confirm (VERIFY_RESIZE)
CONFIRMED = frozenset({"migrate", "resize"})


def operation_of(request: Request) -> tuple[str, int]:
    """The operation a call names (else a new id) and its fencing token (0 if none)."""
    op_id = request.headers.get(OPERATION_HEADER) or str(uuid.uuid4())
    raw = request.headers.get(FENCING_HEADER)
    try:
        token = int(raw) if raw else 0
    except ValueError:
        raise bad_request(f"Invalid {FENCING_HEADER}: {raw!r}") from None
    return op_id, token


def action_params(kind: str, args: Any, version: Version) -> dict[str, Any]:
    """simcloud's params of a server action, its body checked as Nova's would be."""
    body = args if isinstance(args, dict) else {}
    if kind == "os-migrateLive":
        if not isinstance(args, dict) or "host" not in args or "block_migration" not in args:
            raise bad_request("Invalid input: os-migrateLive needs 'host' and 'block_migration'")
        if args["block_migration"] == "auto" and version < (2, 25):
            raise bad_request("Invalid input: block_migration 'auto' needs microversion 2.25")
        if "force" in args and version < (2, 30):
            raise bad_request("Invalid input: 'force' needs microversion 2.30")
        if "disk_over_commit" in args and version >= (2, 25):
            raise bad_request("Invalid input: 'disk_over_commit' is gone since 2.25")
        return _host_param(args.get("host"))
    if kind == "evacuate":
        if version < (2, 14) and "onSharedStorage" not in body:
            raise bad_request("Invalid input: evacuate needs 'onSharedStorage' before 2.14")
        if version >= (2, 14) and "onSharedStorage" in body:
            raise bad_request("Invalid input: 'onSharedStorage' is gone since 2.14")
        return {}
    if kind == "migrate":
        if body.get("host") and version < (2, 56):
            raise bad_request("Invalid input: migrate to a given host needs microversion 2.56")
        return _host_param(body.get("host"))
    if kind in ("resize", "rebuild"):
        key, param = ("flavorRef", "flavor") if kind == "resize" else ("imageRef", "image")
        value = body.get(key)
        if not isinstance(value, str) or not value:
            raise bad_request(f"Invalid input: {kind} needs '{key}'")
        return {param: value}
    return {}


def _host_param(host: Any) -> dict[str, Any]:
    if host is None:
        return {}
    if not isinstance(host, str) or not host:
        raise bad_request(f"Invalid input: bad host {host!r}")
    return {"host": host}


def start(
    cloud: Cloud,
    op_id: str,
    action: str,
    target: str,
    token: int,
    params: dict[str, Any],
    refused: int = 409,
) -> Operation:
    """Starts (or finds again) the operation; one the cloud refused (or that failed,
    when found again) is an error answer, as Nova refuses an action the server's
    state forbids."""
    try:
        op = cloud.start_action(op_id, action, target, token=token, params=params)
    except NotFound as exc:
        raise not_found(str(exc)) from exc
    except StaleToken as exc:
        raise conflict(f"stale fencing token: {exc}") from exc
    except Conflict as exc:
        raise conflict(str(exc)) from exc
    except Invalid as exc:
        raise bad_request(str(exc)) from exc
    except CloudError as exc:
        raise Fault(exc.status, "badRequest", str(exc)) from exc
    if op.state == "failed":
        kind = "forbidden" if refused == 403 else "conflictingRequest"
        raise Fault(refused, kind, f"Cannot {action} {target}: {op.error}")
    return op
