"""Every console page in headless Chromium at a phone's width (390 px) and a desktop's (1400 px),
over the demo's data, signed in as an approver: no sideways scroll, every navigation link on
screen, no text squeezed into a column a few letters wide, the page's key content displayed;
the dark scheme follows the system; lists refresh without a page reload. Screenshots of every
page at both widths are kept (the directory is printed; ELK_RESOLVER_SCREENSHOTS chooses it)."""

from __future__ import annotations

import asyncio

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from elk_resolver.operations import triage
from tests.support.browser import emulate, full_page_screenshot, headless_chromium, require_browser, screenshot_dir
from tests.support.console_data import BOB, demo_console

pytestmark = pytest.mark.timeout(600)

WIDTHS = (390, 1400)
OVERVIEW_WIDTHS = (360, 1216, 2560)  # the narrowest phone, the tightest two columns, a wall display

PROBE = """
const de = document.documentElement, vw = de.clientWidth;
// shown: laid out, visible, and not inside the table heads a phone's layout hides for screen readers
const shown = e => e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden'
  && !(e.closest('thead') && getComputedStyle(e.closest('thead')).position === 'absolute');
const name = e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className && e.className.baseVal === undefined
  ? '.' + String(e.className).split(' ').join('.') : '') + ' "' + (e.innerText || e.textContent || '').trim().slice(0, 40) + '"';
const wide = [...document.querySelectorAll('body *')].filter(e => {
  if (!shown(e) || e.closest('pre, svg')) return false;
  const r = e.getBoundingClientRect(); return r.width > 0 && (r.right > vw + 1 || r.left < -1);
}).slice(0, 5).map(name);
const squeezed = [...document.querySelectorAll('td, th, dt, dd, a, button, label, p, h1, h2, h3, li, code, span')].filter(e => {
  const t = (e.innerText || '').trim(); if (t.length < 10 || !shown(e)) return false;
  const r = e.getBoundingClientRect(), fs = parseFloat(getComputedStyle(e).fontSize);
  return r.width < fs * 4 && r.height > fs * 4;
}).slice(0, 5).map(name);
const spill = [...document.querySelectorAll('main table, main figure, main dl, main section, main form')].filter(t => {
  if (!shown(t)) return false;
  const r = t.getBoundingClientRect(), p = t.parentElement.getBoundingClientRect();
  return r.right > p.right + 1;
}).slice(0, 5).map(t => name(t) + ' ends at ' + Math.round(t.getBoundingClientRect().right) + ', its column at '
  + Math.round(t.parentElement.getBoundingClientRect().right));
const nav = [...document.querySelectorAll('header nav a')].filter(a => {
  const r = a.getBoundingClientRect(); return !(shown(a) && r.left >= 0 && r.right <= vw + 0.5);
}).map(name);
return {scroll: de.scrollWidth, client: vw, wide, squeezed, spill, nav, links: document.querySelectorAll('header nav a').length};
"""


@pytest.fixture(scope="module")
async def demo(postgres, template_database, kafka, tmp_path_factory):
    require_browser()
    async with demo_console(postgres, template_database, kafka, tmp_path_factory.mktemp("state")) as d:
        yield d


def pages(ids: dict) -> dict[str, str]:
    """page -> the CSS selector of what a person came for, which must be displayed."""
    return {
        "/": "#overview-live .cards", "/errors": "#errors-live table", f"/errors/{ids['index_error']}": "#solutions .solution",
        "/errors?q=logstash-0": "#errors-live tbody tr", "/approvals": "#approvals-live",
        f"/approvals/{ids['approval']}": "#outcome", "/runs": "#runs-live tr.dry", "/patterns": "#patterns-live table",
        "/playbooks": "#playbooks-live table", "/audit": "#audit-live tbody tr", "/api.html": "main table",
        "/asyncapi.html": "main table", "/sessions": "main table", "/incidents": "#open table", "/objects": "main table", "/playbooks/out-of-memory-restart/effect": "#effect", "/no-such-page": "#ways-back",
        "/login": "#username",
    }


