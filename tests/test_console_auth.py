"""Signing in to the console (issue 21): throttled per name and per address with a growing
delay, scrypt in a bounded number of threads and never on the event loop, the same cost for a
name that does not exist, ``next`` only as a strict relative path, sessions kept by the server
and ended by signing out, and a list of sessions an approver can end."""

from __future__ import annotations

import hashlib
import threading

import pytest

from elk_resolver.console import auth
from elk_resolver.console.auth import LOGIN_THREADS, Throttle, safe_next
from elk_resolver.service import create_app
from tests.test_console import browser, console_settings, csrf_of, login


async def _attempt(http, base: str, name: str, password: str, next_: str = "/approvals"):
    async with http.get(f"{base}/login") as r:
        token = csrf_of(await r.text())
    async with http.post(f"{base}/login", data={"username": name, "password": password, "csrf": token, "next": next_},
                         headers={"Origin": base}, allow_redirects=False) as r:
        return r.status, r.headers.get("Location"), r.headers.get("Retry-After"), await r.text()


# --- next --------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [
    "/\t/evil.example", "/%09/evil.example", "%2F%09%2Fevil.example", "//evil.example", "/\\evil.example",
    "/%5Cevil.example", "/%2F/evil.example", "/%252F%252Fevil.example", "https://evil.example/", "/\n/evil.example",
    "/\r\n/evil.example", "javascript:alert(1)", "evil.example", "", "/%0d%0aSet-Cookie:x=1", "/\u2028/evil",
    "/ /evil.example", "/\u200b/evil.example",
])
def test_next_that_could_leave_the_site_becomes_the_overview(target):
    assert safe_next(target) == "/"


@pytest.mark.parametrize("target", ["/", "/approvals", "/errors/42?page=2&type=kubernetes", "/approvals?status=all",
                                    "/errors?q=timeout%20db"])
def test_next_on_the_site_is_followed(target):
    assert safe_next(target) == target


async def test_signing_in_from_a_crafted_link_never_leaves_the_site(settings, pool, tmp_path):
    """Was: /login?next=%2F%09%2Fevil.example answered 303 Location: //evil.example."""
    s, _ = console_settings(settings, tmp_path)
    async with create_app(s, [], serve_http=True) as app, browser() as http:
        async with http.get(f"{app.http_url}/login?next=%2F%09%2Fevil.example") as r:
            html = await r.text()
        assert 'name="next" value="/"' in html
        for target in ("/\t/evil.example", "/\\evil.example", "//evil.example"):
            status, location, _, _ = await _attempt(http, app.http_url, "alice", "alice-pw", target)
            assert (status, location) == (303, "/"), target


# --- throttling ---------------------------------------------------------------------------------


def test_the_delay_doubles_with_every_failure_up_to_a_cap():
    now = [1000.0]
    throttle = Throttle(free=3, base=1.0, cap=8.0, clock=lambda: now[0])
    waits = []
    for _ in range(8):
        waits.append(throttle.wait_s("user:a"))
        throttle.failed("user:a")
    assert waits[:4] == [0.0, 0.0, 0.0, 1.0]  # the first three are free, then 1 s
    now[0] += 1.0
    assert throttle.wait_s("user:a") > 0  # after 8 failures the wait is capped at 8 s
    assert [min(8.0, 2 ** k) for k in range(6)] == [1, 2, 4, 8, 8, 8]
    now[0] += 7.0
    assert throttle.wait_s("user:a") == 0.0
    throttle.succeeded("user:a")
    assert throttle.wait_s("user:a") == 0.0 and throttle.wait_s("user:b") == 0.0


async def test_wrong_passwords_lock_the_name_and_the_address_and_then_the_right_one_waits_too(settings, pool, tmp_path):
    """Was: 40 wrong passwords in 4 s, then the right one accepted."""
    s, _ = console_settings(settings, tmp_path)
    async with create_app(s, [], serve_http=True) as app, browser() as http:
        base = app.http_url
        statuses = [(await _attempt(http, base, "alice", f"guess-{i}"))[0] for i in range(auth.THROTTLE_FREE)]
        assert statuses == [401] * auth.THROTTLE_FREE
        status, _, retry_after, html = await _attempt(http, base, "alice", "alice-pw")
        assert status == 429 and int(retry_after) >= 1 and "try again in" in html
        # the address waits too, whatever name it tries (bob's right password included)
        status, _, _, _ = await _attempt(http, base, "bob", "bob-pw")
        assert status == 429
        assert "elk_console_session" not in {c.key for c in http.cookie_jar}
        # a name that does not exist is throttled the same way: no tell which names exist
        gate = _gate(app)
        gate.throttle = Throttle()
        assert [(await _attempt(http, base, "nobody", f"g{i}"))[0] for i in range(auth.THROTTLE_FREE + 1)] == \
            [401] * auth.THROTTLE_FREE + [429]


async def test_the_throttle_lifts_after_the_delay(settings, pool, tmp_path):
    s, _ = console_settings(settings, tmp_path)
    now = [0.0]
    async with create_app(s, [], serve_http=True) as app, browser() as http:
        gate = _gate(app)
        gate.throttle = Throttle(clock=lambda: now[0])
        for i in range(auth.THROTTLE_FREE + 1):
            now[0] += 0.1
            await _attempt(http, app.http_url, "alice", f"guess-{i}")
        assert (await _attempt(http, app.http_url, "alice", "alice-pw"))[0] == 429
        now[0] += 2.01  # the delay after 4 failures: 2 s
        status, location, _, _ = await _attempt(http, app.http_url, "alice", "alice-pw")
        assert (status, location) == (303, "/approvals")


