"""The web dashboard (GET /dashboard) in headless Chromium against the whole platform as real
processes: an admin logs in with a key, deploys and invokes a function, and watches its pod come
up (starting, then idle: each step, as the gateway heard the pod's events), the node's two mock
GPUs' vRAM bars, and the call on the latency chart labelled cold; a wrong key and an invoker key
are refused on the login form, saying why.

Needs Debian's chromium (`sudo infra/install-chromium.sh`) and the playwright package (the `test`
extra), which drives that browser and never downloads one of its own; without them these tests
FAIL with that hint rather than skip.
"""

import asyncio
import os
import re
import shutil
from pathlib import Path

import aiohttp
import pytest

from thaw_core.store.apikeys import INVOKER, ApiKeys

from tests.platform.conftest import deploy, echo_spec, invoke

CHROMIUM = Path("/usr/bin/chromium")
INSTALL = "run `sudo infra/install-chromium.sh` and `scripts/install.sh` (the `test` extra brings playwright)"
FIGURE = Path(__file__).resolve().parents[2] / "bench" / "figures" / "dashboard.png"
WAIT_MS = 20_000  # for what the page shows after a poll: polls come every 0.4-1 s


@pytest.fixture
async def browser():
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail(f"no playwright to drive the browser: {INSTALL}")
    if not CHROMIUM.exists():
        pytest.fail(f"no {CHROMIUM}: {INSTALL}")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield browser
        finally:
            await browser.close()


async def open_dashboard(browser, url: str, key: str):
    """A fresh page at /dashboard, the key typed into its login form and sent."""
    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    await page.goto(url + "/dashboard")
    await page.get_by_label("Admin API key").fill(key)
    await page.get_by_role("button", name="Open").click()
    return page


async def test_an_admin_watches_a_cold_start_appear_on_the_dashboard(platform, browser, r, tmp_path):
    from playwright.async_api import expect

    key = await ApiKeys(r).create("default")
    page = await open_dashboard(browser, platform.url, key)
    await expect(page.get_by_role("heading", name="Functions")).to_be_visible(timeout=WAIT_MS)
    assert key not in page.url, "the key never goes in the address"
    vram = page.get_by_role("meter")
    await expect(vram).to_have_count(2, timeout=WAIT_MS)
    await expect(vram.first).to_have_attribute("aria-valuemax", "24576")

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
        await deploy(http, platform.url, echo_spec(max_pods=1))
        await expect(page.locator("tr[data-fn=echo]")).to_contain_text("ok", timeout=WAIT_MS)
        call = asyncio.create_task(invoke(http, platform.url, "echo", b"hello"))
        pod = page.locator("tr[data-pod]")
        await expect(pod).to_have_count(1, timeout=WAIT_MS)
        status, body, name = await call
        assert (status, body) == (200, b"hello")
        await expect(pod).to_have_attribute("data-state", "idle", timeout=WAIT_MS)
        await expect(pod).to_contain_text(name)
        # every step of its start, with how long each took, though the start takes less than a poll,
        # then busy: the waiting call leased its first slot
        await expect(pod.locator("td.history")).to_have_text(
            re.compile(r"starting\s[\d.]+\sm?s\s→\sidle\s[\d.]+\sm?s\s→\sbusy"))
        await expect(page.locator("circle[data-start=cold]")).to_have_count(1, timeout=WAIT_MS)
        await expect(page.locator("circle[data-start=cold] title")).to_contain_text("cold call of echo")
        await expect(page.get_by_role("meter", name=re.compile(r"GPU \d vRAM reserved")).and_(
            page.locator("[aria-valuenow='2048']"))).to_have_count(1, timeout=WAIT_MS)
        for i in range(8):  # warm calls for the chart beside the cold one
            assert (await invoke(http, platform.url, "echo", b"warm-%d" % i))[0] == 200
        await expect(page.locator("circle[data-start=warm]")).to_have_count(8, timeout=WAIT_MS)

    await page.screenshot(path=tmp_path / "dashboard.png", full_page=True)
    print(f"\nscreenshot: {tmp_path / 'dashboard.png'}")
    if os.environ.get("THAW_UPDATE_FIGURES"):  # the README's picture; a test run leaves the tree alone
        shutil.copyfile(tmp_path / "dashboard.png", FIGURE)


@pytest.mark.parametrize("role, says", [
    (None, "missing or unknown API key"),
    (INVOKER, "the dashboard needs an admin key of tenant 'default'; this key is an invoker key"),
])
async def test_the_login_form_says_why_a_key_is_refused(platform, browser, r, role, says):
    from playwright.async_api import expect

    key = await ApiKeys(r).create("default", role=role) if role else "thaw_no-such-key"
    page = await open_dashboard(browser, platform.url, key)
    await expect(page.get_by_role("alert").filter(has_text=says)).to_be_visible(timeout=WAIT_MS)
    await expect(page.get_by_label("Admin API key")).to_be_visible()
    await expect(page.get_by_role("heading", name="Functions")).to_be_hidden()
    assert await page.evaluate("sessionStorage.length") == 0, "a refused key is not kept"
