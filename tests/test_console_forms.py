"""The console's forms that change something (issue 26): error states, owners and notes, playbook
and pattern switches, each recorded with its person in the audit log, each refused without a
person, a CSRF token or (where it lets the service act alone) an approver."""

from __future__ import annotations

import re

from elk_resolver.service import create_app
from tests.test_console import browser, console_settings, login

ERROR = ("INSERT INTO error_logs (error_type, error_message, source_system, hash_signature, occurrence_count) "
         "VALUES ('network', 'Connection refused', 'billing', 'h-forms', 3) RETURNING id")


async def test_a_person_triages_an_error_from_its_page_and_the_audit_log_says_who(settings, pool, tmp_path):
    s, _ = console_settings(settings, tmp_path)
    error_id = await pool.fetchval(ERROR)
    async with create_app(s, [], serve_http=True) as app, browser() as bob:
        base = app.http_url
        token = await login(bob, base, "bob", "bob-pw")  # signed in, not an approver: triage is for anyone
        for path, data in ((f"/errors/{error_id}/state", {"state": "acknowledged"}),
                           (f"/errors/{error_id}/owner", {"owner": "bob"}),
                           (f"/errors/{error_id}/notes", {"text": "the billing db is restarting"}),
                           (f"/errors/{error_id}/state", {"state": "snoozed", "snooze_for": "4h"})):
            async with bob.post(base + path, data={**data, "csrf": token}) as r:
                html = await r.text()
                assert r.status == 200 and str(r.url).startswith(f"{base}/errors/{error_id}"), (path, html[:500])
        assert 'id="outcome"' in html and "snoozed by bob" in html and "the billing db is restarting" in html
        assert "until" in re.search(r'<p id="state-text">(.*?)</p>', html, re.S).group(1)
        async with bob.post(f"{base}/errors/{error_id}/state", data={"state": "snoozed", "snooze_for": "soon",
                                                                     "csrf": token}) as r:
            assert r.status == 400 and "not a time" in await r.text()
        async with bob.post(f"{base}/errors/{error_id}/state", data={"state": "resolved"}) as r:
            assert r.status == 403  # no CSRF token
    rows = await pool.fetch("SELECT actor, action FROM audit_log WHERE error_log_id = $1 ORDER BY id", error_id)
    assert [tuple(r) for r in rows] == [("bob", "error acknowledged"), ("bob", "error owner"), ("bob", "error note"),
                                        ("bob", "error snoozed")]


async def test_playbooks_and_patterns_are_switched_from_the_console_by_the_right_people(settings, pool, tmp_path):
    s, _ = console_settings(settings, tmp_path)
    async with create_app(s, [], serve_http=True) as app:
        base = app.http_url
        async with browser() as bob:
            token = await login(bob, base, "bob", "bob-pw")
            async with bob.get(f"{base}/playbooks") as r:
                page = await r.text()
            assert "pod-crashloopbackoff-restart" in page and "/toggle" not in page  # bob reads, does not switch
            async with bob.post(f"{base}/playbooks/pod-crashloopbackoff-restart/toggle",
                                data={"enable": "0", "csrf": token}) as r:
                assert r.status == 403 and "not on the approver list" in await r.text()
            async with bob.post(f"{base}/patterns/1/auto-resolve", data={"on": "0", "csrf": token}) as r:
                assert r.status == 200  # anyone may make a pattern wait for a person
            async with bob.post(f"{base}/patterns/1/auto-resolve", data={"on": "1", "csrf": token}) as r:
                assert r.status == 403  # letting the service act alone is for approvers
            async with bob.post(f"{base}/patterns/2/toggle", data={"enable": "0", "csrf": token}) as r:
                assert r.status == 200
        async with browser() as alice:
            token = await login(alice, base, "alice", "alice-pw")
            async with alice.post(f"{base}/playbooks/pod-crashloopbackoff-restart/toggle",
                                  data={"enable": "0", "csrf": token}) as r:
                page = await r.text()
                assert r.status == 200 and str(r.url).endswith("/playbooks")
            row = re.search(r'<tr id="playbook-pod-crashloopbackoff-restart">(.*?)</tr>', page, re.S).group(1)
            assert "disabled" in row and "alice" in row
            async with alice.post(f"{base}/playbooks/no-such-playbook/toggle", data={"enable": "0", "csrf": token}) as r:
                assert r.status == 403 and "available: " in await r.text()
            async with alice.post(f"{base}/patterns/1/auto-resolve", data={"on": "1", "csrf": token}) as r:
                assert r.status == 200
    rows = await pool.fetch("SELECT actor, action, object FROM audit_log WHERE actor IN ('alice', 'bob') "
                            "AND action NOT IN ('signed in', 'signed out') ORDER BY id")
    assert [tuple(r) for r in rows] == [
        ("bob", "pattern auto-resolve off", "pattern:1"), ("bob", "pattern disabled", "pattern:2"),
        ("alice", "playbook disabled", "playbook:pod-crashloopbackoff-restart"),
        ("alice", "pattern auto-resolve on", "pattern:1")]
    signed_in = await pool.fetch("SELECT actor FROM audit_log WHERE action = 'signed in' ORDER BY id")
    assert [r["actor"] for r in signed_in] == ["bob", "alice"]
