"""Drivers by name: ``DRIVER`` names an entry point of the group ``carousel.drivers``.

Carousel's own drivers are registered there like any plug-in's (its ``pyproject.toml``):
``simulated`` (:mod:`scheduler.worker.simulated_driver`), ``webhook``
(:mod:`scheduler.worker.webhook_driver`), ``simcloud``
(:mod:`scheduler.worker.simcloud_driver`) and ``openstack``
(:mod:`scheduler.worker.openstack_driver`). An installed package adds one by
declaring an entry point naming a :class:`~scheduler.worker.driver.DriverPlugin`
subclass (``docs/extending.md``).

The worker checks its driver at start (:func:`check`): an unknown name, a setting the
driver refuses or a driver that cannot be built stops it with one line saying what to
fix, rather than failing every task later.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from scheduler.worker.driver import Driver, DriverConfig, DriverPlugin
from scheduler.worker.errors import DriverMisconfigured
from scheduler.worker.settings import WorkerSettings
from shared.plugins import Registry
from shared.settings import explain_settings

GROUP = "carousel.drivers"
REGISTRY: Registry[DriverPlugin[Any]] = Registry(GROUP, DriverPlugin, "driver")


def driver_class(name: str) -> type[DriverPlugin[Any]]:
    """The driver registered as ``name`` (:class:`~shared.plugins.UnknownPlugin` lists
    the known names)."""
    return REGISTRY.load(name)


def read_config(cls: type[DriverPlugin[Any]]) -> DriverConfig:
    """The settings of the driver ``cls``, from the environment."""
    try:
        return cls.config_model()
    except ValidationError as exc:
        raise DriverMisconfigured(explain_settings(exc)) from None


def build_driver(settings: WorkerSettings, config: DriverConfig | None = None) -> Driver:
    """The driver ``settings.driver`` names, built from ``config`` (its own settings read
    from the environment when None)."""
    cls = driver_class(settings.driver)
    if config is None:
        config = read_config(cls)
    elif not isinstance(config, cls.config_model):
        raise DriverMisconfigured(
            f"the {settings.driver} driver takes a {cls.config_model.__name__}, "
            f"not a {type(config).__name__}"
        )
    return cls.from_config(config, settings)


def check(settings: WorkerSettings) -> None:
    """At start: build the driver once and close it, so that what would fail every
    action (an unknown name, a bad or missing setting) stops the worker instead.
    Raises :class:`~shared.plugins.PluginError` or :class:`DriverMisconfigured`."""
    driver = build_driver(settings)
    close = getattr(driver, "close", None)
    if callable(close):
        close()
