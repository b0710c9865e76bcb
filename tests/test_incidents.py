"""Issue 20, item 3: incidents as they happen, each with the decision an experienced SRE would
make (docs/incidents.md has the table: the events, the expected decisions, what the service did
and its decision_log lines). Real broker, real PostgreSQL, the ingest, analyze and execute
stages in live mode with the recording kubectl; every scenario also checks the invariant: every
(error, object) asked for has a run on the object or a decision_log line naming it.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.support import scenarios as sc
from tests.support.fake_kubectl import write_fake_kubectl
from tests.support.incident import live_settings, unaccounted


async def play(settings, pool, tmp_path, scenario: sc.Scenario) -> dict:
    fake = write_fake_kubectl(tmp_path)
    live = live_settings(settings, fake, **scenario.settings)
    result = await sc.play(live, pool, scenario, fake)
    kwargs = {"objects": scenario.objects} if scenario.objects else {}
    assert await unaccounted(pool, scenario.sent, **kwargs) == []
    return result


def restarted(result: dict) -> list[str]:
    """``kind/name -n namespace`` of every rollout restart kubectl ran."""
    out = []
    for call in result["kubectl"]:
        argv = call.split()
        if argv[:2] == ["rollout", "restart"]:
            out.append(f"{argv[2]} -n {argv[argv.index('-n') + 1]}")
    return sorted(out)


@pytest.mark.parametrize("k", range(1, 7))
@pytest.mark.parametrize("spread", [False, True], ids=["one-namespace", "three-namespaces"])
async def test_k_deployments_crash_looping_at_once(settings, pool, tmp_path, k, spread):
    result = await play(settings, pool, tmp_path, sc.crashloops(k, spread=spread))
    done = restarted(result)
    assert len(done) == len(set(done))  # never twice
    budget = 4 if spread else 3
    if k <= budget:
        assert len(done) == k and not result["incidents"]
    elif k == 4:  # one namespace: the fleet budget per namespace
        assert len(done) == 3 and not result["incidents"]
        [approval] = result["approvals"]
        assert approval["reason"].startswith("fleet budget: 3 actions in namespace shop")
    else:  # more than systemic_hold_objects: nothing runs, one incident names them all
        assert done == []
        [incident] = result["incidents"]
        assert incident["action"] == "kubectl:rollout restart:deployment"
        assert len({h["target_key"] for h in result["held"]}) == k


async def test_a_dependency_outage_restarts_the_dependency_once_and_never_the_clients(settings, pool, tmp_path):
    result = await play(settings, pool, tmp_path, sc.dependency_outage())
    assert restarted(result) == ["deployment/db -n payments"]
    lines = result["lines"]
    clients = [x for x in lines if (x["reason"] or "").startswith("dependency outage: db.payments.svc:5432")]
    assert {x["target_key"] for x in clients} == {"k8s:shop/deployment/checkout", "k8s:payments/deployment/api"}
    assert all("the clients are not restarted" in x["reason"] for x in clients)
    assert all(set(x["details"]["services"]) >= {"k8s:shop/deployment/checkout", "k8s:dev/deployment/toy"} for x in clients)
    others = [x for x in lines if x["target_key"] == "dependency:db.payments.svc:5432"]
    assert others and all("acted on through its own object k8s:payments/deployment/db" in x["reason"] for x in others)


async def test_an_unreachable_dependency_outside_the_cluster_is_one_approval_naming_every_service(settings, pool, tmp_path):
    result = await play(settings, pool, tmp_path, sc.external_dependency())
    assert result["kubectl"] == []
    [approval] = result["approvals"]
    assert approval["target_key"] == "dependency:pg-main.internal:5432"
    for service in ("k8s:shop/deployment/checkout", "k8s:shop/deployment/cart", "k8s:payments/deployment/api"):
        assert service in approval["reason"]
    assert approval["request"]["commands"] == []


async def test_a_node_going_bad_is_one_held_incident_naming_the_node(settings, pool, tmp_path):
    result = await play(settings, pool, tmp_path, sc.node_going_bad())
    assert result["kubectl"] == []
    [incident] = result["incidents"]
    assert incident["action"] == "node:node-7" and "node node-7 is going bad" in incident["reason"]
    assert {h["target_key"] for h in result["held"]} == {
        "k8s:shop/deployment/checkout", "k8s:shop/deployment/cart", "k8s:payments/deployment/api", "k8s:dev/deployment/toy",
    }  # fmt: skip
    assert {h["signs"]["host"] for h in result["held"]} == {"node-7"}


async def test_a_bad_rollout_asks_for_the_rollback_with_the_evidence(settings, pool, tmp_path):
    result = await play(settings, pool, tmp_path, sc.bad_rollout())
    assert result["kubectl"] == []
    [approval] = result["approvals"]
    assert [c["command"] for c in approval["request"]["commands"]] == ["kubectl rollout undo deployment/checkout -n shop"]
    assert "bad rollout: the crash-looping pods belong to ReplicaSet checkout-" in approval["reason"]
    assert "ran before it" in approval["reason"]


async def test_a_crash_loop_that_returns_after_its_restart_goes_to_a_person_with_the_history(settings, pool, tmp_path):
    result = await play(settings, pool, tmp_path, sc.recurrence())
    assert restarted(result) == ["deployment/checkout -n shop"]
    [approval] = result["approvals"]
    assert approval["reason"].startswith("recurred: kubectl:rollout restart:deployment of k8s:shop/deployment/checkout")
    line = next(x for x in result["lines"] if x["decision"] == "pending_approval")
    [run] = line["details"]["history"]
    assert run["execution_status"] == "success" and run["verified"] == "recurred"
    waits = [x for x in result["lines"] if (x["reason"] or "").startswith(f"approval {approval['id']} for")]
    assert waits  # the third wave waits on the person: no restart loop
    verdict = await pool.fetchrow("SELECT consecutive_failures FROM solutions WHERE playbook_name = 'pod-crashloopbackoff-restart'")
    assert verdict["consecutive_failures"] >= 1  # the breaker counts it


async def test_errors_that_stopped_by_themselves_run_nothing(settings, pool, tmp_path):
    result = await play(settings, pool, tmp_path, sc.stopped_by_itself())
    assert result["kubectl"] == []
    assert {x["reason"].split(":")[0] for x in result["lines"]} == {"stopped by itself"}


async def test_mixed_signals_on_one_object_make_one_action(settings, pool, tmp_path):
    result = await play(settings, pool, tmp_path, sc.mixed_signals())
    assert restarted(result) == ["deployment/checkout -n shop"]
    kinds = Counter(x["reason"].split(":")[0] for x in result["lines"])
    assert set(kinds) <= {"cooldown"}


def test_a_dependency_is_a_host_and_port_never_a_source_line():
    from elk_resolver.events.signs import dependency_of

    assert dependency_of("Connection refused (db.payments.svc:5432): connect to port 5432 failed") == "db.payments.svc:5432"
    assert dependency_of("dial tcp 10.0.3.7:5432: i/o timeout") == "10.0.3.7:5432"
    assert dependency_of('I1201 10:00:00 2291 kubelet.go:2457] "Container terminated" reason="OOMKilled"') is None
    assert dependency_of("at com.shop.Checkout.pay(Checkout.java:42) calling PG-Main.internal:5432") == "pg-main.internal:5432"


def test_rollout_evidence_needs_an_older_replicaset_that_had_gone_quiet():
    from datetime import datetime, timedelta

    from handlers.analyze import _rollout_evidence

    now = datetime(2026, 12, 1, 12, 0)

    def rs(name, first_min, last_min):
        return {"rs": name, "first_at": now - timedelta(minutes=first_min), "last_at": now - timedelta(minutes=last_min),
                "n": 1, "last_run_at": None}  # fmt: skip

    assert "ReplicaSet checkout-new" in _rollout_evidence([rs("old", 20, 10), rs("new", 1, 0)], "new", "checkout", now, 1800)
    assert _rollout_evidence([rs("new", 1, 0)], "new", "checkout", now, 1800) is None  # nothing before it
    assert _rollout_evidence([rs("old", 20, 0.5), rs("new", 1, 0)], "new", "checkout", now, 1800) is None  # both failing
    many = [rs(f"r{i}", 3 - i * 0.001, 3 - i * 0.001) for i in range(3)] + [rs("new", 1, 0)]
    assert _rollout_evidence(many, "new", "checkout", now, 1800) is None  # a burst of random names is not a rollout
    ours = [rs("old", 20, 10), {**rs("new", 1, 0), "last_run_at": now - timedelta(minutes=2)}]
    assert _rollout_evidence(ours, "new", "checkout", now, 1800) is None  # the service's own restart made it
