"""Pod names resolved to their owning workload the way Kubernetes names pods, and the one
object a command touches (elk_resolver/actions/targets.py)."""

from __future__ import annotations

import random

import pytest

from elk_resolver.actions.targets import owner_of_pod, subject_key, target_of_command, workload_of
from tests.support.incident import rs_pod


@pytest.mark.parametrize(
    ("pod", "owner"),
    [
        ("checkout-7d9c8b6f5-x2kzq", ("deployment", "checkout")),
        ("checkout-bcdfghjklm-zxvbn", ("deployment", "checkout")),  # a hash with no digit at all
        ("payments-api-5f7b9c6d4-q8w2n", ("deployment", "payments-api")),
        ("web-0", ("statefulset", "web")),
        ("kafka-broker-12", ("statefulset", "kafka-broker")),
        ("db-migrate-x7k2p", ("job", "db-migrate")),
        ("nightly-report-29012345-b7x4k", ("cronjob", "nightly-report")),
        ("standalone", None),
        ("Bad_Name-7d9c8b6f5-x2kzq", None),
    ],
)
def test_pod_names_resolve_to_their_owner(pod, owner) -> None:
    found = owner_of_pod(pod)
    assert (None if found is None else (found.kind, found.name)) == owner


def test_random_replicaset_pod_names_all_resolve_to_their_deployment() -> None:
    rng = random.Random(7)
    pods = [rs_pod("checkout", rng) for _ in range(2000)]
    assert {(w.kind, w.name) for w in map(owner_of_pod, pods)} == {("deployment", "checkout")}
    assert {subject_key({"namespace": "shop", "pod": p}) for p in pods} == {("shop", "deployment/checkout")}


def test_the_deployment_field_wins_and_invalid_names_bind_nothing() -> None:
    assert workload_of({"deployment": "api", "pod": "other-7d9c8b6f5-x2kzq"}).name == "api"
    assert workload_of({"deployment": "api -n kube-system"}) is None


@pytest.mark.parametrize(
    ("command", "key", "problem"),
    [
        ("kubectl rollout restart deployment/api -n payments", "k8s:payments/deployment/api", ""),
        ("kubectl scale deploy api --replicas=3 --namespace=payments", "k8s:payments/deployment/api", ""),
        ("kubectl delete pods -l app=api -n payments", None, "acts on many objects"),
        ("kubectl rollout restart deployment -n payments", None, "no object"),
        ("kubectl rollout restart deployment a b -n payments", None, "names 2 objects"),
        ("kubectl rollout restart deployment/api", None, "no namespace"),
    ],
)
def test_a_command_names_exactly_one_object(command, key, problem) -> None:
    target, _, why = target_of_command({"type": "kubectl", "command": command})
    assert (target.key if target else None) == key and problem in why


def test_flags_are_read_as_the_policy_reads_them():
    """One flag parser: the object bound is the object the policy judged (``-nshop`` names the
    namespace; ``-lapp=x`` is a selector, not an unknown flag to skip)."""
    from elk_resolver.actions.targets import target_of_command

    target, _, problem = target_of_command({"type": "kubectl", "command": "kubectl rollout restart deployment/api -nshop"})
    assert problem == "" and (target.namespace, target.name) == ("shop", "api")
    for flag in ("-lapp=x", "--selector=app=x", "-A", "--force"):
        target, _, problem = target_of_command(
            {"type": "kubectl", "command": f"kubectl rollout restart deployment/api -n shop {flag}"})
        assert target is None and "many objects" in problem, flag


def test_kinds_and_names_are_judged_as_the_policy_judges_them():
    from elk_resolver.actions.targets import target_of_command

    target, _, problem = target_of_command(
        {"type": "kubectl", "command": "kubectl rollout restart deployment.apps/api -n shop"})
    assert problem == "" and (target.kind, target.name) == ("deployment", "api")
    target, _, problem = target_of_command({"type": "kubectl", "command": "kubectl rollout restart deploy/a..b -n shop"})
    assert target is None and "DNS-1123" in problem
