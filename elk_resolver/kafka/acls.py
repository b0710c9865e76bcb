"""The Kafka ACLs each stage's principal needs, from the settings the service runs with, and
nothing else: ``elk-resolver kafka acls`` prints them as ``kafka-acls`` commands and as Strimzi
``KafkaUser`` resources, as ``elk-resolver kubernetes rbac`` does for Kubernetes.

What each principal does on the broker (Kafka's operations: a consumer needs READ on the topic
and on its group, a producer WRITE on the topic, metadata DESCRIBE):

==========  ==================================================================================
ingest      reads topic_raw as group_ingest; writes topic_analysis and topic_dlq
analyze     reads topic_analysis as group_analyze; writes topic_execution and topic_dlq
execute     reads topic_execution as group_execute; writes topic_results, topic_approvals
            and topic_dlq
monitor     reads the committed offsets of the three stage groups (DESCRIBE) and the log end of
            their topics (a fetch: READ), writes nothing
operator    the CLI: ``topics`` (CREATE), ``replay`` (reads topic_raw through fresh groups named
            ``<group_ingest>-replay-*``, writes topic_analysis and topic_dlq), ``backfill-es``
            (writes topic_raw, as Logstash does), ``approvals approve`` (writes topic_execution,
            topic_results and topic_approvals)
==========  ==================================================================================

Every stage also DESCRIBEs every topic of the service: its topic watch reports a topic it cannot
see as missing (and the copy as not ready). With ``manage_topics`` on, each stage may CREATE
the service's topics again after a broker lost them; turn it off and create them with the
operator's ``elk-resolver topics`` to grant no CREATE to a stage. Nothing is granted on the
cluster, no ``All`` operation, no wildcard resource, no transactional id or idempotent write
(the producers are not idempotent). The console's approval pointer (topic_execution) is not
granted to the stages: without it the execute stage's sweep runs the approval after
``approved_sweep_after_s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from elk_resolver.settings import Settings

PRINCIPALS = ("ingest", "analyze", "execute", "monitor", "operator")


@dataclass(frozen=True)
class Acl:
    resource: str  # "topic" or "group"
    name: str
    operations: tuple[str, ...]  # Kafka's: Read, Write, Describe, Create
    pattern: str = "literal"  # or "prefix"


def _topic(name: str, *operations: str) -> Acl:
    return Acl("topic", name, operations)


def acls(settings: Settings) -> dict[str, list[Acl]]:
    """Principal (stage, or ``operator`` for the CLI) -> its ACLs, merged per resource."""
    s = settings
    every_topic = list(dict.fromkeys(s.topics()))
    need: dict[str, list[Acl]] = {
        "ingest": [_topic(s.topic_raw, "Read"), Acl("group", s.group_ingest, ("Read",)),
                   _topic(s.topic_analysis, "Write"), _topic(s.topic_dlq, "Write")],
        "analyze": [_topic(s.topic_analysis, "Read"), Acl("group", s.group_analyze, ("Read",)),
                    _topic(s.topic_execution, "Write"), _topic(s.topic_dlq, "Write")],
        "execute": [_topic(s.topic_execution, "Read"), Acl("group", s.group_execute, ("Read",)),
                    _topic(s.topic_results, "Write"), _topic(s.topic_approvals, "Write"), _topic(s.topic_dlq, "Write")],
        "monitor": [*(_topic(t, "Read") for t in (s.topic_raw, s.topic_analysis, s.topic_execution)),
                    *(Acl("group", g, ("Describe",)) for g in (s.group_ingest, s.group_analyze, s.group_execute))],
        "operator": [*(_topic(t, "Create") for t in every_topic),
                     _topic(s.topic_raw, "Read", "Write"), Acl("group", f"{s.group_ingest}-replay-", ("Read",), "prefix"),
                     _topic(s.topic_analysis, "Write"), _topic(s.topic_dlq, "Write"),
                     _topic(s.topic_execution, "Write"), _topic(s.topic_results, "Write"),
                     _topic(s.topic_approvals, "Write")],
    }
    for principal in ("ingest", "analyze", "execute", "monitor"):
        need[principal] += [_topic(t, "Describe") for t in every_topic]
        if s.manage_topics and principal != "monitor":
            need[principal] += [_topic(t, "Create") for t in every_topic]
    need["operator"] += [_topic(t, "Describe") for t in every_topic]
    return {principal: _merged(entries) for principal, entries in need.items()}


def _merged(entries: list[Acl]) -> list[Acl]:
    order = ("Read", "Write", "Create", "Describe")
    merged: dict[tuple[str, str, str], set[str]] = {}
    for acl in entries:
        merged.setdefault((acl.resource, acl.name, acl.pattern), set()).update(acl.operations)
    return [Acl(r, n, tuple(op for op in order if op in ops), p) for (r, n, p), ops in merged.items()]


def principal_name(prefix: str, principal: str) -> str:
    return f"{prefix}{principal}"


def kafka_acls_commands(settings: Settings, *, user_prefix: str, bootstrap: str | None = None) -> list[str]:
    """One ``kafka-acls.sh --add`` per principal and resource."""
    server = bootstrap or settings.kafka_bootstrap_servers or "KAFKA:9092"
    lines = []
    for principal, entries in acls(settings).items():
        lines.append(f"# {principal}")
        for acl in entries:
            ops = " ".join(f"--operation {op}" for op in acl.operations)
            pattern = " --resource-pattern-type prefixed" if acl.pattern == "prefix" else ""
            lines.append(
                f"kafka-acls.sh --bootstrap-server {server} --command-config admin.properties --add "
                f"--allow-principal User:{principal_name(user_prefix, principal)} {ops} --{acl.resource} {acl.name}{pattern}"
            )
    return lines


def strimzi_users(settings: Settings, *, user_prefix: str, cluster: str, namespace: str | None,
                  authentication: str) -> list[dict[str, Any]]:
    """A Strimzi ``KafkaUser`` (kafka.strimzi.io/v1beta2, simple authorization) per principal."""
    docs = []
    for principal, entries in acls(settings).items():
        metadata: dict[str, Any] = {"name": principal_name(user_prefix, principal),
                                    "labels": {"strimzi.io/cluster": cluster,
                                               "app.kubernetes.io/name": "elk-resolver",
                                               "app.kubernetes.io/component": principal}}
        if namespace:
            metadata["namespace"] = namespace
        docs.append({
            "apiVersion": "kafka.strimzi.io/v1beta2", "kind": "KafkaUser", "metadata": metadata,
            "spec": {
                "authentication": {"type": authentication},
                "authorization": {"type": "simple", "acls": [
                    {"resource": {"type": acl.resource, "name": acl.name,
                                  "patternType": "prefix" if acl.pattern == "prefix" else "literal"},
                     "operations": list(acl.operations), "host": "*"}
                    for acl in entries
                ]},
            },
        })  # fmt: skip
    return docs


def strimzi_authentication(settings: Settings) -> str:
    """The KafkaUser authentication type matching the settings: SCRAM-SHA-512, else a client
    certificate (tls), else scram-sha-512 (Strimzi's only password type)."""
    if settings.kafka_sasl_mechanism is None and settings.kafka_ssl_certfile is not None:
        return "tls"
    return "scram-sha-512"


def to_yaml(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)
