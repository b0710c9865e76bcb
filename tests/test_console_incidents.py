"""Issue 20, item 4: see an incident in the console. The node-going-bad scenario runs through
the real pipeline (broker, PostgreSQL, live mode, the recording kubectl); then the incidents page
shows the open hold with its objects and what they share, a person approves some of its objects
(the rest are rejected) and it moves to the past ones, and each object's timeline shows its
events, the decisions naming it and its runs."""

from __future__ import annotations

import asyncio
import re
from html import unescape
from urllib.parse import quote

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from elk_resolver.service import create_app
from tests.support import scenarios as sc
from tests.support.browser import (
    emulate,
    full_page_screenshot,
    headless_chromium,
    require_browser,
    screenshot_dir,
    sign_in,
)
from tests.support.polling import wait_for
from tests.test_console import browser, console_settings, login

NODE_OBJECTS = {"k8s:shop/deployment/checkout", "k8s:shop/deployment/cart", "k8s:payments/deployment/api",
                "k8s:dev/deployment/toy"}  # fmt: skip


async def node_incident(settings, pool, tmp_path):
    s, fake = console_settings(settings, tmp_path, **sc.node_going_bad().settings)
    s = s.model_copy(update={"kubectl_namespaces": ["shop", "payments", "dev"], "kubectl_context": "incident"})
    scenario = sc.node_going_bad()
    await sc.play(s, pool, scenario, fake)
    incident = await pool.fetchval("SELECT id FROM incidents WHERE action = 'node:node-7'")
    assert incident is not None
    return s, fake, incident


def text(html: str) -> str:
    """The page's text with its whitespace collapsed."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


async def test_the_incidents_page_shows_a_hold_its_objects_and_signs_and_some_are_approved(settings, pool, tmp_path):
    s, fake, incident = await node_incident(settings, pool, tmp_path)
    async with create_app(s, ["execute"], serve_http=True) as app, browser() as http:
        base = app.http_url
        async with http.get(f"{base}/incidents") as r:
            assert r.status == 200
            html = await r.text()
        open_part = html[html.index('id="open"'):html.index('id="past"')]
        assert f'href="/incidents/{incident}"' in open_part and "node:node-7" in open_part
        assert all(key in open_part for key in NODE_OBJECTS)
        assert "host = <code>node-7</code>" in open_part
        assert 'href="/incidents"' in html  # the navigation entry

        token = await login(http, base, "alice", "alice-pw")
        async with http.get(f"{base}/incidents/{incident}") as r:
            page = await r.text()
        assert "node node-7 going bad" in page
        # each held object shows its own event's message, never the first object's
        rows = re.findall(r'<tr><td>.*?</tr>', page, re.S)
        for row in rows:
            key = re.search(r'value="k8s:([^/]+)/deployment/([^"]+)"', row)
            if key:
                assert f'pod="{key.group(1)}/{key.group(2)}-' in unescape(row), row
        keys = re.findall(r'name="objects" value="([^"]+)"', page)
        assert set(keys) == NODE_OBJECTS
        chosen = sorted(keys)[:2]
        async with http.post(f"{base}/incidents/{incident}/decide",
                             data={"action": "approve", "objects": chosen, "csrf": token}) as r:
            assert r.status == 200 and "Recorded: approved by alice" in await r.text()
        # the execute stage restarts each approved object once, as alice
        await wait_for(lambda: pool.fetchval("SELECT count(*) FROM execution_history WHERE executed_by = 'alice'"),
                       timeout=60, what="the approved objects' runs")
        await wait_for(lambda: pool.fetchval("SELECT count(*) = 2 FROM execution_history WHERE executed_by = 'alice'"),
                       timeout=60, what="both approved objects run")
        async with http.get(f"{base}/incidents") as r:
            html = await r.text()
        past = html[html.index('id="past"'):]
        assert f'href="/incidents/{incident}"' in past and "approved" in past and "rejected" in past

        # the timeline of one approved object: its events (pod, node), its decisions, its run
        key = chosen[0]
        async with http.get(f"{base}/objects") as r:
            assert quote(key, safe="") in await r.text()
        async with http.get(f"{base}/objects/timeline", params={"key": key}) as r:
            timeline = text(await r.text())
        assert f"Timeline of {key}" in timeline
        assert "event" in timeline and "on node-7" in timeline and "CrashLoopBackOff" in timeline
        assert "held" in timeline and "approved" in timeline and "incident" in timeline
        assert "run success" in timeline and "alice" in timeline
    ran = sorted(" ".join(c[2:3]) for c in fake.calls() if c[:2] == ["rollout", "restart"])
    assert ran == sorted(f"deployment/{k.rsplit('/', 1)[1]}" for k in chosen)


async def test_a_browser_sees_the_incident_approves_all_and_follows_an_object_timeline(settings, pool, tmp_path):
    require_browser()
    s, fake, incident = await node_incident(settings, pool, tmp_path)
    folder = screenshot_dir(tmp_path / "screenshots")
    async with create_app(s, ["execute"], serve_http=True) as app:
        driver = await asyncio.to_thread(headless_chromium)
        try:
            def approve_all() -> str:
                sign_in(driver, app.http_url, "alice", "alice-pw", "/incidents")
                link = WebDriverWait(driver, 20).until(EC.element_to_be_clickable((By.LINK_TEXT, str(incident))))
                assert "node:node-7" in driver.page_source
                link.click()
                WebDriverWait(driver, 20).until(EC.element_to_be_clickable((By.ID, "approve-all")))
                for width in (1400, 390):  # the README's picture of an incident, and a phone's
                    emulate(driver, width)
                    full_page_screenshot(driver, folder / f"incident-{width}.png")
                emulate(driver, 1400)
                driver.find_element(By.ID, "approve-all").click()
                WebDriverWait(driver, 20).until(EC.presence_of_element_located((By.ID, "outcome")))
                return driver.page_source

            page = await asyncio.to_thread(approve_all)
            assert "Recorded: approved by alice" in page
            await wait_for(lambda: pool.fetchval("SELECT count(*) = 4 FROM execution_history WHERE executed_by = 'alice'"),
                           timeout=60, what="every held object run once")

            def timeline() -> str:
                driver.get(f"{app.http_url}/incidents/{incident}")
                driver.find_element(By.LINK_TEXT, "k8s:shop/deployment/checkout").click()
                WebDriverWait(driver, 20).until(EC.presence_of_element_located((By.CSS_SELECTOR, "table.timeline")))
                return driver.find_element(By.CSS_SELECTOR, "table.timeline").text

            rows = await asyncio.to_thread(timeline)
            assert "run" in rows and "success" in rows and "alice" in rows and "event" in rows
        finally:
            await asyncio.to_thread(driver.quit)
    assert len([c for c in fake.calls() if c[:2] == ["rollout", "restart"]]) == 4
