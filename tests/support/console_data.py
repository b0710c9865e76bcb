"""A console with something on every page: the shipped demo events through the real stages in
dry-run mode (ingest, analyze, execute on the real broker and PostgreSQL, as ``elk-resolver
demo`` runs them), then what people do: an approval approved (the execute stage records its dry
run as the approver), errors acknowledged, owned, noted, resolved, snoozed and muted, a playbook
and a pattern switched, the kill switch flipped."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from elk_resolver.cli.main import DEMO_SETTINGS, publish_demo_events
from elk_resolver.console.auth import hash_password
from elk_resolver.operations import approvals, controls, triage
from elk_resolver.operations.people import Person
from handlers.execute import utc_naive
from tests.support.polling import wait_for

USERS = {"alice": hash_password("alice-pw"), "bob": hash_password("bob-pw")}
ALICE = Person("alice", via="login")
BOB = Person("bob", via="login")


def demo_settings(settings: Any, **extra: Any) -> Any:
    return settings.model_copy(update={**DEMO_SETTINGS, "console_users": USERS, "console_approvers": ["alice"],
                                       "console_secret": "console-test", "cooldown_s": 0, **extra})


async def populate(app: Any, settings: Any, pool: Any) -> dict[str, Any]:
    """Run the demo through ``app`` (started with ingest, analyze and execute) and act on it as
    people do; returns the ids the pages show."""
    await publish_demo_events(app, settings, timeout=120)
    q = "SELECT a.id FROM approvals a WHERE a.status = 'pending' AND a.request::text LIKE $1 ORDER BY a.id LIMIT 1"
    approval = await pool.fetchval(q, "%clear_read_only_block%")
    assert approval is not None, "the demo's read-only index needs an approval"
    await approvals.approve(pool, settings, approval, ALICE, publish=app._publish)  # noqa: SLF001 - the console's publisher
    await wait_for(lambda: pool.fetchval("SELECT count(*) FROM decision_log WHERE decision = 'dry_run' "
                                         "AND decided_by = 'alice'"),
                   timeout=60, what="the approved request's dry run, recorded as alice")
    errors = {r["error_type"]: r["id"] for r in await pool.fetch("SELECT id, error_type FROM error_logs ORDER BY id")}
    pod_error = await pool.fetchval("SELECT id FROM error_logs WHERE raw_log_data @> "
                                    """'{"kubernetes": {"pod": {"name": "logstash-0"}}}' ORDER BY id LIMIT 1""")
    index_error = await pool.fetchval("SELECT id FROM error_logs WHERE error_type = 'cluster_block_exception'")
    ids = sorted(errors.values())
    await triage.set_state(pool, index_error, "acknowledged", ALICE)
    await triage.set_owner(pool, index_error, "alice", ALICE)
    await triage.add_note(pool, index_error, "disk on es-data-2 is at 96 %; freeing old indices", ALICE)
    await triage.set_state(pool, ids[-1], "resolved", BOB)
    await triage.set_state(pool, ids[-2], "muted", BOB)
    await triage.set_state(pool, ids[-3], "snoozed", BOB, until=utc_naive() + timedelta(hours=2))
    await controls.switch_playbook(pool, settings, "kafka-consumer-lag-scale", False, ALICE)
    await controls.set_pattern_auto_resolve(pool, settings, 1, False, BOB)
    await controls.set_kill_switch(pool, settings, True, BOB)
    await controls.set_kill_switch(pool, settings, False, ALICE)
    return {"approval": approval, "index_error": index_error, "pod_error": pod_error, "errors": errors}


@dataclass
class Demo:
    app: Any
    settings: Any
    pool: Any
    ids: dict[str, Any]

    @property
    def base(self) -> str:
        return self.app.http_url


@contextlib.asynccontextmanager
async def demo_console(postgres: Any, template_database: str, kafka: Any, state_dir: Path) -> AsyncIterator[Demo]:
    """A database and topics of its own, every stage running with the console on its HTTP port,
    and :func:`populate` done: for a module's tests to share (it takes a while)."""
    from elk_resolver.kafka.security import client_options
    from elk_resolver.kafka.topics import ensure_topics
    from elk_resolver.service import create_app
    from elk_resolver.settings import make_settings
    from elk_resolver.store.db import create_pool
    from tests.conftest import create_database, drop_database

    name = await create_database(postgres, template_database)
    try:
        s = make_settings(kafka_bootstrap_servers=kafka.bootstrap_servers, database_url=postgres.dsn(name),
                          state_dir=state_dir, topic_partitions=2, http_port=0).isolated(f"t-{uuid.uuid4().hex[:12]}")
        await ensure_topics(client_options(s), s.topics(), partitions=s.topic_partitions)
        s = demo_settings(s)
        async with await create_pool(s.database_url, min_size=1, max_size=5) as pool:
            async with create_app(s, ["ingest", "analyze", "execute", "monitor"], serve_http=True) as app:
                yield Demo(app, s, pool, await populate(app, s, pool))
    finally:
        await drop_database(postgres, name)
