"""The execution stage on a real broker and real PostgreSQL: requests in, results out, each
request run at most once however many executors read it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaConsumer
from faststream.kafka import KafkaBroker

from elk_resolver.actions.targets import target_of_command
from elk_resolver.events.contracts import DeadLetterHeaders, ExecutionRequest, PlannedRequest
from streams.execute import build_execute
from tests.support.fake_kubectl import write_fake_kubectl
from tests.support.polling import wait_for
from tests.test_execute import AUTO_PATTERN, stored

RESTART = "kubectl rollout restart deployment/api -n payments"


class Collector:
    """Every record of some topics, read from the beginning by a group-less consumer."""

    def __init__(self, bootstrap: str, *topics: str) -> None:
        self.consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        self.records: list = []
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Collector:
        await self.consumer.start()

        async def run() -> None:
            async for record in self.consumer:
                self.records.append(record)

        self._task = asyncio.create_task(run())
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.consumer.stop()

    def values(self, topic: str) -> list[dict]:
        return [orjson.loads(r.value) for r in self.records if r.topic == topic]


async def seed(pool) -> tuple[int, int, str]:
    message = f"CrashLoopBackOff pod api-{uuid.uuid4().hex[:6]}"
    hash_ = hashlib.sha256(message.encode()).hexdigest()
    error_log_id = await pool.fetchval(
        "INSERT INTO error_logs (error_type, error_message, source_system, hash_signature) "
        "VALUES ('kubernetes', $1, 'payments/api', $2) RETURNING id",
        message,
        hash_,
    )
    solution_id = await pool.fetchval(
        "INSERT INTO solutions (error_hash, solution_type, solution_description, solution_commands, source) "
        "VALUES ($1, 'restart', 'restart', $2, 'playbook') RETURNING id",
        hash_,
        [{"type": "kubectl", "command": RESTART, "safe": True}],
    )
    return error_log_id, solution_id, hash_


def planned(ids, **extra) -> PlannedRequest:
    now = datetime.now(UTC)
    commands = extra.pop("commands", [{"type": "kubectl", "command": RESTART, "safe": True, "critical": True}])
    target, action, _ = target_of_command(commands[0])
    return PlannedRequest.model_validate(
        {
            "target": target.as_dict(),
            "action": action,
            "pattern": AUTO_PATTERN,
            "commands": commands,
            "request_id": uuid.uuid4().hex,
            "error_log_id": ids[0],
            "hash_signature": ids[2],
            "solution_id": ids[1],
            "solution_source": "playbook",
            "decision": "auto",
            "reason": "auto",
            "event_time": now,
            "requested_at": now,
            **extra,
        }
    )


async def request(pool, ids, **extra) -> ExecutionRequest:
    """Store a request as the analysis stage does; the pointer is what goes on the topic."""
    return await stored(pool, planned(ids, **extra))


def configure(settings, fake, **overrides):
    return settings.model_copy(
        update={
            "execution_mode": "live",
            "kubectl_path": str(fake.path),
            "kubectl_namespaces": ["payments"],
            "command_timeout_s": 5.0,
            "retry_backoff_initial_s": 0.1,
            "fleet_max_actions": 100,
            "fleet_max_actions_per_namespace": 100,
            "systemic_hold_objects": 100,
            **overrides,
        }
    )


@contextlib.asynccontextmanager
async def running(settings, pool, *group_ids, maintenance_interval_s=0.2):
    broker = KafkaBroker(settings.kafka_bootstrap_servers)
    await broker.start()
    stages = [
        build_execute(settings, pool=pool, broker=broker, group_id=g, maintenance_interval_s=maintenance_interval_s)
        for g in (group_ids or (None,))
    ]
    try:
        for stage in stages:
            await stage.start()
        await asyncio.gather(*(stage.wait_ready() for stage in stages))
        yield broker, stages
    finally:
        for stage in stages:
            await stage.stop()
        await broker.stop()


async def test_request_on_the_topic_runs_and_every_outcome_is_published_keyed_by_hash(settings, pool, tmp_path):
    fake = write_fake_kubectl(tmp_path)
    settings = configure(settings, fake)
    ids = await seed(pool)
    async with Collector(settings.kafka_bootstrap_servers, settings.topic_results) as out:
        async with running(settings, pool) as (broker, [stage]):
            assert stage.ready
            req = await request(pool, ids)
            await broker.publish(req, topic=settings.topic_execution, key=ids[2].encode())
            await wait_for(lambda: out.values(settings.topic_results), timeout=20, what="a result")
        [record] = [r for r in out.records]
        assert record.key == ids[2].encode()
        [result] = out.values(settings.topic_results)
        assert result["outcome"] == "success" and result["request_id"] == req.request_id
    rows = await pool.fetch("SELECT * FROM execution_history")
    assert len(rows) == 1 and rows[0]["request_id"] == req.request_id
    assert len(fake.calls()) == 1


async def test_a_replayed_request_read_by_two_executor_groups_runs_once(settings, pool, tmp_path, unique):
    fake = write_fake_kubectl(tmp_path)
    settings = configure(settings, fake, cooldown_s=0, max_runs_per_hour=100)
    ids = await seed(pool)
    req = await request(pool, ids)
    async with Collector(settings.kafka_bootstrap_servers, settings.topic_results) as out:
        # Two groups both receive every record: the strongest form of "two executors at once".
        async with running(settings, pool, f"g-{unique}-a", f"g-{unique}-b") as (broker, stages):
            for _ in range(2):  # and the request itself is replayed
                await broker.publish(req, topic=settings.topic_execution, key=ids[2].encode())
            await wait_for(lambda: len(out.values(settings.topic_results)) >= 4, timeout=20, what="4 results")
        outcomes = sorted(r["outcome"] for r in out.values(settings.topic_results))
    assert outcomes == ["duplicate", "duplicate", "duplicate", "success"]
    assert len(fake.calls()) == 1
    assert await pool.fetchval("SELECT count(*) FROM execution_history") == 1
    assert await pool.fetchval("SELECT count(*) FROM decision_log WHERE decision = 'duplicate'") == 3


async def test_two_members_of_one_group_share_the_work_and_each_request_runs_once(settings, pool, tmp_path):
    fake = write_fake_kubectl(tmp_path)
    settings = configure(settings, fake, cooldown_s=0, max_runs_per_hour=1000)
    seeded = [await seed(pool) for _ in range(8)]
    async with Collector(settings.kafka_bootstrap_servers, settings.topic_results) as out:
        group = settings.group_execute
        async with running(settings, pool, group, group) as (broker, stages):
            await wait_for(lambda: all(s.assignment for s in stages), timeout=20, what="both members assigned")
            for i, ids in enumerate(seeded):  # eight deployments: eight objects
                commands = [{"type": "kubectl", "command": f"kubectl rollout restart deployment/api{i} -n payments", "safe": True}]
                pointer = await request(pool, ids, commands=commands)
                await broker.publish(pointer, topic=settings.topic_execution, key=ids[2].encode())
            await wait_for(lambda: len(out.values(settings.topic_results)) >= 8, timeout=20, what="8 results")
            assert sum(s.handled for s in stages) == 8
    assert sorted(r["outcome"] for r in out.values(settings.topic_results)) == ["success"] * 8
    assert len(fake.calls()) == 8


async def test_invalid_request_goes_to_the_dead_letter_topic_with_its_coordinates(settings, pool, tmp_path):
    fake = write_fake_kubectl(tmp_path)
    settings = configure(settings, fake)
    ids = await seed(pool)
    async with Collector(settings.kafka_bootstrap_servers, settings.topic_dlq, settings.topic_results) as out:
        async with running(settings, pool) as (broker, [stage]):
            await broker.publish(b"{not json", topic=settings.topic_execution, key=b"k")
            await broker.publish(b'{"request_id": "x"}', topic=settings.topic_execution, key=b"k")
            await broker.publish(await request(pool, ids), topic=settings.topic_execution, key=b"k")  # after them, same partition
            await wait_for(lambda: out.values(settings.topic_results), timeout=20, what="the valid request's result")
            await wait_for(lambda: len([r for r in out.records if r.topic == settings.topic_dlq]) == 2, timeout=10, what="2 DLQ records")
        dlq = [r for r in out.records if r.topic == settings.topic_dlq]
    assert [r.value for r in dlq] == [b"{not json", b'{"request_id": "x"}']
    headers = dict((k, v.decode()) for k, v in dlq[0].headers)
    assert headers[DeadLetterHeaders.REASON] == "invalid-execution-request"
    assert headers[DeadLetterHeaders.TOPIC] == settings.topic_execution
    assert headers[DeadLetterHeaders.STAGE] == "execute"
    assert int(headers[DeadLetterHeaders.OFFSET]) >= 0 and headers[DeadLetterHeaders.PARTITION].isdigit()
    assert len(fake.calls()) == 1


async def test_pending_approval_is_published_and_expires_in_the_background(settings, pool, tmp_path):
    fake = write_fake_kubectl(tmp_path)
    settings = configure(settings, fake, approval_ttl_s=1.0)
    ids = await seed(pool)
    async with Collector(settings.kafka_bootstrap_servers, settings.topic_results, settings.topic_approvals) as out:
        async with running(settings, pool) as (broker, [stage]):
            req = await request(pool, ids, decision="approval", reason="LLM solution not yet trusted")
            await broker.publish(req, topic=settings.topic_execution, key=ids[2].encode())
            await wait_for(
                lambda: [a["status"] for a in out.values(settings.topic_approvals)] == ["pending", "expired"],
                timeout=20,
                what="pending then expired approval events",
            )
            await wait_for(lambda: len(out.values(settings.topic_results)) == 2, timeout=10, what="2 results")
        outcomes = [r["outcome"] for r in out.values(settings.topic_results)]
    assert outcomes == ["pending_approval", "denied"]
    assert fake.calls() == []
    assert await pool.fetchval("SELECT status FROM approvals") == "expired"
