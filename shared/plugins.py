"""Plug-ins registered by name: Python entry points, as pytest finds its plugins and
Celery its commands.

A package declares a plug-in in its ``pyproject.toml``::

    [project.entry-points."carousel.drivers"]
    echo = "carousel_echo.driver:EchoDriver"

and once it is installed, ``DRIVER=echo`` names it. Carousel's own drivers and policy
kinds are registered the same way, in Carousel's ``pyproject.toml``: there is no second
list of built-ins to keep in step, and a plug-in cannot quietly take a built-in's name
(two packages registering one name is an error naming both).

A :class:`Registry` is one group of entry points and the class its plug-ins must
derive from. It reads the installed packages' metadata when asked (nothing is cached:
a worker asks once at start), so a package installed since is found.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, distribution, entry_points
from typing import Generic, TypeVar, cast

from shared.errors import CarouselError

T = TypeVar("T")


class PluginError(CarouselError):
    """A plug-in cannot be used; the message says which and what to do."""


class UnknownPlugin(PluginError):
    """No installed package registers the name."""

    def __init__(self, what: str, name: str, group: str, known: list[str]) -> None:
        listed = ", ".join(known) if known else "none (is Carousel installed: pip install -e .?)"
        super().__init__(
            f"unknown {what} {name!r}; known: {listed} (entry points of group {group!r}: "
            "install the package that provides it)"
        )
        self.name = name
        self.known = known


class BrokenPlugin(PluginError):
    """The name is registered, but what it names cannot be loaded or is no plug-in of
    the group's kind."""


@dataclass(frozen=True)
class Registry(Generic[T]):
    """The plug-ins of one entry-point ``group``: each names a subclass of ``base``.
    ``what`` names a plug-in in messages ("driver", "policy kind")."""

    group: str
    base: type
    what: str

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted({ep.name for ep in entry_points(group=self.group)})

    def names_of(self, package: str) -> list[str]:
        """The names the installed ``package`` registers, sorted (Carousel's own, for
        the documents generated from them)."""
        found = distribution(package).entry_points.select(group=self.group)
        return sorted(ep.name for ep in found)

    def load(self, name: str) -> type[T]:
        """The class registered as ``name``: :class:`UnknownPlugin` (listing the known
        names) if none is, :class:`BrokenPlugin` if it cannot be imported, is not a
        subclass of ``base``, or two packages register ``name``."""
        found = list(entry_points(group=self.group, name=name))
        if not found:
            raise UnknownPlugin(self.what, name, self.group, self.names())
        if len({ep.value for ep in found}) > 1:
            raise BrokenPlugin(
                f"{self.what} {name!r} is registered more than once: "
                + ", ".join(_where(ep) for ep in found)
                + "; uninstall one of them"
            )
        ep = found[0]
        try:
            obj = ep.load()
        except Exception as exc:  # whatever the plug-in's import raises
            raise BrokenPlugin(
                f"{self.what} {name!r} ({_where(ep)}) cannot be loaded: {exc!r}"
            ) from exc
        if not (isinstance(obj, type) and issubclass(obj, self.base)):
            raise BrokenPlugin(
                f"{self.what} {name!r} ({_where(ep)}) is {obj!r}, not a subclass of "
                f"{self.base.__module__}.{self.base.__qualname__}"
            )
        return cast(type[T], obj)


def _where(ep: EntryPoint) -> str:
    """``module:Class from package 1.0``: what an entry point names, and who registers it."""
    dist = ep.dist
    return f"{ep.value} from {dist.name} {dist.version}" if dist is not None else ep.value
