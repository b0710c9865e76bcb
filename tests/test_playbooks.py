from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from elk_resolver.actions.playbooks import (
    MissingPlaceholder,
    PlaybookError,
    UnsafePlaceholderValue,
    context_from_event,
    load_playbooks,
)
from elk_resolver.actions.policy import ES_ACTIONS, ExecutionPolicy, evaluate


def ecs_event(message: str, *, namespace: str, pod: str, container: str, **extra: Any) -> dict[str, Any]:
    """An event as Filebeat (add_kubernetes_metadata) -> Logstash ships it."""
    event: dict[str, Any] = {
        "@timestamp": "2024-05-01T10:22:31.456Z",
        "message": message,
        "log": {"level": "ERROR", "file": {"path": f"/var/log/containers/{pod}_{namespace}_{container}-3f9a.log"}},
        "ecs": {"version": "8.11.0"},
        "host": {"name": "worker-3"},
        "kubernetes": {
            "namespace": namespace,
            "pod": {"name": pod, "uid": "5c0f2d1e-8b7a-4c61-9e3f-2a1b0c9d8e7f", "ip": "10.244.3.17"},
            "container": {"name": container},
            "node": {"name": "worker-3"},
            "labels": {"app": container, "pod-template-hash": pod.rsplit("-", 2)[-2]},
        },
        "tags": ["beats_input_codec_plain_applied"],
    }
    event["kubernetes"].update(extra)
    return event


