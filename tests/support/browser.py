"""The headless Chromium of the browser tests (`tests/examples/test_browser.py`,
`test_live_notices.py`): Debian's `chromium` and `chromium-driver` (`apt-get install chromium
chromium-driver`); without them the tests are skipped, except under CI, where they fail."""

from __future__ import annotations

import base64
import contextlib
import os
import pathlib
import shutil
from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

from tests.support import IN_CI

ROOT = pathlib.Path(__file__).parents[2]
CHROMIUM = pathlib.Path("/usr/bin/chromium")
CHROMEDRIVER = pathlib.Path("/usr/bin/chromedriver")
SCREENSHOTS = ROOT / "build" / "screenshots"
DOCS_IMAGES = ROOT / "docs" / "images"
WINDOW = (1200, 900)
# The machine's network is closed: without the background-networking flags Chromium keeps
# trying to reach Google's services, and floods the log with refused connections.
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
]


@contextlib.contextmanager
def start_browser(tmp_path: pathlib.Path) -> Iterator[webdriver.Chrome]:
    """A headless Chromium of a profile of its own in `tmp_path`, driven through chromedriver;
    quit on exit. Skips the test (fails it under CI) when Chromium is not installed."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        message = (
            f"{' and '.join(missing)} not found: the browser test needs Debian's chromium "
            "and chromium-driver packages"
        )
        if IN_CI:
            pytest.fail(f"{message}; CI must run it (.ci/run installs them).")
        pytest.skip(message)
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    # The path given, chromedriver is not looked for (Selenium Manager would download one).
    service = Service(str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(browser: webdriver.Chrome, name: str) -> None:
    """Save the whole page, not only the window, as `name`.png (and, when asked, in the
    docs)."""
    size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    if os.environ.get("ABADGES_UPDATE_DOCS_IMAGES") == "1":
        shutil.copyfile(path, DOCS_IMAGES / path.name)
