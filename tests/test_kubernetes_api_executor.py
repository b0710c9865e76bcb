"""The Kubernetes API executor (ELK_RESOLVER_KUBERNETES_EXECUTOR=api): lightkube against a local
HTTP server that speaks the API calls. The policy decides exactly as for kubectl; every call
names one object."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from elk_resolver.actions.executors import run_commands
from elk_resolver.actions.policy import ExecutionPolicy
from elk_resolver.settings import make_settings
from tests.support.kube_api_stub import TOKEN, KubeApiStub


@pytest.fixture
async def api(tmp_path):
    async with KubeApiStub() as stub:
        stub.kubeconfig = stub.write_kubeconfig(tmp_path)
        yield stub


def api_policy(api, **overrides) -> ExecutionPolicy:
    settings = make_settings(kubernetes_executor="api", kubectl_kubeconfig=str(api.kubeconfig),
                             kubectl_context="stub", kubectl_namespaces=["payments"], **overrides)
    return ExecutionPolicy.from_settings(settings)


def k(line: str) -> dict:
    return {"type": "kubectl", "command": line}


async def run(api, line: str, **overrides):
    [result] = await run_commands([k(line)], api_policy(api, **overrides), dry_run=False)
    return result


async def test_restart_patches_the_pod_template_annotation_of_the_one_named_deployment(api):
    api.add_deployment("payments", "api")
    api.add_deployment("payments", "billing")
    before = datetime.now(UTC).replace(microsecond=0)
    result = await run(api, "kubectl rollout restart deployment/api -n payments")
    assert result.status == "success", result.output
    [write] = api.writes()
    assert (write.method, write.path) == ("PATCH", "/apis/apps/v1/namespaces/payments/deployments/api")
    assert write.content_type.startswith("application/strategic-merge-patch+json")
    stamp = write.body["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
    assert write.body == {"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": stamp}}}}}
    assert datetime.fromisoformat(stamp.replace("Z", "+00:00")) >= before
    assert write.authorization == f"Bearer {TOKEN}"  # the configured context's identity
    assert "restartedAt" not in str(api.objects[("deployments", "payments", "billing")])


async def test_scale_patches_the_scale_subresource(api):
    api.add_deployment("payments", "api", replicas=2)
    result = await run(api, "kubectl scale deployment/api -n payments --replicas=4")
    assert result.status == "success", result.output
    [write] = api.writes()
    assert (write.method, write.path) == ("PATCH", "/apis/apps/v1/namespaces/payments/deployments/api/scale")
    assert write.body["spec"] == {"replicas": 4} and write.body["metadata"]["resourceVersion"]
    assert api.objects[("deployments", "payments", "api")]["spec"]["replicas"] == 4


async def test_scale_through_the_api_stays_within_the_bounds_of_the_current_count(api):
    api.add_deployment("payments", "api", replicas=2)
    result = await run(api, "kubectl scale deployment/api -n payments --replicas=9")
    assert result.status == "failed" and "moves 7 replicas from the current 2" in result.output
    assert api.writes() == []


async def test_scale_with_current_replicas_checks_first_and_changes_nothing_when_it_differs(api):
    api.add_deployment("payments", "api", replicas=3)
    result = await run(api, "kubectl scale deployment/api -n payments --current-replicas=2 --replicas=4")
    assert result.status == "failed" and "expected 2 replicas" in result.output
    assert api.writes() == []
    result = await run(api, "kubectl scale deployment/api -n payments --current-replicas=3 --replicas=4")
    assert result.status == "success", result.output
    [write] = api.writes()
    assert write.body["metadata"]["resourceVersion"]  # the write fails if the scale moved in between


async def test_delete_pod_deletes_one_named_pod(api):
    api.add_pod("payments", "api-7d9f8b6c5d-x2x4q")
    api.add_pod("payments", "api-7d9f8b6c5d-zzq5r")
    result = await run(api, "kubectl delete pod api-7d9f8b6c5d-x2x4q -n payments --wait=false")
    assert result.status == "success", result.output
    [write] = api.writes()
    assert (write.method, write.path) == ("DELETE", "/api/v1/namespaces/payments/pods/api-7d9f8b6c5d-x2x4q")
    assert ("pods", "payments", "api-7d9f8b6c5d-zzq5r") in api.objects


async def test_rollout_undo_restores_the_previous_revisions_template(api):
    deployment = api.add_deployment("payments", "api", revision=3, image="app:3")
    api.add_replicaset(deployment, revision=1, image="app:1")
    api.add_replicaset(deployment, revision=2, image="app:2")
    api.add_replicaset(deployment, revision=3, image="app:3")
    result = await run(api, "kubectl rollout undo deployment/api -n payments")
    assert result.status == "success", result.output
    assert "revision 2" in result.output
    [write] = api.writes()
    assert write.content_type.startswith("application/json-patch+json")
    template = api.objects[("deployments", "payments", "api")]["spec"]["template"]
    assert template["spec"]["containers"][0]["image"] == "app:2"
    assert "pod-template-hash" not in template["metadata"]["labels"]


@pytest.mark.parametrize("line", [
    "kubectl rollout restart deployment/api -n shop",          # namespace not allowlisted
    "kubectl rollout restart deployment/api",                  # no namespace
    "kubectl get secrets -n payments",                         # verb not allowlisted
    "kubectl delete deployment/api -n payments",               # delete is for pods only
    "kubectl rollout restart deployment/api -n payments --context=prod",  # identity flag
])
async def test_what_the_policy_refuses_makes_no_api_call(api, line):
    api.add_deployment("payments", "api")
    result = await run(api, line)
    assert result.refused and result.status == "failed"
    assert api.requests == []


@pytest.mark.parametrize("line", [
    "kubectl rollout restart deployment -n payments",              # a kind without a name: every deployment
    "kubectl delete pods -l app=api -n payments",                   # a selector: every matching pod
    "kubectl rollout restart deployment/api deployment/billing -n payments",  # two objects
])
async def test_a_command_that_names_no_single_object_makes_no_api_call(api, line):
    api.add_deployment("payments", "api")
    result = await run(api, line)
    assert result.status == "failed"
    assert api.requests == [], result.output


async def test_dry_run_makes_no_api_call(api):
    api.add_deployment("payments", "api")
    [result] = await run_commands([k("kubectl rollout restart deployment/api -n payments")], api_policy(api),
                                  dry_run=True)
    assert result.dry_run and result.status == "success"
    assert api.requests == []


async def test_api_refusals_are_failures_with_the_status_code(api):
    result = await run(api, "kubectl rollout restart deployment/missing -n payments")
    assert result.status == "failed" and result.exit_code == 404 and "not found" in result.output
    api.add_deployment("payments", "api")
    api.forbidden_namespaces.add("payments")  # the RBAC does not grant it
    result = await run(api, "kubectl rollout restart deployment/api -n payments")
    assert result.status == "failed" and result.exit_code == 403 and "forbidden" in result.output


async def test_a_silent_api_server_is_a_timeout(api):
    api.add_deployment("payments", "api")
    api.hang = True
    result = await run(api, "kubectl rollout restart deployment/api -n payments", command_timeout_s=0.5)
    assert result.status == "timeout"


async def test_no_configured_identity_and_no_service_account_makes_no_call(api, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig))  # found lying around: never used
    policy = ExecutionPolicy.from_settings(make_settings(kubernetes_executor="api", kubectl_namespaces=["payments"]))
    [result] = await run_commands([k("kubectl rollout restart deployment/api -n payments")], policy, dry_run=False)
    assert result.status == "failed" and "service account" in result.output
    assert api.requests == []


async def test_rollout_undo_to_a_named_revision(api):
    deployment = api.add_deployment("payments", "api", revision=3, image="app:3")
    for revision in (1, 2, 3):
        api.add_replicaset(deployment, revision=revision, image=f"app:{revision}")
    result = await run(api, "kubectl rollout undo deployment/api -n payments --to-revision=1",
                       kubectl_undo_to_revision=True)
    assert result.status == "success", result.output
    assert api.objects[("deployments", "payments", "api")]["spec"]["template"]["spec"]["containers"][0]["image"] == "app:1"


async def test_rollout_undo_of_a_statefulset_needs_kubectl_and_changes_nothing(api):
    api.add_deployment("payments", "db", kind="statefulsets")
    result = await run(api, "kubectl rollout undo statefulset/db -n payments")
    assert result.status == "failed" and "kubectl executor" in result.output
    assert api.requests == []


async def test_a_context_alone_reads_the_kubeconfig_kubectl_would(api, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig))
    api.add_deployment("payments", "api")
    policy = ExecutionPolicy.from_settings(make_settings(kubernetes_executor="api", kubectl_context="stub",
                                                         kubectl_namespaces=["payments"]))
    [result] = await run_commands([k("kubectl rollout restart deployment/api -n payments")], policy, dry_run=False)
    assert result.status == "success", result.output
    assert len(api.writes()) == 1
