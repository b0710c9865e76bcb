"""Issue 20, item 2: properties of the execute stage's concurrent batch.

Pure: :func:`streams.execute.in_key_order` handles every pointer of a batch once, one error's
pointers one after another in their order, different errors concurrently (whatever order the
event loop runs them in).

Against real PostgreSQL, with the real handler: random requests of 1..3 errors on objects of
1..3 namespaces, duplicate pointers (the same pointer twice, in one batch or the next), batches
cut anywhere, decided concurrently as the stage does: every stored request ends with a decision
line naming its object, each object is acted on exactly once (dry-run slots; cooldown per
object), a duplicate pointer is a ``duplicate``.

Broken variants found: running a batch's pointers all at once (the first property: one error's
pointers overlap and finish out of order); the per-object lock a no-op (the second: two
requests about one object, from two errors, both took a slot).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elk_resolver.actions.policy import ExecutionPolicy
from handlers.execute import handle_request
from streams.execute import in_key_order
from tests.support.shapes import DEPLOYMENTS, NAMESPACES, split
from tests.test_execute import kube, request, seed, stored

# --- pure ----------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    keys=st.lists(st.sampled_from("abcd"), min_size=1, max_size=30),
    yields=st.lists(st.integers(0, 5), min_size=30, max_size=30),
)
def test_one_errors_pointers_run_in_order_and_never_overlap_and_each_runs_once(keys, yields):
    items = list(enumerate(keys))
    log: list[tuple[str, int]] = []

    async def handle(item: tuple[int, str]) -> None:
        log.append(("start", item[0]))
        for _ in range(yields[item[0]]):
            await asyncio.sleep(0)
        log.append(("end", item[0]))

    asyncio.run(in_key_order(items, lambda item: item[1], handle))
    assert sorted(i for what, i in log if what == "end") == [i for i, _ in items]
    for key in set(keys):
        mine = [(what, i) for what, i in log if keys[i] == key]
        expected = [(what, i) for i, k in items if k == key for what in ("start", "end")]
        assert mine == expected


# --- against PostgreSQL -----------------------------------------------------------------------------


@st.composite
def pointer_batches(draw):
    namespaces = draw(st.lists(st.sampled_from(NAMESPACES), min_size=1, max_size=3, unique=True))
    objects = draw(st.lists(st.tuples(st.sampled_from(namespaces), st.sampled_from(DEPLOYMENTS)),
                            min_size=1, max_size=6, unique=True))  # fmt: skip
    errors = draw(st.integers(1, 3))
    wanted = draw(st.lists(st.tuples(st.integers(0, errors - 1), st.sampled_from(objects)), min_size=1, max_size=12))
    duplicates = draw(st.lists(st.integers(0, len(wanted) - 1), max_size=4))
    order = draw(st.permutations(list(range(len(wanted) + len(duplicates)))))
    cuts = draw(st.lists(st.integers(1, 20), max_size=3))
    return errors, wanted, duplicates, order, cuts


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=pointer_batches())
async def test_a_concurrent_batch_acts_on_each_object_once_and_logs_every_other_request(pool, database_url, case):
    from tests.test_execute import exec_settings

    errors, wanted, duplicates, order, cuts = case
    await pool.execute(
        "TRUNCATE decision_log, approvals, incident_objects, incidents, execution_requests, planned_requests,"
        " execution_history, solutions, error_logs RESTART IDENTITY CASCADE"
    )
    live = exec_settings(database_url, None, execution_mode="dry-run", kubectl_namespaces=list(NAMESPACES),
                         fleet_max_actions=100, fleet_max_actions_per_namespace=100, systemic_hold_objects=100)  # fmt: skip
    policy = ExecutionPolicy.from_settings(live)
    ids = [await seed(pool, message=f"CrashLoopBackOff error {i} {uuid.uuid4().hex}") for i in range(errors)]
    now = datetime.now(UTC)
    pointers = []
    for e, (namespace, name) in wanted:
        req = request(ids[e], [kube(f"kubectl rollout restart deployment/{name} -n {namespace}")], at=now)
        pointers.append(await stored(pool, req))
    sequence = [pointers[i] if i < len(pointers) else pointers[duplicates[i - len(pointers)]] for i in order]
    slots = asyncio.Semaphore(live.execute_concurrency)

    async def handle(pointer) -> None:
        async with slots:
            await handle_request(pointer, pool=pool, settings=live, policy=policy, now=now)

    for batch in split(sequence, cuts):
        await in_key_order(batch, lambda p: p.hash_signature, handle)

    acted = await pool.fetch("SELECT target_key, count(*) AS n FROM execution_requests WHERE slot IS NOT NULL GROUP BY 1")
    assert {r["target_key"]: r["n"] for r in acted} == {f"k8s:{ns}/deployment/{n}": 1 for _, (ns, n) in wanted}
    lines = await pool.fetch("SELECT request_id, decision, target_key FROM decision_log")
    by_request: dict[str, list[str]] = {}
    for line in lines:
        by_request.setdefault(line["request_id"], []).append(line["decision"])
    for pointer, (_, (namespace, name)) in zip(pointers, wanted):
        decided = by_request.get(pointer.request_id)
        assert decided, pointer.request_id
        assert decided[0] in ("dry_run", "skipped"), decided
    objects = {p.request_id: f"k8s:{ns}/deployment/{n}" for p, (_, (ns, n)) in zip(pointers, wanted)}
    assert all(line["target_key"] == objects[line["request_id"]] for line in lines)
    assert sum(1 for line in lines if line["decision"] == "duplicate") == len(duplicates)


async def test_two_errors_on_one_object_decided_at_once_act_on_it_once(pool, database_url):
    """What the property shrinks the lock-free variant to: two errors, one object, one batch."""
    from tests.test_execute import exec_settings

    live = exec_settings(database_url, None, execution_mode="dry-run", kubectl_namespaces=["shop"])
    policy = ExecutionPolicy.from_settings(live)
    now = datetime.now(UTC)
    pointers = [
        await stored(pool, request(await seed(pool), [kube("kubectl rollout restart deployment/checkout -n shop")], at=now))
        for _ in range(2)
    ]
    await in_key_order(pointers, lambda p: p.hash_signature,
                       lambda p: handle_request(p, pool=pool, settings=live, policy=policy, now=now))  # fmt: skip
    decided = sorted(r["decision"] for r in await pool.fetch("SELECT decision FROM decision_log"))
    assert decided == ["dry_run", "skipped"]
