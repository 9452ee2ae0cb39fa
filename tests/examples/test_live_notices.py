"""The user page's live notices in a real, headless Chromium: the Starlette example under
uvicorn on SQLite, a private Redis, and a real `arq abadges.worker.Settings` process.

A badge the worker awards shows on the open page as a toast, and the header counts it; clicking
the count marks the awards seen; the page goes on showing notices after Redis restarts under
it. With `ABADGES_UPDATE_DOCS_IMAGES=1` the screenshot of the toasts is also saved to
`docs/images/toast.png` (see `test_browser.py`).
"""

from __future__ import annotations

import datetime
import functools
import pathlib
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from abadges.testing import RedisServer
from examples import store
from tests.support import worker
from tests.support.browser import screenshot
from tests.support.example_site import call, serve, wait_for_subscriptions

T = TypeVar("T")

USER = "zoe"
#: Seconds a condition of the page has to come true: the worker picks a job up within half a
#: second, and the server's subscription reconnects to Redis within a few.
WAIT = 15
#: The days of the addict badge (30 in a row); the last one is posted, the others recorded.
DAYS = [datetime.date(2024, 5, 1) + datetime.timedelta(days=n) for n in range(30)]


async def in_thread(function: Callable[..., T], *args: Any) -> T:
    # Selenium blocks: it drives the browser from a thread, while the app serves here.
    return await anyio.to_thread.run_sync(functools.partial(function, *args))


def wait_until(
    browser: webdriver.Chrome, condition: Callable[[webdriver.Chrome], Any], expected: str
) -> Any:
    """Wait for `condition`; fail naming what was `expected` and what the page shows."""
    try:
        return WebDriverWait(browser, WAIT, poll_frequency=0.05).until(condition)
    except TimeoutException:
        shown = {
            "data-live": live_state(browser),
            "count": browser.find_element(By.CSS_SELECTOR, "#unseen .count").text,
            "toasts": toast_titles(browser),
        }
        raise AssertionError(f"Not within {WAIT}s: {expected}; the page shows {shown}.") from None


def toast_titles(browser: webdriver.Chrome) -> list[str]:
    """The titles of the toasts shown, oldest first, but those leaving."""
    return [
        title.text
        for title in browser.find_elements(By.CSS_SELECTOR, "#toasts .toast:not(.leaving) .title")
    ]


def wait_for_toast(browser: webdriver.Chrome, title: str) -> None:
    wait_until(browser, lambda b: title in toast_titles(b), f"a toast {title!r}")


def wait_for_count(browser: webdriver.Chrome, count: int) -> None:
    """Wait until the header counts `count` new badges, in its text and its label."""
    label = f"{count} new badge" + ("" if count == 1 else "s")
    wait_until(
        browser,
        lambda b: (
            b.find_element(By.CSS_SELECTOR, "#unseen .count").text == str(count)
            and b.find_element(By.ID, "unseen").get_attribute("aria-label") == label
        ),
        f"the count {count} ({label!r})",
    )


def open_page(browser: webdriver.Chrome, url: str) -> None:
    browser.get(url)
    assert browser.find_element(By.TAG_NAME, "h1").text == USER
    wait_until(browser, lambda b: live_state(b) == "open", "the stream open")
    # From now on, every state the stream goes through (see `live_states`).
    browser.execute_script(
        "window.liveStates = [];"
        "new MutationObserver(() => window.liveStates.push(document.body.dataset.live))"
        ".observe(document.body, {attributes: true, attributeFilter: ['data-live']});"
    )
    assert browser.find_element(By.CSS_SELECTOR, "#unseen .count").text == "0"


def live_state(browser: webdriver.Chrome) -> str | None:
    """`body[data-live]`: "open" since the stream (re)opened, "reconnecting" after an error."""
    return browser.find_element(By.TAG_NAME, "body").get_attribute("data-live")


def live_states(browser: webdriver.Chrome) -> list[str]:
    """The states `body[data-live]` went through since the stream first opened: an error
    ("reconnecting") and each reopening ("open")."""
    states: list[str] = browser.execute_script("return window.liveStates")
    return states


def take_screenshot(browser: webdriver.Chrome) -> None:
    # Once the toasts have slid in: mid-animation they are half transparent.
    wait_until(
        browser,
        lambda b: b.execute_script("return document.getAnimations().length") == 0,
        "the animations over",
    )
    screenshot(browser, "toast")


def mark_seen(browser: webdriver.Chrome) -> None:
    """Click the header's count, as the page offers: it marks the awards seen, and the toasts
    go."""
    browser.find_element(By.ID, "unseen").click()
    wait_for_count(browser, 0)
    wait_until(
        browser, lambda b: not b.find_elements(By.CSS_SELECTOR, "#toasts .toast"), "no toast"
    )
    assert "has-new" not in (browser.find_element(By.ID, "unseen").get_attribute("class") or "")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_page_shows_a_badge_the_worker_awards_and_outlives_a_redis_restart(
    browser: webdriver.Chrome,
    site_env: dict[str, str],
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: pathlib.Path,
) -> None:
    # App and worker queue and publish in a private Redis: the test restarts it.
    monkeypatch.setenv("ABADGES_REDIS_URL", redis_server.url)
    env = {**site_env, "ABADGES_REDIS_URL": redis_server.url}
    log = tmp_path / "worker.log"
    async with serve("starlette") as client:
        async with worker(env, log) as process:
            # A fresh user's page: the stream open, and the server reading it (its position
            # fixed, so that nothing published from now on is missed).
            await in_thread(open_page, browser, f"{client.base_url}/users/{USER}")
            await wait_for_subscriptions(redis_server.url, 1)

            # Twenty-nine days in a row recorded, then the thirtieth visit over HTTP: the
            # request awards only the inline weekly badge, and queues addict for the worker.
            for day in DAYS[:-1]:
                await store.add_visit(USER, day)
            visit = {"day": DAYS[-1].isoformat()}
            body = await call(client, "POST", f"/users/{USER}/visits", visit)
            assert [award["slug"] for award in body["awarded"]] == ["weekly"]
            await in_thread(wait_for_toast, browser, "You earned Addict")
            await in_thread(wait_for_count, browser, 2)
            assert "You earned This week" in await in_thread(toast_titles, browser)
            await in_thread(take_screenshot, browser)
        assert process.returncode == 0, log.read_text()
        assert "Traceback" not in log.read_text()
        unseen = await call(client, "GET", f"/users/{USER}/unseen")
        assert [award["slug"] for award in unseen["awards"]] == ["addict", "weekly"]

        # Clicking the count marks both seen; the unseen list is then empty.
        await in_thread(mark_seen, browser)
        assert await call(client, "GET", f"/users/{USER}/unseen") == {
            "user": USER,
            "count": 0,
            "awards": [],
        }

        # Redis restarts (empty: it keeps nothing on disk) while the page stays open. The
        # server's subscription reconnects and reads on; the next grant is published and shown.
        await redis_server.stop()
        await redis_server.start()
        await wait_for_subscriptions(redis_server.url, 1)
        grant = {"badge": "windfall", "reason": "A thousand points at once"}
        await call(client, "POST", f"/users/{USER}/grants", grant, status=201)
        await in_thread(wait_for_toast, browser, "You earned Windfall")
        await in_thread(wait_for_count, browser, 1)
        [windfall] = (await call(client, "GET", f"/users/{USER}/unseen"))["awards"]
        assert windfall["slug"] == "windfall"
        # The server's subscription reconnected under the response, which stayed open: the
        # page's EventSource never saw an error, and had nothing to resume.
        assert await in_thread(live_states, browser) == []
