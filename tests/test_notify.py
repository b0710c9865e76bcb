"""Notifications on a real broker and PostgreSQL, with a local server for the endpoints."""

from __future__ import annotations

import hashlib
import hmac

from elk_resolver import notify
from streams.app import create_app
from tests.support.fake_kubectl import write_fake_kubectl
from tests.support.notify_stub import NotifyStub
from tests.support.polling import wait_for
from tests.test_execute_stream import configure, request, seed

SECRET = "s3cret-for-hmac"


def with_channels(settings, hooks, **extra):
    return settings.model_copy(update={
        "notify_webhook_url": hooks.url + "/hook", "notify_webhook_secret": SECRET,
        "notify_urls": [hooks.apprise_json("/chat")], "notify_interval_s": 0.1, "console_url": "https://console.example",
        **extra,
    })  # fmt: skip


async def test_a_pending_approval_sends_exactly_one_message_per_channel_with_two_copies_running(
    settings, pool, tmp_path, unique
):
    fake = write_fake_kubectl(tmp_path)
    async with NotifyStub() as hooks:
        s = with_channels(configure(settings, fake), hooks)
        ids = await seed(pool)
        # two copies of the service; two groups, so both copies receive the request itself too
        a = create_app(s.model_copy(update={"group_execute": f"g-{unique}-a"}), ["execute"], serve_http=False)
        b = create_app(s.model_copy(update={"group_execute": f"g-{unique}-b"}), ["execute"], serve_http=False)
        async with a, b:
            assert a.notifier and b.notifier and a.notifier.channels
            await a.broker.publish(await request(pool, ids, decision="approval", reason="new solution"),
                                   topic=s.topic_execution, key=ids[2].encode())
            await wait_for(lambda: hooks.received("/hook") and hooks.received("/chat"), timeout=30, what="messages")
            # both dispatchers keep passing; nothing is left to send and nothing more arrives
            await wait_for(lambda: _all_sent(pool), timeout=10, what="every row sent")
            for _ in range(3):
                assert await a.notifier.run_once() == 0 and await b.notifier.run_once() == 0
        assert len(hooks.received("/hook")) == 1 and len(hooks.received("/chat")) == 1
    [hook] = hooks.received("/hook")
    body = hook.json()
    expected = "sha256=" + hmac.new(SECRET.encode(), hook.headers["X-Elk-Resolver-Timestamp"].encode() + b"." + hook.body,
                                    hashlib.sha256).hexdigest()
    assert hmac.compare_digest(hook.headers["X-Elk-Resolver-Signature"], expected)
    approval_id = await pool.fetchval("SELECT id FROM approvals")
    assert body["kind"] == "pending_approval" and body["delivery"] == f"approval:{approval_id}:pending"
    assert body["link"] == f"https://console.example/approvals/{approval_id}"
    assert "kubectl rollout restart deployment/api -n payments" in body["text"]
    assert "payments/api" in body["text"]
    chat = hooks.received("/chat")[0].json()
    assert chat["title"].startswith(f"Approval {approval_id} needed")
    assert fake.calls() == []  # nothing ran: it waits for a person


async def _all_sent(pool) -> bool:
    rows = await pool.fetch("SELECT status FROM notifications")
    return bool(rows) and all(r["status"] == "sent" for r in rows)


async def test_no_channel_configured_means_nothing_is_queued_or_sent(settings, pool, tmp_path):
    fake = write_fake_kubectl(tmp_path)
    s = configure(settings, fake)
    ids = await seed(pool)
    async with create_app(s, ["execute"], serve_http=False) as app:
        await app.broker.publish(await request(pool, ids, decision="approval", reason="new"),
                                 topic=s.topic_execution, key=ids[2].encode())
        await wait_for(lambda: pool.fetchval("SELECT count(*) FROM approvals"), timeout=30, what="the approval")
        assert app.notifier is not None and not app.notifier.channels
    assert await pool.fetchval("SELECT count(*) FROM notifications") == 0


async def test_a_failing_endpoint_is_retried_with_backoff_and_secrets_never_leave_masked(settings, pool, tmp_path):
    async with NotifyStub(fail_first=1) as hooks:
        s = with_channels(settings, hooks, notify_urls=[])
        ids = await seed(pool)
        await pool.execute("UPDATE error_logs SET error_message = 'login failed password=hunter2 for db' WHERE id = $1",
                           ids[0])
        history = await pool.fetchval(
            "INSERT INTO execution_history (error_log_id, solution_id, execution_status, execution_output, executed_by)"
            " VALUES ($1, $2, 'failed', 'token=abcdef123456 refused', 'auto-resolver') RETURNING id", ids[0], ids[1])
        async with pool.acquire() as conn:
            assert await notify.run_failed(conn, s, history) == 1
            assert await notify.run_failed(conn, s, history) == 0  # the same event again: nothing new
        dispatcher = notify.Dispatcher(s, pool)
        assert await dispatcher.run_once() == 1  # 500: back to pending, next attempt in 2 s
        row = await pool.fetchrow("SELECT status, attempts, next_attempt_at - NOW()::timestamp AS wait, last_error"
                                  " FROM notifications")
        assert row["status"] == "pending" and row["attempts"] == 1 and row["wait"].total_seconds() > 1
        assert "127.0.0.1" not in row["last_error"]  # a channel's address (and its tokens) is never stored
        await wait_for(dispatcher.run_once, timeout=10, interval=0.2, what="the retry")
        assert await pool.fetchval("SELECT status FROM notifications") == "sent"
    assert len(hooks.received("/hook")) == 2
    text = hooks.received("/hook")[-1].json()["text"]
    assert "hunter2" not in text and "abcdef123456" not in text and "login failed" in text


async def test_each_channel_is_rate_limited_per_minute(settings, pool):
    async with NotifyStub() as hooks:
        s = with_channels(settings, hooks, notify_urls=[], notify_rate_per_minute=2)
        ids = await seed(pool)
        from elk_resolver.notify.events import emit

        for n in range(5):
            await emit(pool, s, f"test:{n}", "run_failed", f"event {n}", {"n": n}, "https://console.example/")
        dispatcher = notify.Dispatcher(s, pool)
        assert await dispatcher.run_once() == 2
        assert await dispatcher.run_once() == 0
        assert [r["status"] for r in await pool.fetch("SELECT status FROM notifications ORDER BY id")] == \
            ["sent", "sent", "pending", "pending", "pending"]
    assert len(hooks.received("/hook")) == 2
    assert ids


async def test_a_pending_approval_recorded_without_its_message_is_announced_by_the_next_maintenance_pass(
    settings, pool, tmp_path
):
    from elk_resolver.actions.policy import ExecutionPolicy
    from handlers.execute import handle_request
    from tests.test_execute_stream import running

    fake = write_fake_kubectl(tmp_path)
    async with NotifyStub() as hooks:
        s = with_channels(configure(settings, fake), hooks, notify_urls=[])
        ids = await seed(pool)
        # decided as the stage decides, but the process "stopped" before queueing the message
        pointer = await request(pool, ids, decision="approval", reason="new solution")
        [result] = await handle_request(pointer, pool=pool, settings=s, policy=ExecutionPolicy.from_settings(s))
        assert result.outcome == "pending_approval"
        assert await pool.fetchval("SELECT count(*) FROM notifications") == 0
        async with running(s, pool) as (_, [stage]):
            await stage.maintain_once()
            await stage.maintain_once()  # and again: still one
        rows = await pool.fetch("SELECT event_key FROM notifications")
        assert [r["event_key"] for r in rows] == [f"approval:{result.details['approval_id']}:pending"]
