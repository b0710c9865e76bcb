"""deploy/kubernetes: every overlay renders (kubectl kustomize, offline) into manifests that are
valid for the current Kubernetes schemas and run the service the way it is meant to run."""

from __future__ import annotations

import pytest
import yaml

from elk_resolver.actions.kubernetes.rbac import manifests
from elk_resolver.actions.policy import ExecutionPolicy
from elk_resolver.cli.main import STAGE_CHOICES
from elk_resolver.settings import make_settings
from tests.support.kubernetes import KUBERNETES_DIR, OVERLAYS, kustomize, validate_manifest

OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}  # CRDs: not in the Kubernetes schemas


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> list[dict]:
    return kustomize(request.param)


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def test_there_are_overlays_for_production_and_a_minimal_install():
    assert {"production", "minimal"} <= set(OVERLAYS)


def test_every_rendered_manifest_validates_against_the_kubernetes_schemas(rendered):
    for doc in rendered:
        if doc["kind"] not in OPERATOR_KINDS:
            validate_manifest(doc)


def test_the_secret_template_validates():
    docs = [d for d in yaml.safe_load_all((KUBERNETES_DIR / "secret.example.yaml").read_text()) if d]
    assert {d["metadata"]["name"] for d in docs} == {"elk-resolver-secrets", "elk-resolver-migration"}
    for doc in docs:
        validate_manifest(doc)


def test_one_deployment_per_stage_with_probes_resources_and_a_locked_down_pod(rendered):
    deployments = {d["metadata"]["name"]: d for d in by_kind(rendered, "Deployment")}
    assert set(deployments) == {f"elk-resolver-{s}" for s in STAGE_CHOICES}
    for stage in STAGE_CHOICES:
        spec = deployments[f"elk-resolver-{stage}"]["spec"]["template"]["spec"]
        [container] = spec["containers"]
        assert container["args"] == ["run", "--stage", stage]  # `elk-resolver run` selects stages so
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert set(container["resources"]) == {"requests", "limits"}
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        [config] = [s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s]
        [secret] = [s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s]
        assert config.startswith("elk-resolver-settings-")  # hashed: a settings change rolls the stages
        assert secret == "elk-resolver-secrets"
        annotations = deployments[f"elk-resolver-{stage}"]["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
        # only the execute stage acts on Kubernetes, so only its pods carry a token
        executes = stage == "execute"
        assert (spec["serviceAccountName"] == "elk-resolver-execute") is executes
        assert spec["automountServiceAccountToken"] is executes
    assert deployments["elk-resolver-monitor"]["spec"]["replicas"] == 1


def test_pdb_per_stage_network_policy_and_migration_job(rendered):
    pdbs = {tuple(sorted(d["spec"]["selector"]["matchLabels"].items())) for d in by_kind(rendered, "PodDisruptionBudget")}
    assert pdbs == {(("app.kubernetes.io/component", s), ("app.kubernetes.io/name", "elk-resolver"))
                    for s in STAGE_CHOICES}
    [policy] = by_kind(rendered, "NetworkPolicy")
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}
    assert {53, 9092, 5432, 9200, 443} <= ports  # DNS, Kafka, PostgreSQL, Elasticsearch, API/notifications
    [job] = by_kind(rendered, "Job")
    pod = job["spec"]["template"]["spec"]
    assert [c["args"] for c in pod["initContainers"] + pod["containers"]] == [["migrate"], ["topics"]]
    # the schema owner's DSN comes from its own Secret, which no stage mounts
    env = pod["initContainers"][0]["env"][0]
    assert env["valueFrom"]["secretKeyRef"]["name"] == "elk-resolver-migration"
    for d in by_kind(rendered, "Deployment"):
        assert "elk-resolver-migration" not in yaml.safe_dump(d)


def test_production_scrapes_with_a_service_monitor_and_binds_the_rbac_its_policy_prints():
    docs = kustomize("production")
    [monitor] = by_kind(docs, "ServiceMonitor")
    [service] = by_kind(docs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert by_kind(docs, "PrometheusRule")

    # rbac.yaml is what `elk-resolver kubernetes rbac` prints for the overlay's own settings
    [config] = by_kind(docs, "ConfigMap")
    overrides = {k.removeprefix("ELK_RESOLVER_").lower(): v for k, v in config["data"].items()
                 if k.removeprefix("ELK_RESOLVER_").lower() in ("kubectl_namespaces", "kubectl_verbs")}
    policy = ExecutionPolicy.from_settings(make_settings(**overrides))
    assert policy.kubectl_namespaces == ("shop", "payments")
    expected = manifests(policy)
    shipped = [d for d in docs if d["kind"] in ("Role", "RoleBinding")]
    key = lambda d: (d["kind"], d["metadata"]["namespace"])  # noqa: E731
    assert sorted(shipped, key=key) == sorted(expected, key=key), (
        "deploy/kubernetes/overlays/production/rbac.yaml is stale: regenerate it with "
        "`elk-resolver kubernetes rbac` (see the overlay's kustomization.yaml)"
    )
