"""Debian's Chromium, headless, driven by Selenium through Debian's chromedriver: the live
page's browser test and its bench. Nothing is downloaded: both binaries come from the
machine (``deploy/browser/ensure-chromium`` installs them), and the browser is kept off
the network but for the page it is pointed at."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

#: where Debian's packages chromium and chromium-driver put them
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

#: headless, and none of the background traffic a closed network refuses
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
)


def missing() -> str | None:
    """What of the browser is missing on this machine, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            return f"{path} (run deploy/browser/ensure-chromium)"
    return None


@contextmanager
def chromium(profile: Path, width: int = 1400, height: int = 1600) -> Iterator[Any]:
    """A headless Chromium with a fresh profile in ``profile``, its console kept
    (``driver.get_log("browser")``)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[str]:
    """The console's errors since the last call (reading the log empties it)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
