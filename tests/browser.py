"""Headless Chromium for the dashboard tests, driven through chromedriver.

Selenium is synchronous; the hub under test runs on the test's event loop, so every
browser call goes through a worker thread and the loop keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,860",
)


def browser_binaries() -> tuple[str, str]:
    """Chromium and chromedriver, or a failure under CI and a skip elsewhere."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    message = (
        "headless Chromium is missing (chromium and chromium-driver); "
        "tools/install-browser.sh installs them"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def chromium(profile: Path) -> Iterator[Page]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = browser_binaries()
    options = Options()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(
        service=Service(executable_path=driver_path), options=options
    )
    try:
        yield Page(driver)
    finally:
        driver.quit()


class Page:
    """A browser tab; every call runs off the event loop."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    async def open(self, url: str) -> None:
        await asyncio.to_thread(self.driver.get, url)

    async def js(self, script: str, *args: Any) -> Any:
        return await asyncio.to_thread(self.driver.execute_script, script, *args)

    async def wait_for(self, script: str, *, what: str, timeout: float = 15.0) -> Any:
        """Evaluate ``script`` until it returns something truthy, within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.js(script)
            if value:
                return value
            if time.monotonic() > deadline:
                state = await self.js("return document.body.dataset.connection")
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what} "
                    f"(connection state: {state})"
                )
            await asyncio.sleep(0.05)

    async def connection(self) -> str:
        return str(await self.js("return document.body.dataset.connection"))

    async def wait_for_state(self, state: str, timeout: float = 15.0) -> None:
        await self.wait_for(
            f"return document.body.dataset.connection === {state!r}",
            what=f"connection state {state!r}",
            timeout=timeout,
        )

    async def screenshot(self, path: Path) -> None:
        await asyncio.to_thread(self.driver.save_screenshot, str(path))