# (playbook, pattern_name, category, event, expected commands)
CASES: list[tuple[str, str | None, str | None, dict[str, Any], list[str]]] = [
    (
        "pod-crashloopbackoff-restart",
        "Pod CrashLoopBackOff",
        "kubernetes",
        # a kubelet back-off event shipped by the event exporter in the same namespace: the
        # subject is in the message (another namespace's subject is refused, see below)
        ecs_event(
            "Warning BackOff 2m (x14 over 9m) kubelet CrashLoopBackOff: back-off 5m0s restarting failed "
            "container=api pod=api-7d9c8b6f5-x2kzq_payments(8f1c2e4a-51b7-4d2e-9a63-0c5e7b1f2d44)",
            namespace="payments",
            pod="event-exporter-6b8d9f7c5-p4t2v",
            container="event-exporter",
        ),
        ["kubectl rollout restart deployment/api -n payments"],
    ),
    (
        "pod-crashloopbackoff-rollback",
        "Pod CrashLoopBackOff",
        "kubernetes",
        ecs_event(
            "Warning BackOff kubelet CrashLoopBackOff: back-off 2m40s restarting failed "
            "container=api pod=api-7d9c8b6f5-x2kzq_payments(8f1c2e4a-51b7-4d2e-9a63-0c5e7b1f2d44)",
            namespace="payments",
            pod="event-exporter-6b8d9f7c5-p4t2v",
            container="event-exporter",
        ),
        ["kubectl rollout undo deployment/api -n payments"],
    ),
    (
        "out-of-memory-restart",
        "Out of Memory",
        "resource",
        ecs_event(
            'Exception in thread "kafka-consumer-1" java.lang.OutOfMemoryError: Java heap space\n'
            "\tat java.base/java.util.Arrays.copyOf(Arrays.java:3537)\n"
            "\tat com.shop.orders.OrderBatcher.flush(OrderBatcher.java:88)",
            namespace="shop",
            pod="orders-api-5f7b9c6d4-q8w2n",
            container="orders-api",
        ),
        ["kubectl rollout restart deployment/orders-api -n shop"],
    ),
    (
        "connection-refused-restart-target",
        "Connection Refused",
        "network",
        ecs_event(
            "org.postgresql.util.PSQLException: could not connect to server: Connection refused\n"
            '\tIs the server running on host "orders-db.shop.svc.cluster.local" (10.96.41.7) and accepting\n'
            "\tTCP/IP connections on port 5432?",
            namespace="shop",
            pod="orders-api-5f7b9c6d4-q8w2n",
            container="orders-api",
        ),
        ["kubectl rollout restart deployment/orders-db -n shop"],
    ),
    (
        "elasticsearch-read-only-index",
        None,
        None,
        ecs_event(
            "[2024-05-01T10:22:31,456][INFO ][logstash.outputs.elasticsearch][main][3f1e9c] Retrying failed action "
            '{:status=>429, :action=>["index", {:_id=>nil, :_index=>"logs-app-2024.05.01", :routing=>nil}, '
            '{"message"=>"..."}], :error=>{"type"=>"cluster_block_exception", "reason"=>"index '
            "[logs-app-2024.05.01] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage watermark, "
            'index has read-only-allow-delete block];"}}',
            namespace="logging",
            pod="logstash-7c9f5d8b6d-abcde",
            container="logstash",
        ),
        ["clear_read_only_block index=logs-app-2024.05.01"],
    ),
    (
        "elasticsearch-circuit-breaker",
        None,
        None,
        ecs_event(
            "[2024-05-01T10:23:02,118][ERROR][logstash.outputs.elasticsearch][main][3f1e9c] Encountered a retryable "
            'error (will retry with exponential backoff) {:code=>429, :url=>"https://elasticsearch-es-http:9200/_bulk", '
            ':content_length=>10485312, :body=>"{\\"error\\":{\\"root_cause\\":[{\\"type\\":\\"circuit_breaking_exception\\",'
            '\\"reason\\":\\"[parent] Data too large, data for [<http_request>] would be [1021034496/973.7mb], which is '
            "larger than the limit of [1020054732/972.7mb], real usage: [1021033472/973.7mb], new bytes reserved: "
            '[1024/1kb]\\",\\"bytes_wanted\\":1021034496,\\"bytes_limit\\":1020054732,\\"durability\\":\\"TRANSIENT\\"}]}}"}',
            namespace="logging",
            pod="logstash-7c9f5d8b6d-abcde",
            container="logstash",
        ),
        ["kubectl rollout restart deployment/logstash -n logging"],
    ),
    (
        "elasticsearch-unassigned-shards",
        None,
        None,
        ecs_event(
            "[2024-05-01T10:15:09,004][WARN ][o.e.c.r.a.AllocationService] [es-master-0] shard has exceeded the "
            "maximum number of retries [5] on failed allocation attempts - manually call "
            "[/_cluster/reroute?retry_failed=true] to retry, [unassigned_info[[reason=ALLOCATION_FAILED], "
            "at[2024-05-01T10:15:02.117Z], failed_attempts[5], delayed=false]]",
            namespace="logging",
            pod="elasticsearch-es-master-0",
            container="elasticsearch",
        ),
        ["cluster_reroute_retry_failed"],
    ),
    (
        "elasticsearch-ilm-error-step",
        None,
        None,
        ecs_event(
            "[2024-05-01T10:30:00,001][ERROR][o.e.x.i.IndexLifecycleRunner] [es-master-0] policy [logs] for index "
            '[.ds-logs-app-default-2024.05.01-000042] failed on step [{"phase":"hot","action":"rollover",'
            '"name":"attempt-rollover"}]. Moving to ERROR step',
            namespace="logging",
            pod="elasticsearch-es-master-0",
            container="elasticsearch",
        ),
        ["ilm_retry index=.ds-logs-app-default-2024.05.01-000042"],
    ),
    (
        "logstash-output-unreachable",
        None,
        None,
        ecs_event(
            "[2024-05-01T10:40:12,532][ERROR][logstash.outputs.elasticsearch][main][3f1e9c] Attempted to send a bulk "
            "request but there are no living connections in the pool (perhaps Elasticsearch is unreachable or down?) "
            '{:message=>"No Available connections", :exception=>LogStash::Outputs::ElasticSearch::HttpClient::Pool::'
            "NoConnectionAvailableError, :will_retry_in_seconds=>64}",
            namespace="logging",
            pod="logstash-7c9f5d8b6d-abcde",
            container="logstash",
        ),
        ["kubectl rollout restart deployment/logstash -n logging"],
    ),
    (
        "kafka-consumer-lag-scale",
        None,
        None,
        ecs_event(
            "[2024-05-01T11:02:45,210][WARN ][logstash.inputs.kafka][main][kafka-in] Kafka consumer lag for group "
            "[logstash-indexer] on topic [app-logs] is 184223 records (threshold 50000)",
            namespace="logging",
            pod="logstash-indexer-6d5c8f9b7-m2k7z",
            container="logstash",
        ),
        ["kubectl scale deployment/logstash-indexer -n logging --replicas=3"],
    ),
]


@pytest.fixture(scope="module")
def catalogue():
    return load_playbooks()


def test_every_shipped_playbook_has_a_realistic_case(catalogue) -> None:
    assert {c[0] for c in CASES} == set(catalogue.playbooks)


@pytest.mark.parametrize(("name", "pattern", "category", "event", "expected"), CASES, ids=[c[0] for c in CASES])
def test_shipped_playbook_renders_from_an_ecs_event(catalogue, name, pattern, category, event, expected) -> None:
    message = event["message"]
    found = [pb.name for pb in catalogue.find(pattern, category, message)]
    assert name in found

    rendered = catalogue.get(name).render(context_from_event(event), message=message)

    assert [c["command"] for c in rendered.commands] == expected
    for command in rendered.commands:
        assert set(command) >= {"type", "command", "description", "safe", "critical"}
        assert "{" not in command["command"] and "{" not in command["description"]
    assert "{" not in rendered.description

    # every command fits the default policy's shapes once the namespace is allowlisted (and
    # Elasticsearch actions opted in); a hidden index (data stream backing .ds-*) never does
    namespaces = {v for k, v in rendered.values.items() if k in ("namespace", "service_namespace")}
    policy = ExecutionPolicy(kubectl_namespaces=tuple(namespaces), elasticsearch_actions=tuple(ES_ACTIONS))
    for command in rendered.commands:
        verdict = evaluate(command, policy)
        if "index=." in command["command"]:
            assert not verdict.allowed and "hidden index" in verdict.reason
        else:
            assert verdict.allowed, verdict.reason