def sign_in(driver, base: str) -> None:
    driver.get(f"{base}/login?next=/")
    driver.find_element(By.ID, "username").send_keys("alice")
    driver.find_element(By.ID, "password").send_keys("alice-pw")
    driver.find_element(By.ID, "sign-in").click()
    WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#overview-live"))


async def test_every_page_fits_a_phone_and_a_desktop_with_its_content_shown(demo, tmp_path):
    folder = screenshot_dir(tmp_path / "screenshots")
    driver = await asyncio.to_thread(headless_chromium)
    problems: list[str] = []

    def visit_all() -> None:
        sign_in(driver, demo.base)
        for width in WIDTHS:
            emulate(driver, width)
            for path, selector in pages(demo.ids).items():
                driver.get(demo.base + path)
                WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.readyState") == "complete")
                found = driver.execute_script(PROBE)
                where = f"{path} at {width}px"
                if found["scroll"] > found["client"]:
                    problems.append(f"{where}: scrolls sideways ({found['scroll']} > {found['client']}): {found['wide']}")
                if found["spill"]:
                    problems.append(f"{where}: wider than its column: {found['spill']}")
                if found["squeezed"]:
                    problems.append(f"{where}: text squeezed letter by letter: {found['squeezed']}")
                if found["nav"] or found["links"] < 8:
                    problems.append(f"{where}: navigation links off screen: {found['nav']}")
                key = driver.find_elements(By.CSS_SELECTOR, selector)
                if not key or not key[0].is_displayed():
                    problems.append(f"{where}: {selector} is not shown")
                name = path.strip("/").replace("/", "_").replace("?", "_").replace("=", "-") or "overview"
                full_page_screenshot(driver, folder / f"{width}-{name}.png")

    def overview_at_other_widths() -> None:
        for width in OVERVIEW_WIDTHS:
            emulate(driver, width)
            driver.get(demo.base + "/")
            found = driver.execute_script(PROBE)
            if found["scroll"] > found["client"] or found["spill"] or found["squeezed"] or found["nav"]:
                problems.append(f"/ at {width}px: {found}")
            full_page_screenshot(driver, folder / f"{width}-overview.png")

    try:
        await asyncio.to_thread(visit_all)
        await asyncio.to_thread(overview_at_other_widths)
    finally:
        await asyncio.to_thread(driver.quit)
    assert problems == [], "\n".join(problems)


async def test_the_dark_scheme_follows_the_system_setting(demo, tmp_path):
    folder = screenshot_dir(tmp_path / "screenshots")
    driver = await asyncio.to_thread(headless_chromium)

    def background(dark: bool, width: int) -> list[int]:
        emulate(driver, width, dark=dark)
        driver.get(demo.base + "/")
        full_page_screenshot(driver, folder / f"{width}-overview-{'dark' if dark else 'light'}.png")
        rgb = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
        return [int(v) for v in rgb[rgb.index("(") + 1:rgb.index(")")].split(",")[:3]]

    try:
        light = await asyncio.to_thread(background, False, 1400)
        dark = await asyncio.to_thread(background, True, 1400)
        await asyncio.to_thread(background, True, 390)
    finally:
        await asyncio.to_thread(driver.quit)
    assert sum(light) > 600 and sum(dark) < 120, (light, dark)


async def test_a_list_refreshes_without_a_page_reload(demo):
    """A note written elsewhere (the CLI, another browser) appears in the open audit log; the page
    itself is never reloaded (a marker set on it survives)."""
    driver = await asyncio.to_thread(headless_chromium)
    error_id = demo.ids["index_error"]

    def open_audit() -> None:
        emulate(driver, 1400)
        driver.get(f"{demo.base}/audit?object=error:{error_id}")
        WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "live").is_displayed())
        driver.execute_script("window.__notReloaded = true")

    def shows(text: str) -> bool:
        return text in driver.find_element(By.ID, "audit-live").text and driver.execute_script(
            "return window.__notReloaded === true")

    try:
        await asyncio.to_thread(open_audit)
        await asyncio.sleep(1)
        await triage.add_note(demo.pool, error_id, "written elsewhere while the page is open", BOB)
        await asyncio.to_thread(lambda: WebDriverWait(driver, 30, 0.25).until(lambda d: shows("written elsewhere")))
    finally:
        await asyncio.to_thread(driver.quit)
