"""`elk-resolver kubernetes rbac`: exactly what the policy allows, in the allowlisted namespaces only."""

from __future__ import annotations

import pytest
import yaml

from elk_resolver.actions.kubernetes.rbac import RbacError, manifests
from elk_resolver.actions.policy import ExecutionPolicy
from elk_resolver.cli.main import main
from elk_resolver.settings import make_settings
from tests.support.kubernetes import validate_manifest


def rbac_for(monkeypatch, capsys, **env: str) -> list[dict]:
    for name in [n for n in __import__("os").environ if n.startswith("ELK_RESOLVER_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(f"ELK_RESOLVER_{name.upper()}", value)
    assert main(["kubernetes", "rbac"]) == 0
    return [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]


def granted(docs: list[dict]) -> set[tuple[str, str, str, str]]:
    """(namespace, group, resource, verb) for every permission the Roles give."""
    return {
        (d["metadata"]["namespace"], group, resource, verb)
        for d in docs if d["kind"] == "Role"
        for rule in d["rules"] for group in rule["apiGroups"] for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_rbac_grants_nothing_wide_no_secrets_and_only_allowlisted_namespaces(monkeypatch, capsys):
    docs = rbac_for(monkeypatch, capsys, kubectl_namespaces="shop,payments")
    assert {d["kind"] for d in docs} == {"Role", "RoleBinding"}
    assert {d["metadata"]["namespace"] for d in docs} == {"shop", "payments"}
    for ns, group, resource, verb in granted(docs):
        assert "*" not in (group, resource, verb)
        assert resource.split("/")[0] not in ("secrets", "configmaps", "serviceaccounts", "roles", "rolebindings")
        assert verb not in ("create", "escalate", "bind", "impersonate", "deletecollection", "watch")
    for d in docs:
        if d["kind"] == "RoleBinding":
            assert d["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                    "name": "elk-resolver-remediation"}  # never a ClusterRole
            assert d["subjects"] == [{"kind": "ServiceAccount", "name": "elk-resolver-execute",
                                      "namespace": "elk-resolver"}]
        validate_manifest(d)


def test_default_policy_grants_exactly_what_its_verbs_need(monkeypatch, capsys):
    docs = rbac_for(monkeypatch, capsys, kubectl_namespaces="shop")
    apps = {(r, v) for _, g, r, v in granted(docs) if g == "apps"}
    core = {(r, v) for _, g, r, v in granted(docs) if g == ""}
    # delete pod -> delete pods, and nothing else on pods
    assert core == {("pods", "delete")}
    # rollout restart / undo -> get + patch the workload
    for kind in ("deployments", "statefulsets", "daemonsets"):
        assert {(kind, "get"), (kind, "patch")} <= apps
    # scale -> the scale subresource
    assert {("deployments/scale", "patch"), ("statefulsets/scale", "patch")} <= apps
    # rollout undo reads the history it rolls back to
    assert ("replicasets", "list") in apps and ("controllerrevisions", "list") in apps
    assert not {v for r, v in apps if r.endswith("s") and v in ("delete", "create")}


def test_dropping_a_verb_from_the_policy_drops_its_grant(monkeypatch, capsys):
    docs = rbac_for(monkeypatch, capsys, kubectl_namespaces="shop", kubectl_verbs="rollout restart")
    assert granted(docs) == {("shop", "apps", k, v) for k in ("deployments", "statefulsets", "daemonsets")
                             for v in ("get", "patch")}
    docs = rbac_for(monkeypatch, capsys, kubectl_namespaces="shop", kubectl_verbs="delete pod")
    assert granted(docs) == {("shop", "", "pods", "delete")}


def test_a_verb_without_a_mapping_is_refused_not_granted_widely():
    policy = ExecutionPolicy(kubectl_namespaces=("shop",), kubectl_verbs=("rollout restart", "annotate"))
    with pytest.raises(RbacError, match="annotate"):
        manifests(policy)


def test_no_allowlisted_namespace_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.delenv("ELK_RESOLVER_KUBECTL_NAMESPACES", raising=False)
    assert main(["kubernetes", "rbac"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ELK_RESOLVER_KUBECTL_NAMESPACES" in err[0]


def test_rbac_reads_the_policy_the_service_runs_with():
    settings = make_settings(kubectl_namespaces=["a", "b"], kubectl_verbs=["scale"])
    docs = manifests(ExecutionPolicy.from_settings(settings))
    assert [d["metadata"]["namespace"] for d in docs if d["kind"] == "Role"] == ["a", "b"]


def test_kinds_per_verb_from_the_policy_narrow_the_grant(monkeypatch, capsys):
    docs = rbac_for(monkeypatch, capsys, kubectl_namespaces="shop", kubectl_verbs="scale,rollout restart",
                    kubectl_kinds='{"scale": ["deployment"], "rollout restart": ["deploy", "pod"]}')
    resources = {r for _, _, r, _ in granted(docs)}
    # scale: deployments only; restart: deployments (a pod cannot be rolled out, so never granted)
    assert resources == {"deployments", "deployments/scale"}
