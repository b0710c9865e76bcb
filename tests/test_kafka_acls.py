"""`elk-resolver kafka acls`: each stage's principal may read its input topic and group, write
its outputs, describe the service's topics, and nothing else (issue 21)."""

from __future__ import annotations

import os

import pytest
import yaml

from elk_resolver.cli.main import main
from elk_resolver.kafka.acls import acls
from elk_resolver.settings import make_settings

STRIMZI_OPERATIONS = {"Read", "Write", "Create", "Delete", "Alter", "Describe", "ClusterAction", "AlterConfigs",
                      "DescribeConfigs", "IdempotentWrite", "All"}


def run(monkeypatch, capsys, *args: str, **env: str) -> str:
    for name in [n for n in os.environ if n.startswith("ELK_RESOLVER_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(f"ELK_RESOLVER_{name.upper()}", value)
    assert main(["kafka", "acls", *args]) == 0
    return capsys.readouterr().out


def grants(settings) -> dict[str, set[tuple[str, str, str]]]:
    """principal -> {(resource type, name, operation)} (prefixed groups marked with a trailing *)."""
    return {p: {(a.resource, a.name + ("*" if a.pattern == "prefix" else ""), op) for a in entries for op in a.operations}
            for p, entries in acls(settings).items()}


def test_each_stage_reads_its_input_and_group_and_writes_only_its_outputs():
    s = make_settings(manage_topics=False)
    g = grants(s)
    describe_all = {("topic", t, "Describe") for t in s.topics()}
    assert g["ingest"] - describe_all == {
        ("topic", s.topic_raw, "Read"), ("group", s.group_ingest, "Read"),
        ("topic", s.topic_analysis, "Write"), ("topic", s.topic_dlq, "Write")}
    assert g["analyze"] - describe_all == {
        ("topic", s.topic_analysis, "Read"), ("group", s.group_analyze, "Read"),
        ("topic", s.topic_execution, "Write"), ("topic", s.topic_dlq, "Write")}
    assert g["execute"] - describe_all == {
        ("topic", s.topic_execution, "Read"), ("group", s.group_execute, "Read"),
        ("topic", s.topic_results, "Write"), ("topic", s.topic_approvals, "Write"), ("topic", s.topic_dlq, "Write")}
    assert g["monitor"] - describe_all == {
        *(("topic", t, "Read") for t in (s.topic_raw, s.topic_analysis, s.topic_execution)),
        *(("group", grp, "Describe") for grp in (s.group_ingest, s.group_analyze, s.group_execute))}
    for stage in ("ingest", "analyze", "execute", "monitor"):
        assert describe_all <= g[stage]
        # no stage writes the raw topic: only Logstash (and the operator's backfill) may
        assert ("topic", s.topic_raw, "Write") not in g[stage]
    assert ("topic", s.topic_raw, "Write") in g["operator"]
    assert ("group", f"{s.group_ingest}-replay-*", "Read") in g["operator"]  # replay's fresh groups


def test_nothing_wide_is_ever_granted():
    for manage in (True, False):
        for principal, entries in acls(make_settings(manage_topics=manage)).items():
            for acl in entries:
                assert acl.resource in ("topic", "group"), (principal, acl)
                assert "*" not in acl.name and acl.name, (principal, acl)
                assert set(acl.operations) <= {"Read", "Write", "Create", "Describe"}, (principal, acl)
                assert acl.pattern == "literal" or (principal, acl.resource) == ("operator", "group")


def test_create_follows_manage_topics():
    on, off = grants(make_settings(manage_topics=True)), grants(make_settings(manage_topics=False))
    s = make_settings()
    for stage in ("ingest", "analyze", "execute"):
        assert {("topic", t, "Create") for t in s.topics()} <= on[stage]
        assert not any(op == "Create" for _, _, op in off[stage])
    assert not any(op == "Create" for _, _, op in on["monitor"])


def test_strimzi_users_follow_the_settings_names(monkeypatch, capsys):
    out = run(monkeypatch, capsys, "--cluster", "prod", "--namespace", "kafka",
              topic_raw="logs.errors", group_ingest="ingesters", manage_topics="false")
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert [d["metadata"]["name"] for d in docs] == [f"elk-resolver-{p}" for p in
                                                      ("ingest", "analyze", "execute", "monitor", "operator")]
    ingest = docs[0]
    assert ingest["apiVersion"] == "kafka.strimzi.io/v1beta2" and ingest["kind"] == "KafkaUser"
    assert ingest["metadata"]["labels"]["strimzi.io/cluster"] == "prod" and ingest["metadata"]["namespace"] == "kafka"
    assert ingest["spec"]["authentication"] == {"type": "scram-sha-512"}
    rules = {(r["resource"]["type"], r["resource"]["name"]): r["operations"] for r in ingest["spec"]["authorization"]["acls"]}
    assert rules[("topic", "logs.errors")] == ["Read", "Describe"] and rules[("group", "ingesters")] == ["Read"]
    for doc in docs:
        for rule in doc["spec"]["authorization"]["acls"]:
            assert set(rule["operations"]) <= STRIMZI_OPERATIONS - {"All"}
            assert rule["resource"]["patternType"] in ("literal", "prefix")


@pytest.mark.parametrize("stage", ["ingest", "analyze", "execute", "monitor", "operator"])
def test_kafka_acls_commands_name_one_principal_and_one_resource_each(monkeypatch, capsys, stage):
    out = run(monkeypatch, capsys, "--format", "commands", "--user-prefix", "svc-", manage_topics="false")
    lines = [line for line in out.splitlines() if f"User:svc-{stage} " in line]
    assert lines and all(line.startswith("kafka-acls.sh ") and " --add " in line for line in lines)
    assert all(line.count("--topic ") + line.count("--group ") == 1 for line in lines)
    assert not any("--cluster" in line or "--transactional-id" in line for line in lines)
