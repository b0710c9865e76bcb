"""Issue 20, item 1: every affected object gets its own decision.

Three deployments of namespace ``shop`` crash-loop at once, their kubelet lines interleaved,
pods named as ReplicaSets name them, no ``event.hash`` (the record's bytes are its identity),
messages naming the pod and its uid. Real broker, real PostgreSQL, the ingest, analyze and
execute stages in live mode and a recording kubectl.

The invariant (README, "How it stays safe"): for every (error, object) that a live error-level
event asks an action for, within the settle time there is exactly one of: a run on that object,
or a decision_log line naming that object. A repeat folds only into the open request of its own
object.

Before the fix: one planned request (``k8s:shop/deployment/<whichever came first>``,
``repeats = 2``), one restart; the other two deployments had no run and no decision_log line
(ingest's analysis event for each object carried the message of the error's first event in the
batch, whose pod the playbook's extraction then bound).
"""

from __future__ import annotations

import random

from tests.support.fake_kubectl import write_fake_kubectl
from tests.support.incident import (
    interleaved,
    kubelet_crashloop,
    kubelet_oomkilled,
    live_settings,
    restarts,
    run_incident,
    unaccounted,
)

SHOP = ("checkout", "payments", "search")


async def test_three_deployments_crash_looping_together_each_get_one_restart_and_every_other_request_a_line(
    settings, pool, tmp_path
):
    fake = write_fake_kubectl(tmp_path)
    live = live_settings(settings, fake)
    rng = random.Random(20)
    values = interleaved(*([kubelet_crashloop("shop", d, rng) for _ in range(300)] for d in SHOP))
    sent = await run_incident(live, pool, values)
    assert sorted(restarts(fake)) == [f"deployment/{d} -n shop" for d in sorted(SHOP)]
    assert await unaccounted(pool, sent) == []
    stored = {r["target_key"] for r in await pool.fetch("SELECT target_key FROM planned_requests")}
    assert stored == {f"k8s:shop/deployment/{d}" for d in SHOP}


async def test_three_deployments_crash_looping_with_oomkilled_lines_for_one_restart_each_once(settings, pool, tmp_path):
    fake = write_fake_kubectl(tmp_path)
    live = live_settings(settings, fake)
    rng = random.Random(21)
    streams = [[kubelet_crashloop("shop", d, rng) for _ in range(300)] for d in SHOP]
    streams.append([kubelet_oomkilled("shop", "checkout", rng) for _ in range(100)])
    sent = await run_incident(live, pool, interleaved(*streams))
    assert sorted(restarts(fake)) == [f"deployment/{d} -n shop" for d in sorted(SHOP)]
    assert await unaccounted(pool, sent) == []
    # two errors on checkout (crash loop, OOM), each with its own request naming checkout
    checkout = await pool.fetch(
        "SELECT DISTINCT hash_signature FROM planned_requests WHERE target_key = 'k8s:shop/deployment/checkout'"
    )
    assert len(checkout) == 2