def test_pattern_name_ranks_before_message_match(catalogue) -> None:
    message = "Back-off restarting failed container=api pod=api-7d9c8b6f5-x2kzq_payments(8f1c) Connection refused"
    names = [pb.name for pb in catalogue.find("Connection Refused", "network", message)]
    assert names[0] == "connection-refused-restart-target"
    assert "pod-crashloopbackoff-restart" in names[1:]


def test_policy_decides_the_stored_safe_flag(catalogue) -> None:
    event = CASES[2][3]
    pb = catalogue.get("out-of-memory-restart")
    allowed = pb.render(context_from_event(event), policy=ExecutionPolicy(kubectl_namespaces=("shop",)))
    refused = pb.render(context_from_event(event), policy=ExecutionPolicy(kubectl_namespaces=("payments",)))
    assert allowed.commands[0]["safe"] is True
    assert refused.commands[0]["safe"] is False


def test_manual_steps_are_text_not_commands(catalogue) -> None:
    rendered = catalogue.get("out-of-memory-restart").render(
        {"namespace": "shop", "deployment": "orders-api", "container": "orders-api"}
    )
    assert len(rendered.commands) == 1
    assert "Manual steps:" in rendered.description
    assert "-c orders-api --limits=memory" in rendered.manual_steps[0]


def test_missing_placeholder_fails_clearly(catalogue) -> None:
    pb = catalogue.get("pod-crashloopbackoff-restart")
    with pytest.raises(MissingPlaceholder) as err:
        pb.render({"namespace": "payments"}, message="CrashLoopBackOff: container exited with code 1")
    assert err.value.missing == ["deployment"]
    assert "deployment" in str(err.value)


def test_missing_placeholder_with_drop_and_nothing_left_still_fails(catalogue) -> None:
    with pytest.raises(MissingPlaceholder):
        catalogue.get("elasticsearch-read-only-index").render({}, message="flood-stage watermark", on_missing="drop")


def test_drop_mode_marks_the_dropped_command(tmp_path: Path) -> None:
    (tmp_path / "two.json").write_text(
        json.dumps(
            {
                "name": "restart-and-reroute",
                "description": "Restart {deployment} and retry shard allocation",
                "solution_type": "restart",
                "match": "two-step",
                "commands": [
                    {"type": "kubectl", "command": "kubectl rollout restart deployment/{deployment} -n {namespace}"},
                    {"type": "elasticsearch", "command": "cluster_reroute_retry_failed", "safe": True},
                ],
            }
        )
    )
    pb = load_playbooks(tmp_path).get("restart-and-reroute")
    rendered = pb.render({"namespace": "logging"}, on_missing="drop")
    assert [c["command"] for c in rendered.commands] == ["cluster_reroute_retry_failed"]
    assert rendered.dropped[0].missing == ["deployment"]
    assert "Not rendered" in rendered.description
    assert "{" not in rendered.commands[0]["command"]


@pytest.mark.parametrize(
    "pod",
    [
        "api; rm -rf /",
        "api -n kube-system",
        "api --kubeconfig=/tmp/evil",
        "$(curl evil.sh)",
        "API",
        "api\nkubectl delete ns prod",
        "-api",
        "a" * 254,
    ],
)
def test_injection_through_a_placeholder_value_is_refused(catalogue, pod: str) -> None:
    pb = catalogue.get("pod-crashloopbackoff-restart")
    with pytest.raises(UnsafePlaceholderValue) as err:
        pb.render({"namespace": "payments", "deployment": pod, "pod": "api-7d9c8b6f5-x2kzq"})
    assert err.value.name == "deployment"


def test_injection_through_the_message_is_refused(catalogue) -> None:
    message = "index [logs-app,.security] blocked by: [FORBIDDEN/12/index read-only / allow delete (api)];"
    with pytest.raises(UnsafePlaceholderValue):
        catalogue.get("elasticsearch-read-only-index").render({}, message=message)


def test_message_that_cannot_fill_a_value_never_half_fills(catalogue) -> None:
    # pod=... with a shell payload does not match the extractor, and the context has no deployment
    message = "CrashLoopBackOff: back-off restarting failed container=api pod=x;rm -rf /_payments(1)"
    with pytest.raises(MissingPlaceholder):
        catalogue.get("pod-crashloopbackoff-restart").render({"namespace": "payments"}, message=message)


