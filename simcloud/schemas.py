"""Request bodies of simcloud's HTTP API (unknown fields refused: 422 naming them)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from simcloud.actions import MAX_DURATION
from simcloud.faults import MAX_DELAY
from simcloud.inventory import NAME_RE

Name = Annotated[str, Field(pattern=f"^{NAME_RE.pattern}$")]
Fraction = Annotated[float, Field(ge=0, le=1)]
ActionName = Literal[
    "heal",
    "migrate",
    "live_migrate",
    "resize",
    "pause",
    "stop",
    "update",
    "upgrade",
    "scale_out",
    "scale_in",
]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ActionRequest(Body):
    id: str = Field(min_length=1, max_length=256, description="the operation's id")
    action: ActionName
    token: int = Field(0, ge=0, description="fencing token: below one seen for id -> 409")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="duration (s), host (migrate), flavor (resize), image (update)...",
    )


class NewVm(Body):
    name: Name
    host: Name
    group: Name | None = None


class VmFault(Body):
    kind: Literal["vm_down", "vm_up"]
    vm: Name


class HostFault(Body):
    kind: Literal["host_down", "host_up", "host_maintenance"]
    host: Name


class UtilisationFault(Body):
    kind: Literal["utilisation"]
    vm: Name | None = None
    group: Name | None = None
    cpu: Fraction | None = None
    ram: Fraction | None = None

    @model_validator(mode="after")
    def _one_target(self) -> UtilisationFault:
        if (self.vm is None) == (self.group is None):
            raise ValueError("name exactly one of vm and group")
        if self.cpu is None and self.ram is None:
            raise ValueError("give cpu, ram or both")
        return self


class FlapFault(Body):
    kind: Literal["flap"]
    vm: Name
    down_for: float = Field(ge=0, le=MAX_DURATION)


class ApiFault(Body):
    kind: Literal["api"]
    delay: float = Field(0, ge=0, le=MAX_DELAY)
    fail_rate: Fraction = 0
    duration: float | None = Field(None, gt=0)


class StreamCut(Body):
    kind: Literal["stream_cut"]
    seconds: float = Field(gt=0, le=MAX_DURATION)


Fault = Annotated[
    VmFault | HostFault | UtilisationFault | FlapFault | ApiFault | StreamCut,
    Field(discriminator="kind"),
]
