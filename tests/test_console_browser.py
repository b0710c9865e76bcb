"""Deciding in a real browser: headless Chromium signs in to the console and approves; the
running service's execute stage carries the command out once, recorded as the person."""

from __future__ import annotations

import asyncio

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from elk_resolver.console.auth import hash_password
from elk_resolver.service import create_app
from tests.support.browser import headless_chromium, require_browser, sign_in
from tests.support.fake_kubectl import write_fake_kubectl
from tests.support.polling import wait_for
from tests.test_execute_stream import configure, request, seed


async def test_approving_in_a_browser_runs_the_command_once_through_the_execute_stage_as_the_person(
    settings, pool, tmp_path
):
    require_browser()
    fake = write_fake_kubectl(tmp_path)
    s = configure(settings, fake, console_users={"alice": hash_password("alice-pw")}, console_approvers=["alice"],
                  console_secret="browser-test", cooldown_s=0)
    ids = await seed(pool)
    async with create_app(s, ["execute"], serve_http=True) as app:
        await app.broker.publish(await request(pool, ids, decision="approval", reason="new solution: a person decides"),
                                 topic=s.topic_execution, key=ids[2].encode())
        approval = await wait_for(lambda: pool.fetchval("SELECT id FROM approvals WHERE status = 'pending'"),
                                  timeout=30, what="the pending approval")
        assert fake.calls() == []
        driver = await asyncio.to_thread(headless_chromium)
        try:
            def sign_in_and_approve() -> str:
                sign_in(driver, app.http_url, "alice", "alice-pw", f"/approvals/{approval}")
                approve = WebDriverWait(driver, 20).until(EC.element_to_be_clickable((By.ID, "approve")))
                assert "rollout restart deployment/api" in driver.page_source
                approve.click()  # the click returns before the next page: wait for it
                WebDriverWait(driver, 20).until(EC.staleness_of(approve))
                WebDriverWait(driver, 20).until(EC.presence_of_element_located((By.ID, "outcome")))
                return driver.page_source

            page = await asyncio.to_thread(sign_in_and_approve)
            assert "Recorded: approved by alice" in page, page[page.find("<main>"):page.find("<main>") + 1500]

            def outcome_shown() -> str | None:
                driver.refresh()
                cells = driver.find_elements(By.CSS_SELECTOR, "td.executed-by")
                return cells[0].text if cells else None

            shown = await wait_for(lambda: asyncio.to_thread(outcome_shown), timeout=30, interval=0.5,
                                   what="the run's outcome on the approval page")
            assert shown == "alice"
        finally:
            await asyncio.to_thread(driver.quit)
    rows = await pool.fetch("SELECT executed_by, execution_status FROM execution_history")
    assert [(r["executed_by"], r["execution_status"]) for r in rows] == [("alice", "success")]
    assert len(fake.calls()) == 1
    assert await pool.fetchval("SELECT decided_by FROM approvals WHERE id = $1", approval) == "alice"