def _gate(app):
    for middleware in app._runner.app.middlewares:  # noqa: SLF001 - the console installed on this app
        owner = getattr(middleware, "__self__", None)
        if owner is not None and hasattr(owner, "gate"):
            return owner.gate
    raise AssertionError("no console on this app")


# --- scrypt: off the loop, bounded, the same cost for every name ------------------------------------


@pytest.fixture
def scrypt_calls(monkeypatch):
    calls: list[str] = []
    running = [0, 0]  # now, most at once
    lock = threading.Lock()
    real = hashlib.scrypt

    def counting(*args, **kwargs):
        with lock:
            calls.append(threading.current_thread().name)
            running[0] += 1
            running[1] = max(running[1], running[0])
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(hashlib, "scrypt", counting)
    auth._unknown_user_hash.cache_clear()
    yield calls, running
    auth._unknown_user_hash.cache_clear()


async def test_a_name_that_does_not_exist_costs_one_scrypt_like_one_that_does(settings, pool, tmp_path, scrypt_calls):
    """Was: an unknown name cost two scrypt runs, a known one one: timing told the names."""
    calls, _ = scrypt_calls
    s, _ = console_settings(settings, tmp_path)
    async with create_app(s, [], serve_http=True) as app, browser() as http:
        await _attempt(http, app.http_url, "alice", "warm-up")  # the process's first sign-in makes the stand-in hash
        counts = {}
        for name in ("alice", "mallory-does-not-exist"):
            before = len(calls)
            _gate(app).throttle = Throttle()
            assert (await _attempt(http, app.http_url, name, "wrong"))[0] == 401
            counts[name] = len(calls) - before
    assert counts == {"alice": 1, "mallory-does-not-exist": 1}


async def test_scrypt_never_runs_on_the_event_loop_and_at_most_a_few_at_once(settings, pool, tmp_path, scrypt_calls):
    """Was: 8 concurrent sign-in loops pushed /health from ~10 ms to 1.1-2.7 s."""
    import asyncio

    calls, running = scrypt_calls
    s, _ = console_settings(settings, tmp_path)
    async with create_app(s, [], serve_http=True) as app:
        loop_thread = threading.current_thread().name
        _gate(app).throttle = Throttle(free=1000)

        async def one(i: int) -> int:
            async with browser() as http:
                return (await _attempt(http, app.http_url, "alice" if i % 2 else f"x{i}", "wrong"))[0]

        assert set(await asyncio.gather(*(one(i) for i in range(8)))) == {401}
    assert len(calls) >= 8 and loop_thread not in calls
    assert running[1] <= LOGIN_THREADS


# --- sessions kept by the server -------------------------------------------------------------------


async def test_signing_out_ends_the_session_and_a_saved_cookie_no_longer_works(settings, pool, tmp_path):
    """Was: after logout a saved cookie still switched the kill switch on."""
    s, _ = console_settings(settings, tmp_path)
    async with create_app(s, [], serve_http=True) as app:
        base = app.http_url
        async with browser() as alice:
            token = await login(alice, base, "alice", "alice-pw")
            saved = {c.key: c.value for c in alice.cookie_jar}
            assert len(saved["elk_console_session"]) >= 40  # a random token, not the session itself
            async with alice.post(f"{base}/logout", data={"csrf": token}) as r:
                assert r.status == 200
        async with browser() as replay:
            replay.cookie_jar.update_cookies(saved)
            async with replay.post(f"{base}/kill-switch", data={"state": "on", "csrf": token}) as r:
                assert r.status in (401, 403) and "authenticated person" in await r.text()
            async with replay.get(f"{base}/approvals") as r:
                assert "sign in" in await r.text()
    assert await pool.fetchval("SELECT kill_switch FROM resolver_controls") is False
    row = await pool.fetchrow("SELECT user_name, ended_at, ended_by, token_sha256 FROM console_sessions")
    assert row["user_name"] == "alice" and row["ended_at"] is not None and row["ended_by"] == "alice"
    assert row["token_sha256"] != saved["elk_console_session"]  # only its hash is kept


async def test_an_approver_sees_the_active_sessions_and_ends_one(settings, pool, tmp_path):
    s, _ = console_settings(settings, tmp_path)
    async with create_app(s, [], serve_http=True) as app:
        base = app.http_url
        async with browser() as alice, browser() as bob:
            alice_csrf = await login(alice, base, "alice", "alice-pw")
            bob_csrf = await login(bob, base, "bob", "bob-pw")
            async with bob.get(f"{base}/sessions") as r:  # bob reads, but does not decide
                assert r.status == 403
            async with alice.get(f"{base}/sessions") as r:
                html = await r.text()
            assert r.status == 200 and '<td data-label="who">alice</td>' in html and '<td data-label="who">bob</td>' in html
            bob_session = await pool.fetchval("SELECT id FROM console_sessions WHERE user_name = 'bob'")
            async with alice.post(f"{base}/sessions/{bob_session}/end", data={"csrf": alice_csrf}) as r:
                assert r.status == 200 and '<td data-label="who">bob</td>' not in await r.text()
            async with bob.post(f"{base}/kill-switch", data={"state": "on", "csrf": bob_csrf}) as r:
                assert r.status in (401, 403)
            async with alice.get(f"{base}/approvals") as r:
                assert "alice" in await r.text()  # her own session stands
    assert await pool.fetchval("SELECT ended_by FROM console_sessions WHERE id = $1", bob_session) == "alice"
