"""The execution stage's handlers against real PostgreSQL, a real stand-in kubectl and a real
Elasticsearch stub. Nothing is mocked; the clock is passed in (``now=``) instead of slept on."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from elk_resolver.actions.executors.elasticsearch import make_client
from elk_resolver.actions.policy import ExecutionPolicy
from elk_resolver.actions.targets import target_of_command
from elk_resolver.events.contracts import PatternRef, PlannedRequest
from elk_resolver.settings import make_settings
from elk_resolver.store.db import create_pool
from handlers.analyze import store_request
from handlers.execute import (
    ApprovalError,
    Runtime,
    approve,
    approved_waiting,
    expire_approvals,
    handle_request,
    list_approvals,
    reject,
    set_kill_switch,
    verify_outcomes,
)
from tests.support.es_stub import EsStub
from tests.support.fake_kubectl import write_fake_kubectl

RESTART = "kubectl rollout restart deployment/api -n payments"
T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


def kube(line: str = RESTART, **extra) -> dict:
    return {"type": "kubectl", "command": line, "description": "", "safe": True, "critical": True, **extra}


def exec_settings(database_url: str, fake=None, **overrides):
    fields = {
        "database_url": database_url,
        "execution_mode": "live",
        "kubectl_namespaces": ["payments"],
        "command_timeout_s": 5.0,
        "cooldown_s": 600.0,
        "max_runs_per_hour": 3,
        "breaker_threshold": 3,
        "stale_after_s": 900.0,
        "approval_ttl_s": 3600.0,
        "verification_window_s": 900.0,
        # the handler tests move a fixed clock: no settle wait, no "stopped by itself" (the
        # incident scenarios in tests/test_incidents.py set both)
        "settle_s": 0.0,
        "quiet_after_s": 0.0,
        **overrides,
    }
    if fake is not None:
        fields["kubectl_path"] = str(fake.path)
    return make_settings(**fields)


async def seed(pool, *, commands=None, source="playbook", message=None) -> tuple[int, int, str]:
    """An error_logs row and one solution for it (the FKs the requests refer to)."""
    message = message or f"CrashLoopBackOff pod api-{uuid.uuid4().hex[:6]}"
    hash_ = hashlib.sha256(message.encode()).hexdigest()
    error_log_id = await pool.fetchval(
        "INSERT INTO error_logs (error_type, error_message, source_system, hash_signature) "
        "VALUES ('kubernetes', $1, 'payments/api', $2) RETURNING id",
        message,
        hash_,
    )
    commands = commands if commands is not None else [kube()]
    solution_id = await pool.fetchval(
        "INSERT INTO solutions (error_hash, solution_type, solution_description, solution_commands, source, content_hash) "
        "VALUES ($1, 'restart', 'restart the deployment', $2, $3, $4) RETURNING id",
        hash_,
        commands,
        source,
        uuid.uuid4().hex,
    )
    return error_log_id, solution_id, hash_


def request(ids, commands=None, *, request_id=None, at=T0, **extra) -> PlannedRequest:
    """A request as the analysis stage stores it, bound to the object its first command names."""
    error_log_id, solution_id, hash_ = ids
    commands = commands if commands is not None else [kube()]
    target, action, _ = target_of_command(commands[0]) if commands else (None, "", "")
    return PlannedRequest.model_validate(
        {
            "target": target.as_dict() if target else None,
            "action": action,
            "pattern": AUTO_PATTERN,
            "request_id": request_id or uuid.uuid4().hex,
            "error_log_id": error_log_id,
            "hash_signature": hash_,
            "solution_id": solution_id,
            "solution_source": "playbook",
            "commands": commands,
            "decision": "auto",
            "reason": "pattern auto_resolve, every command safe, playbook trusted",
            "event_time": at,
            "requested_at": at,
            **extra,
        }
    )


async def history(pool, solution_id=None):
    sql = "SELECT *, extract(epoch FROM execution_time)::float8 AS secs FROM execution_history"
    if solution_id is None:
        return await pool.fetch(sql + " ORDER BY id")
    return await pool.fetch(sql + " WHERE solution_id = $1 ORDER BY id", solution_id)


async def decisions(pool, decision=None):
    if decision is None:
        return await pool.fetch("SELECT * FROM decision_log ORDER BY id")
    return await pool.fetch("SELECT * FROM decision_log WHERE decision = $1 ORDER BY id", decision)


async def solution(pool, solution_id):
    return await pool.fetchrow("SELECT * FROM solutions WHERE id = $1", solution_id)


# A pattern row that allows auto_resolve (the design document's seed data has them).
AUTO_PATTERN = {"id": 0, "name": "auto", "category": "kubernetes", "priority": 1, "auto_resolve": True}


async def stored(pool, req: PlannedRequest):
    """Store ``req`` as the analysis stage would (the pattern placeholder becomes a real
    auto_resolve pattern row) and return the pointer the execution topic carries."""
    if req.pattern is not None and req.pattern.id == 0:
        row = await pool.fetchrow("SELECT id, pattern_name, error_category FROM error_patterns WHERE auto_resolve ORDER BY id LIMIT 1")
        pattern = PatternRef(id=row["id"], name=row["pattern_name"], category=row["error_category"], priority=1, auto_resolve=True)
        req = req.model_copy(update={"pattern": pattern})
    if req.pattern is not None:  # ingest stored the error with the pattern the analysis stage names
        await pool.execute("UPDATE error_logs SET pattern_id = $1 WHERE id = $2 AND pattern_id IS NULL", req.pattern.id,
                           req.error_log_id)  # fmt: skip
    return (await store_request(pool, req)).pointer()


async def handle(req, pool, settings, now=T0, **kw):
    return await handle_request(
        await stored(pool, req), pool=pool, settings=settings, policy=ExecutionPolicy.from_settings(settings), now=now, **kw
    )


async def approve_and_run(approval_id, by, *, pool, settings, now=None, policy=None, runtime=None):
    """A person approves (recorded in the database); the execute stage gets the pointer and runs it."""
    event, pointer = await approve(approval_id, by, pool=pool, settings=settings, now=now)
    results = await handle_request(
        pointer, pool=pool, settings=settings, policy=policy or ExecutionPolicy.from_settings(settings), now=now,
        runtime=runtime,
    )  # fmt: skip
    return event, results


# --- runs and the document's trigger -------------------------------------------------------


async def test_success_failure_and_timeout_each_write_one_history_row_and_the_trigger_counts_them(
    pool, database_url, tmp_path
):
    fake = write_fake_kubectl(
        tmp_path, rules={"deployment/broken": "fail", "deployment/stuck": "hang"}
    )
    settings = exec_settings(database_url, fake, command_timeout_s=1.0, cooldown_s=0, max_runs_per_hour=100)
    ids = await seed(pool)

    [ok] = await handle(request(ids), pool, settings, now=T0)
    [failed] = await handle(
        request(ids, [kube("kubectl rollout restart deployment/broken -n payments")]), pool, settings,
        now=T0 + timedelta(seconds=1),
    )  # fmt: skip
    [timeout] = await handle(
        request(ids, [kube("kubectl rollout restart deployment/stuck -n payments")]), pool, settings,
        now=T0 + timedelta(seconds=2),
    )  # fmt: skip

    assert [ok.outcome, failed.outcome, timeout.outcome] == ["success", "failed", "timeout"]
    rows = await history(pool, ids[1])
    assert [r["execution_status"] for r in rows] == ["success", "failed", "timeout"]
    assert [r["request_id"] for r in rows] == [ok.request_id, failed.request_id, timeout.request_id]
    assert all(r["executed_by"] == "auto-resolver" for r in rows)
    assert rows[2]["secs"] >= 1.0  # execution_time is an INTERVAL
    assert "hunter2" not in rows[0]["execution_output"] and "password=***" in rows[0]["execution_output"]
    assert "killed after 1s timeout" in rows[2]["execution_output"]
    assert ok.execution_history_id == rows[0]["id"]

    s = await solution(pool, ids[1])
    assert s["execution_count"] == 3
    assert float(s["success_rate"]) == pytest.approx(33.33, abs=0.01)
    assert s["last_success_at"] == rows[0]["executed_at"]
    assert s["consecutive_failures"] == 2  # the success awaits verification; it ends no streak yet
    assert await decisions(pool) == []  # runs are never in the decision log


async def test_output_is_truncated_to_the_limit_and_masked(pool, database_url, tmp_path):
    fake = write_fake_kubectl(tmp_path, default="flood", flood_bytes=50_000)
    settings = exec_settings(database_url, fake, output_limit_bytes=2000)
    ids = await seed(pool)
    await handle(request(ids), pool, settings)
    [row] = await history(pool)
    assert len(row["execution_output"].encode()) < 2200
    assert "output truncated" in row["execution_output"]
    assert "hunter2" not in row["execution_output"]


async def test_elasticsearch_command_runs_against_the_stub(pool, database_url):
    async with EsStub() as es:
        settings = exec_settings(database_url, elasticsearch_url=es.url, elasticsearch_actions=["clear_read_only_block"])
        cmd = {"type": "elasticsearch", "command": "clear_read_only_block index=logs-2030.01.01", "safe": True}
        ids = await seed(pool, commands=[cmd])
        client = make_client(settings)
        try:
            [result] = await handle(request(ids, [cmd]), pool, settings, runtime=Runtime(elasticsearch=client))
        finally:
            await client.close()
        assert result.outcome == "success", result
        assert es.calls("PUT") == [("PUT", "/logs-2030.01.01/_settings")]
        [row] = await history(pool)
        assert row["execution_status"] == "success" and "acknowledged" in row["execution_output"]


# --- policy ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "kubectl rollout restart deployment/api -n payments; rm -rf /",
        "kubectl rollout restart deployment/$(whoami) -n payments",
        "kubectl rollout restart deployment/`id` -n payments",
        "kubectl rollout restart deployment/api -n payments\nrm -rf /",
        "kubectl rollout restart deployment/api -n payments && curl evil.example",
    ],
)
async def test_injection_attempts_are_refused_logged_and_never_run(pool, database_url, tmp_path, line):
    fake = write_fake_kubectl(tmp_path)
    settings = exec_settings(database_url, fake)
    ids = await seed(pool)
    [result] = await handle(request(ids, [kube(line)]), pool, settings)
    assert result.outcome == "denied"
    assert fake.calls() == []
    assert await history(pool) == []
    [logged] = await decisions(pool, "denied")
    assert "refused by the execution policy" in logged["reason"]
    assert logged["details"]["refused"][0]["reason"]


async def test_verb_outside_the_allowlist_is_refused_and_logged(pool, database_url, tmp_path):
    fake = write_fake_kubectl(tmp_path)
    settings = exec_settings(database_url, fake)
    ids = await seed(pool)
    [result] = await handle(request(ids, [kube("kubectl delete deployment/api -n payments")]), pool, settings)
    [result2] = await handle(request(ids, [kube("kubectl exec api -n payments")]), pool, settings)
    assert (result.outcome, result2.outcome) == ("denied", "denied")
    assert "exec" in result2.reason and "allowlist" in result2.reason
    assert fake.calls() == [] and await history(pool) == []
    assert len(await decisions(pool, "denied")) == 2


# --- storms, cooldown, rate ------------------------------------------------------------------


async def test_a_thousand_identical_requests_within_a_minute_cause_exactly_one_run(database_url, tmp_path):
    fake = write_fake_kubectl(tmp_path)
    settings = exec_settings(database_url, fake)
    policy = ExecutionPolicy.from_settings(settings)
    # Many connections, so the requests really race each other in the database.
    async with await create_pool(database_url, min_size=10, max_size=20) as pool:
        ids = await seed(pool)
        reqs = [await stored(pool, request(ids, at=T0 + timedelta(milliseconds=i * 50))) for i in range(1000)]
        # Two "instances" (different claim identities), each with its own concurrency.
        runtimes = [Runtime(instance="executor-a"), Runtime(instance="executor-b")]
        results = await asyncio.gather(
            *(
                handle_request(
                    r, pool=pool, settings=settings, policy=policy, runtime=runtimes[i % 2],
                    now=T0 + timedelta(milliseconds=i * 50),
                )  # fmt: skip
                for i, r in enumerate(reqs)
            )
        )
        outcomes = [res.outcome for batch in results for res in batch]
        assert outcomes.count("success") == 1
        assert outcomes.count("skipped") == 999
        assert len(fake.calls()) == 1
        assert len(await history(pool)) == 1
        skipped = await decisions(pool, "skipped")
        assert len(skipped) == 999 and all(r["reason"].startswith("cooldown") for r in skipped)
        assert (await solution(pool, ids[1]))["execution_count"] == 1


async def test_hourly_cap_limits_runs_even_without_cooldown(pool, database_url, tmp_path):
    fake = write_fake_kubectl(tmp_path)
    settings = exec_settings(database_url, fake, cooldown_s=0, max_runs_per_hour=2, recurrence_to_person=False)
    ids = await seed(pool)
    outcomes = []
    for i in range(4):
        now = T0 + timedelta(minutes=i)
        [*_, last] = await handle(request(ids, at=now), pool, settings, now=now)
        outcomes.append(last.outcome)
    assert outcomes == ["success", "success", "skipped", "skipped"]
    assert "rate limit" in (await decisions(pool, "skipped"))[0]["reason"]
    # an hour later the cap has room again
    later = T0 + timedelta(minutes=65)
    [*_, last] = await handle(request(ids, at=later), pool, settings, now=later)
    assert last.outcome == "success"


async def test_cooldown_is_per_object_whatever_error_or_solution_asks(pool, database_url, tmp_path):
    fake = write_fake_kubectl(tmp_path)
    settings = exec_settings(database_url, fake, recurrence_to_person=False)
    a, b, c = await seed(pool), await seed(pool), await seed(pool)
    other = [kube("kubectl rollout restart deployment/billing -n payments")]
    [ra] = await handle(request(a), pool, settings)
    [rb] = await handle(request(b), pool, settings)  # another error, another solution, same deployment
    [rc] = await handle(request(c, other), pool, settings)  # another deployment
    assert (ra.outcome, rb.outcome, rc.outcome) == ("success", "skipped", "success")
    assert "deployment/api" in rb.reason and rb.reason.startswith("cooldown")
    assert [call[2] for call in fake.calls()] == ["deployment/api", "deployment/billing"]
    [*_, again] = await handle(request(a, at=T0 + timedelta(minutes=5)), pool, settings, now=T0 + timedelta(minutes=5))
    assert again.outcome == "skipped"
    [*_, after] = await handle(request(a, at=T0 + timedelta(minutes=11)), pool, settings, now=T0 + timedelta(minutes=11))
    assert after.outcome == "success"


# --- the breaker -----------------------------------------------------------------------------


async def test_breaker_trips_after_n_failures_and_routes_the_next_request_to_approval_with_history(
    pool, database_url, tmp_path
):
    fake = write_fake_kubectl(tmp_path, default="fail")
    settings = exec_settings(database_url, fake, cooldown_s=0, max_runs_per_hour=100, breaker_threshold=3)
    ids = await seed(pool)
    for i in range(3):
        now = T0 + timedelta(minutes=i)
        [*_, r] = await handle(request(ids, at=now), pool, settings, now=now)
        assert r.outcome == "failed"
    s = await solution(pool, ids[1])
    assert s["consecutive_failures"] == 3 and s["tripped_at"] is not None

    now = T0 + timedelta(minutes=3)
    [result] = await handle(request(ids, at=now), pool, settings, now=now)
    assert result.outcome == "pending_approval"
    assert "circuit breaker" in result.reason
    event = result.details["approval"]
    assert [h["execution_status"] for h in event["history"]] == ["failed"] * 3
    assert len(fake.calls()) == 3
    [pending] = await list_approvals(pool=pool)
    assert pending["request_id"] == result.request_id

    # A second request while one approval is pending does not ask again.
    [dup] = await handle(request(ids, at=now), pool, settings, now=now)
    assert dup.outcome == "skipped" and "already pending" in dup.reason

    # A person approves a run that succeeds: the breaker closes.
    fake.path.write_text(fake.path.read_text().replace('CONFIG["default"])', '"ok")'))
    _, [run] = await approve_and_run(
        pending["id"], "alice", pool=pool, settings=settings, policy=ExecutionPolicy.from_settings(settings),
        now=now + timedelta(minutes=1),
    )  # fmt: skip
    assert run.outcome == "success" and run.executed_by == "alice"
    s = await solution(pool, ids[1])
    assert s["tripped_at"] is None and s["consecutive_failures"] == 0 and s["approved_success_count"] == 1


# --- exactly once ----------------------------------------------------------------------------


async def test_replayed_request_runs_once(pool, database_url, tmp_path):
    fake = write_fake_kubectl(tmp_path)
    settings = exec_settings(database_url, fake, cooldown_s=0, max_runs_per_hour=100)
    ids = await seed(pool)
    req = request(ids)
    [first] = await handle(req, pool, settings)
    [second] = await handle(req, pool, settings, now=T0 + timedelta(minutes=30))
    assert (first.outcome, second.outcome) == ("success", "duplicate")
    assert len(fake.calls()) == 1 and len(await history(pool)) == 1
    assert len(await decisions(pool, "duplicate")) == 1


async def test_same_request_raced_by_two_instances_runs_once(database_url, tmp_path):
    fake = write_fake_kubectl(tmp_path)
    settings = exec_settings(database_url, fake, cooldown_s=0, max_runs_per_hour=100)
    policy = ExecutionPolicy.from_settings(settings)
    async with await create_pool(database_url, min_size=4, max_size=8) as pool:
        ids = await seed(pool)
        req = await stored(pool, request(ids))
        results = await asyncio.gather(
            *(
                handle_request(req, pool=pool, settings=settings, policy=policy, now=T0, runtime=Runtime(instance=f"i{i}"))
                for i in range(8)
            )
        )
        outcomes = sorted(r.outcome for batch in results for r in batch)
        assert outcomes == ["duplicate"] * 7 + ["success"]
        assert len(fake.calls()) == 1 and len(await history(pool)) == 1


# --- approvals -------------------------------------------------------------------------------


async def _pending(pool, settings, ids, commands=None, **extra):
    req = request(ids, commands, decision="approval", reason="LLM solution not yet trusted", **extra)
    [result] = await handle(req, pool, settings)
    assert result.outcome == "pending_approval"
    return result


async def test_approve_runs_the_request_with_the_approvers_name(pool, database_url, tmp_path):
    fake = write_fake_kubectl(tmp_path)
    settings = exec_settings(database_url, fake)
    ids = await seed(pool, source="llm")
    pending = await _pending(pool, settings, ids)
    assert fake.calls() == [] and await history(pool) == []
    [row] = await list_approvals(pool=pool)
    assert row["status"] == "pending" and row["reason"].startswith("analysis requires approval")

    event, [run] = await approve_and_run(
        row["id"], "alice", pool=pool, settings=settings, policy=ExecutionPolicy.from_settings(settings),
        now=T0 + timedelta(minutes=1),
    )  # fmt: skip
    assert event.status == "approved" and event.decided_by == "alice"
    assert run.outcome == "success" and run.request_id == pending.request_id
    [h] = await history(pool)
    assert h["executed_by"] == "alice" and h["request_id"] == pending.request_id
    assert (await solution(pool, ids[1]))["approved_success_count"] == 1
    assert len(fake.calls()) == 1
    # deciding twice does nothing
    with pytest.raises(ApprovalError, match="already approved"):
        await approve_and_run(row["id"], "bob", pool=pool, settings=settings, policy=ExecutionPolicy.from_settings(settings))
    assert len(fake.calls()) == 1


async def test_approve_in_dry_run_mode_records_dry_run(pool, database_url, tmp_path):
    fake = write_fake_kubectl(tmp_path)
    settings = exec_settings(database_url, fake, execution_mode="dry-run")
    ids = await seed(pool)
    await _pending(pool, settings, ids)
    [row] = await list_approvals(pool=pool)
    _, [result] = await approve_and_run(
        row["id"], "alice", pool=pool, settings=settings, policy=ExecutionPolicy.from_settings(settings), now=T0
    )
    assert result.outcome == "dry_run" and result.executed_by == "alice"
    assert fake.calls() == [] and await history(pool) == []
    [logged] = await decisions(pool, "dry_run")
    assert logged["decided_by"] == "alice"


async def test_reject_denies_and_runs_nothing(pool, database_url, tmp_path):
    fake = write_fake_kubectl(tmp_path)
    settings = exec_settings(database_url, fake)
    ids = await seed(pool)
    pending = await _pending(pool, settings, ids)
    [row] = await list_approvals(pool=pool)
    event, [result] = await reject(row["id"], "bob", "not during business hours", pool=pool, now=T0)
    assert event.status == "rejected" and result.outcome == "denied"
    assert "bob" in result.reason and "business hours" in result.reason
    [logged] = await decisions(pool, "denied")
    assert logged["request_id"] == pending.request_id
    assert fake.calls() == [] and await history(pool) == []
    with pytest.raises(ApprovalError):
        await approve_and_run(row["id"], "alice", pool=pool, settings=settings, policy=ExecutionPolicy.from_settings(settings))
    assert fake.calls() == []


async def test_expired_approval_is_denied_and_can_no_longer_be_approved(pool, database_url, tmp_path):
    fake = write_fake_kubectl(tmp_path)
    settings = exec_settings(database_url, fake, approval_ttl_s=60)
    ids = await seed(pool)
    await _pending(pool, settings, ids)
    [row] = await list_approvals(pool=pool)
    assert await expire_approvals(pool=pool, now=T0 + timedelta(seconds=30)) == ([], [])
    with pytest.raises(ApprovalError, match="expired"):
        await approve_and_run(
            row["id"], "alice", pool=pool, settings=settings, policy=ExecutionPolicy.from_settings(settings),
            now=T0 + timedelta(seconds=61),
        )  # fmt: skip
    events, results = await expire_approvals(pool=pool, now=T0 + timedelta(seconds=61))
    assert [e.status for e in events] == ["expired"] and [r.outcome for r in results] == ["denied"]
    [logged] = await decisions(pool, "denied")
    assert "expired" in logged["reason"] and logged["details"]["expired"] is True
    assert await list_approvals(pool=pool) == []
    assert fake.calls() == [] and await history(pool) == []


async def test_stale_event_never_runs_automatically(pool, database_url, tmp_path):
    fake = write_fake_kubectl(tmp_path)
    settings = exec_settings(database_url, fake, stale_after_s=900)
    ids = await seed(pool)
    [result] = await handle(request(ids, at=T0 - timedelta(hours=2)), pool, settings, now=T0)
    assert result.outcome == "pending_approval" and "stale" in result.reason
    [replayed] = await handle(request(ids, replay=True), pool, settings, now=T0)
    assert replayed.outcome == "skipped" and "replay" in replayed.reason
    assert fake.calls() == []


# --- kill switch, off, dry-run ---------------------------------------------------------------


async def test_kill_switch_setting_and_row_each_stop_everything(pool, database_url, tmp_path):
    fake = write_fake_kubectl(tmp_path)
    ids = await seed(pool)
    by_setting = exec_settings(database_url, fake, kill_switch=True)
    [r1] = await handle(request(ids), pool, by_setting)
    assert r1.outcome == "skipped" and "kill switch" in r1.reason

    live = exec_settings(database_url, fake)
    await _pending(pool, live, ids)  # an approval waiting while the switch goes on
    [row] = await list_approvals(pool=pool)
    await set_kill_switch(True, "oncall", pool=pool, now=T0)
    [r2] = await handle(request(ids), pool, live)
    assert r2.outcome == "skipped" and "oncall" in r2.reason
    with pytest.raises(ApprovalError, match="kill switch"):
        await approve_and_run(row["id"], "alice", pool=pool, settings=live, policy=ExecutionPolicy.from_settings(live))
    off = exec_settings(database_url, fake, execution_mode="off")
    await set_kill_switch(False, "oncall", pool=pool, now=T0)
    [r3] = await handle(request(ids), pool, off)
    assert r3.outcome == "skipped" and "off" in r3.reason
    assert fake.calls() == [] and await history(pool) == []
    assert len(await decisions(pool, "skipped")) == 3

    # switched off again, the same kind of request runs
    [r4] = await handle(request(ids), pool, live)
    assert r4.outcome == "success"


async def test_dry_run_records_what_would_run_and_leaves_history_empty(pool, database_url, tmp_path):
    fake = write_fake_kubectl(tmp_path)
    settings = exec_settings(database_url, fake, execution_mode="dry-run")
    ids = await seed(pool)
    [result] = await handle(request(ids), pool, settings)
    [again] = await handle(request(ids, at=T0 + timedelta(minutes=1)), pool, settings, now=T0 + timedelta(minutes=1))
    assert result.outcome == "dry_run" and again.outcome == "skipped"  # cooldown applies to dry runs too
    assert fake.calls() == [] and await history(pool) == []
    [logged] = await decisions(pool, "dry_run")
    [plan] = logged["details"]["would_run"]
    assert plan["would_run"].endswith("rollout restart deployment/api -n payments")
    s = await solution(pool, ids[1])
    assert s["execution_count"] == 0 and float(s["success_rate"]) == 0
    # switching to live is not blocked by the dry run's cooldown
    [live] = await handle(request(ids, at=T0 + timedelta(minutes=2)), pool, exec_settings(database_url, fake), now=T0 + timedelta(minutes=2))
    assert live.outcome == "success"


# --- verification ----------------------------------------------------------------------------


async def test_run_followed_by_the_same_error_inside_the_window_is_recurred(pool, database_url, tmp_path):
    fake = write_fake_kubectl(tmp_path)
    settings = exec_settings(database_url, fake, verification_window_s=300, breaker_threshold=1)
    ids = await seed(pool)
    [run] = await handle(request(ids), pool, settings, now=T0)
    assert run.outcome == "success"
    later = T0 + timedelta(minutes=2)
    results = await handle(request(ids, at=later), pool, settings, now=later)
    # recurred opens the breaker (N=1); the object is inside its cooldown, so nothing is asked yet
    assert [r.outcome for r in results] == ["recurred", "skipped"]
    assert results[1].reason.startswith("cooldown")
    assert results[0].execution_history_id == run.execution_history_id
    s = await solution(pool, ids[1])
    assert (s["verified_run_count"], s["verified_success_count"], float(s["verified_success_rate"])) == (1, 0, 0.0)
    assert s["consecutive_failures"] == 1 and s["tripped_at"] is not None
    assert float(s["success_rate"]) == 100.0  # the document's rate stays as the trigger defines it
    assert await verify_outcomes(pool=pool, settings=settings, now=T0 + timedelta(hours=1)) == []


async def test_recurrence_is_judged_on_the_object_the_run_touched(pool, database_url, tmp_path):
    """The same error on another workload proves nothing about this restart (issue 10: the other
    workloads' recurrences marked it recurred and tripped the breaker); the same workload needing
    the same action again does."""
    fake = write_fake_kubectl(tmp_path)
    settings = exec_settings(database_url, fake, verification_window_s=300)
    ids = await seed(pool)
    [run] = await handle(request(ids), pool, settings, now=T0)
    other = request(ids, [kube("kubectl rollout restart deployment/billing -n payments")], at=T0 + timedelta(minutes=1))
    await stored(pool, other)
    # the same error hash was seen again too, on the other workload
    # the tests' clock is in 2030: the service makes no partition that far ahead of the database's
    # (migration 0090), so the owner makes this one
    await pool.execute("CREATE TABLE IF NOT EXISTS error_occurrences_y2030m01 PARTITION OF error_occurrences "
                       "FOR VALUES FROM ('2030-01-01') TO ('2030-02-01')")
    await pool.execute(
        "INSERT INTO error_occurrences (event_identity, occurred_at, hash_signature) VALUES ('e1', $1, $2)",
        (T0 + timedelta(minutes=1)).replace(tzinfo=None), ids[2],
    )  # fmt: skip
    assert await verify_outcomes(pool=pool, settings=settings, now=T0 + timedelta(minutes=2)) == []
    await stored(pool, request(ids, at=T0 + timedelta(minutes=3)))  # deployment/api again
    [verdict] = await verify_outcomes(pool=pool, settings=settings, now=T0 + timedelta(minutes=3, seconds=30))
    assert verdict.outcome == "recurred" and verdict.reason.startswith("planned_requests")
    assert verdict.execution_history_id == run.execution_history_id
    [h] = await history(pool)
    assert h["target_key"] == "k8s:payments/deployment/api" and h["target"]["name"] == "api"


async def test_run_followed_by_silence_is_resolved(pool, database_url, tmp_path):
    fake = write_fake_kubectl(tmp_path)
    settings = exec_settings(database_url, fake, verification_window_s=300)
    ids = await seed(pool)
    await pool.execute("UPDATE solutions SET consecutive_failures = 2 WHERE id = $1", ids[1])
    [run] = await handle(request(ids), pool, settings, now=T0)
    assert await verify_outcomes(pool=pool, settings=settings, now=T0 + timedelta(minutes=4)) == []
    [verdict] = await verify_outcomes(pool=pool, settings=settings, now=T0 + timedelta(minutes=6))
    assert verdict.outcome == "resolved" and verdict.execution_history_id == run.execution_history_id
    s = await solution(pool, ids[1])
    assert (s["verified_run_count"], s["verified_success_count"], float(s["verified_success_rate"])) == (1, 1, 100.0)
    assert s["consecutive_failures"] == 0
    # a request after the window does not touch the resolved run
    later = T0 + timedelta(minutes=20)
    results = await handle(request(ids, at=later), pool, settings, now=later)
    assert [r.outcome for r in results] == ["success"]


# --- the approvals CLI -----------------------------------------------------------------------


async def test_cli_lists_approves_rejects_and_flips_the_kill_switch(pool, database_url, tmp_path, monkeypatch):
    import io

    from elk_resolver.cli import approvals as approvals_cli

    fake = write_fake_kubectl(tmp_path)
    settings = exec_settings(database_url, fake)
    a, b = await seed(pool), await seed(pool)
    now = datetime.now(UTC)
    await _pending(pool, settings, a, at=now)
    await _pending(pool, settings, b, [kube("kubectl rollout restart deployment/billing -n payments")], at=now)

    async def cli(*argv):
        out, err = io.StringIO(), io.StringIO()
        code = await approvals_cli.main(list(argv), settings, pool=pool, out=out, err=err)
        return code, out.getvalue(), err.getvalue()

    code, listing, _ = await cli("approvals", "list")
    assert code == 0 and "ID" in listing and "rollout restart deployment/api" in listing
    first, second = sorted(r["id"] for r in await list_approvals(pool=pool))

    monkeypatch.setenv("USER", "carol")
    code, text, _ = await cli("approvals", "approve", str(first))
    assert code == 0 and "approved by carol" in text and "handed to the execute stage" in text
    assert fake.calls() == []  # nothing runs in the CLI process
    # the execute stage finds the approved request (here: its sweep; live: the pointer) and runs it
    [pointer] = await approved_waiting(pool=pool, settings=settings.model_copy(update={"approved_sweep_after_s": 0}))
    [run] = await handle_request(pointer, pool=pool, settings=settings, policy=ExecutionPolicy.from_settings(settings))
    assert run.outcome == "success" and run.executed_by == "carol"
    code, text, _ = await cli("approvals", "reject", str(second), "--reason", "wrong fix", "--by", "dave")
    assert code == 0 and "rejected by dave" in text
    code, _, error = await cli("approvals", "approve", str(second))
    assert code == 1 and "already rejected" in error
    assert [h["executed_by"] for h in await history(pool)] == ["carol"]

    code, text, _ = await cli("kill-switch", "on", "--by", "oncall")
    assert code == 0 and "ON" in text
    [r] = await handle(request(a, at=now), pool, settings, now=now)
    assert r.outcome == "skipped"
    code, text, _ = await cli("kill-switch", "off")
    assert code == 0 and "off" in text and "carol" in text
    code, text, _ = await cli("approvals", "list", "--status", "all")
    assert "approved" in text and "rejected" in text