def test_user_dir_adds_overrides_and_disables(tmp_path: Path) -> None:
    (tmp_path / "10-override.json").write_text(
        json.dumps(
            {
                "name": "out-of-memory-restart",
                "description": "Delete the OOM-killed pod {pod}",
                "solution_type": "restart",
                "pattern_names": ["Out of Memory"],
                "commands": [{"type": "kubectl", "command": "kubectl delete pod {pod} -n {namespace}", "safe": True}],
            }
        )
    )
    (tmp_path / "20-more.json").write_text(
        json.dumps(
            [
                {"name": "kafka-consumer-lag-scale", "enabled": False},
                {
                    "name": "redis-restart",
                    "description": "Restart redis",
                    "solution_type": "restart",
                    "error_categories": ["cache"],
                    "commands": [
                        {"type": "kubectl", "command": "kubectl rollout restart statefulset/redis -n {namespace}"}
                    ],
                },
            ]
        )
    )
    shipped = load_playbooks()
    catalogue = load_playbooks(tmp_path)

    assert len(catalogue) == len(shipped) + 1 - 1
    assert catalogue.get("kafka-consumer-lag-scale") is None
    assert catalogue.get("redis-restart") is not None
    oom = catalogue.get("out-of-memory-restart")
    assert oom.source.endswith("10-override.json")
    rendered = oom.render({"namespace": "shop", "pod": "orders-api-5f7b9c6d4-q8w2n"})
    assert rendered.commands[0]["command"] == "kubectl delete pod orders-api-5f7b9c6d4-q8w2n -n shop"
    assert [pb.name for pb in catalogue.find(None, "cache", "READONLY You can't write against a read only replica")] == [
        "redis-restart"
    ]


def test_invalid_user_playbook_names_its_file(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text(
        json.dumps({"name": "x", "description": "d", "solution_type": "t", "match": "(unclosed", "commands": []})
    )
    with pytest.raises(PlaybookError, match="broken.json"):
        load_playbooks(tmp_path)


def test_context_from_event_derives_deployment_from_the_pod_name() -> None:
    event = ecs_event("boom", namespace="shop", pod="orders-api-5f7b9c6d4-q8w2n", container="orders-api")
    event["kubernetes"].pop("labels")
    assert context_from_event(event) == {
        "namespace": "shop",
        "pod": "orders-api-5f7b9c6d4-q8w2n",
        "container": "orders-api",
        "deployment": "orders-api",
        "node": "worker-3",
    }


def test_context_from_event_reads_flattened_keys() -> None:
    event = {"kubernetes.namespace": "logging", "kubernetes.deployment.name": "logstash"}
    assert context_from_event(event) == {"namespace": "logging", "deployment": "logstash"}


def test_ilm_error_step_as_elasticsearch_logs_it_renders_the_retry():
    """Elasticsearch logs both 'failed on step' and 'on an error step due to ...'."""
    from elk_resolver.actions.playbooks import load_playbooks

    message = (
        "policy [logs-app] for index [.ds-logs-app-2024.05.01-0001] on an error step due to "
        "[java.lang.IllegalArgumentException: setting [index.lifecycle.rollover_alias] for index "
        "[.ds-logs-app-2024.05.01-0001] is empty or not defined]"
    )
    (playbook,) = load_playbooks().find(None, "illegal_argument_exception", message)
    rendered = playbook.render({"namespace": "elk-stack"}, message=message)
    assert [c["command"] for c in rendered.commands] == ["ilm_retry index=.ds-logs-app-2024.05.01-0001"]


def test_a_target_named_by_the_message_in_another_namespace_is_refused(catalogue) -> None:
    """Issue 10: a line from namespace sandbox naming payments-api rendered a restart in payments.
    The message may name a target only inside the event's own namespace; the event's own
    workload (the sender) is not the subject either, so nothing renders."""
    from elk_resolver.actions.playbooks import ForeignTarget

    event = ecs_event(
        "could not connect to server: Connection refused (payments-api.payments.svc:8080)",
        namespace="sandbox",
        pod="toy-5f7b9c6d4-q8w2n",
        container="toy",
    )
    with pytest.raises(ForeignTarget, match="outside the event's namespace"):
        catalogue.get("connection-refused-restart-target").render(context_from_event(event), message=event["message"])
    crash = ecs_event(
        "kubelet CrashLoopBackOff: back-off 5m0s restarting failed container=api pod=api-7d9c8b6f5-x2kzq_payments(8f1c)",
        namespace="monitoring",
        pod="event-exporter-6b8d9f7c5-p4t2v",
        container="event-exporter",
    )
    with pytest.raises(ForeignTarget):
        catalogue.get("pod-crashloopbackoff-restart").render(context_from_event(crash), message=crash["message"])
