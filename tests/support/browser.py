"""Headless Chromium from Debian's ``chromium`` and ``chromium-driver`` packages, driven by
selenium (nothing downloaded: the driver and browser are the system's). ``.ci/run`` installs
them when missing.

Selenium is blocking: call it through ``asyncio.to_thread`` when the server under test runs in
the test's own event loop.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def require_browser() -> None:
    if CHROMIUM and CHROMEDRIVER:
        return
    message = "Debian's chromium and chromium-driver are not installed (.ci/run installs them)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def headless_chromium(width: int = 1400, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    require_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--no-first-run", "--disable-extensions",
                # nothing leaves the machine: no updates, sync, metrics or field trials
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--metrics-recording-only", "--no-default-browser-check",
                "--disable-domain-reliability", "--disable-client-side-phishing-detection"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def emulate(driver, width: int, height: int = 900, *, dark: bool = False) -> None:
    """A viewport of exactly ``width`` CSS pixels (a window cannot be narrower than ~500 px;
    a phone is), as a phone below 800 px (the viewport meta tag applies), in the light or dark
    colour scheme."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 800})
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia",
                           {"features": [{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]})


def screenshot_dir(default) -> Path:
    """Where the browser tests keep their screenshots: ``ELK_RESOLVER_SCREENSHOTS`` or ``default``
    (the test's tmp_path); printed so a person (or CI's artifact step) finds them."""
    folder = Path(os.environ.get("ELK_RESOLVER_SCREENSHOTS") or default)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {folder}")
    return folder


def full_page_screenshot(driver, path: Path) -> None:
    """The whole page as one PNG (the viewport's width, the document's height)."""
    import base64

    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 8000), "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))
def sign_in(driver, base: str, name: str, password: str, next_path: str) -> None:
    """Sign in on the console's login page, landing on ``next_path``."""
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/login?next={next_path}")
    driver.find_element(By.ID, "username").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "sign-in").click()
