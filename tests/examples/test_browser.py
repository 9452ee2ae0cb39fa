"""What a person sees: the Starlette example's pages in a real, headless Chromium.

The browser is the `browser` fixture of `conftest.py` (see `tests/support/browser.py`); the
full-page screenshots go to `build/screenshots/`, and with `ABADGES_UPDATE_DOCS_IMAGES=1` also
to `docs/images/`, the docs' copies (the pages show today's dates, so a run on another day
would change them).
"""

from __future__ import annotations

import datetime

import anyio.to_thread
import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.support.browser import screenshot
from tests.support.example_site import call, serve


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_person_sees_the_catalogue_a_user_page_and_the_leaderboard(
    browser: webdriver.Chrome, site_env: dict[str, str]
) -> None:
    async with serve("starlette") as client:
        await fill(client)
        # Selenium blocks: it drives the browser from a thread, while the app serves here.
        await anyio.to_thread.run_sync(look_at_pages, browser, str(client.base_url))


async def fill(client: httpx.AsyncClient) -> None:
    """A small site: ana climbed to Gold, dan and eve tie, bob visited all May, cy is on her
    way, with a moderator's grant taken back."""
    for points in (3000, 2500, 500, 2500, 3000):
        await call(client, "POST", "/users/ana/points", {"points": points})
    for user in ("dan", "eve"):
        for points in (6000, 2000):
            await call(client, "POST", f"/users/{user}/points", {"points": points})
    may = [datetime.date(2024, 5, 1) + datetime.timedelta(days=n) for n in range(30)]
    for day in may:
        await call(client, "POST", "/users/bob/visits", {"day": day.isoformat()})
    # The worker would award it; this test runs none, so a moderator does.
    addict = {"badge": "addict", "by": "mod:7", "reason": "Visited every day of May"}
    await call(client, "POST", "/users/bob/grants", addict, status=201)
    for points in (3000, 1000):
        await call(client, "POST", "/users/cy/points", {"points": points})
    for day in may[:12]:
        await call(client, "POST", "/users/cy/visits", {"day": day.isoformat()})
    bronze = {"badge": "points", "level": 1, "by": "mod:7", "reason": "Imported from the old forum"}
    await call(client, "POST", "/users/cy/grants", bronze, status=201)
    mistake = {"badge": "points", "by": "mod:9", "reason": "The import counted her points twice"}
    await call(client, "POST", "/users/cy/revocations", mistake)


def look_at_pages(browser: webdriver.Chrome, base_url: str) -> None:
    # The catalogue: every listed level, each picture loaded; the hidden windfall left out.
    browser.get(f"{base_url}/")
    assert browser.title == "Catalogue · Badges"
    names = browser.find_elements(By.CSS_SELECTOR, ".level .name")
    assert [name.text for name in names] == ["Bronze", "Silver", "Gold", "Addict", "This week"]
    assert all(name.is_displayed() for name in names)
    assert "Windfall" not in browser.find_element(By.TAG_NAME, "main").text
    loaded = browser.execute_script(
        "return [...document.images].map(img => [img.src, img.complete && img.naturalWidth > 0])"
    )
    assert len(loaded) == 6  # The header's star and one picture per level.
    assert all(ok for _, ok in loaded), loaded
    medal = browser.find_element(By.CSS_SELECTOR, ".tier-gold .medal")
    assert medal.value_of_css_property("background-image").startswith("linear-gradient")
    screenshot(browser, "catalogue")

    # Cy's page: what she holds, a bar per badge ahead, as wide as her progress.
    browser.get(f"{base_url}/users/cy")
    assert browser.find_element(By.TAG_NAME, "h1").text == "cy"
    held = browser.find_elements(By.CSS_SELECTOR, ".held-badge .name")
    assert [name.text for name in held] == ["This week", "Windfall"]
    assert browser.find_element(By.CSS_SELECTOR, ".held-badge .times").text == "\u00d72"
    goals = browser.find_elements(By.CSS_SELECTOR, ".goal")
    expected = [("Bronze", "4,000 / 5,000 points", 0.8), ("Addict", "12 / 30 days in a row", 0.4)]
    assert len(goals) == len(expected)
    for goal, (name, label, fraction) in zip(goals, expected, strict=True):
        assert goal.find_element(By.CSS_SELECTOR, ".name").text == name
        assert goal.find_element(By.CSS_SELECTOR, ".count").text == label
        track = goal.find_element(By.CSS_SELECTOR, ".track")
        assert track.get_attribute("aria-label") == f"{name}: {label}"
        bar = track.find_element(By.CSS_SELECTOR, ".bar")
        shown = bar.size["width"] / track.size["width"]
        assert abs(shown - fraction) <= 0.02, (name, shown)
    history = browser.find_element(By.CSS_SELECTOR, ".history").text
    assert "The import counted her points twice" in history
    assert "mod:" not in browser.page_source
    screenshot(browser, "user")

    # Ana's windfalls, four of them, show once.
    browser.get(f"{base_url}/users/ana")
    [windfall] = [
        badge
        for badge in browser.find_elements(By.CSS_SELECTOR, ".held-badge")
        if badge.find_element(By.CSS_SELECTOR, ".name").text == "Windfall"
    ]
    assert windfall.find_element(By.CSS_SELECTOR, ".times").text == "\u00d74"

    # The leaderboard: dan and eve tie for second, so bob is fourth; each links to a page.
    browser.get(f"{base_url}/leaderboard")
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.standing")
    standings = [
        (row.find_element(By.CSS_SELECTOR, ".rank").text, row.find_element(By.TAG_NAME, "a").text)
        for row in rows
    ]
    assert standings == [("1", "ana"), ("2", "dan"), ("2", "eve"), ("4", "bob"), ("5", "cy")]
    screenshot(browser, "leaderboard")
    rows[3].find_element(By.TAG_NAME, "a").click()
    assert browser.current_url == f"{base_url}/users/bob"
    assert browser.find_element(By.TAG_NAME, "h1").text == "bob"
