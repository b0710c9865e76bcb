"""``elk-resolver kubernetes ...``: what an operator applies to run the service in Kubernetes."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from elk_resolver.settings import Settings

RBAC_HELP = """\
Prints, for every namespace in ELK_RESOLVER_KUBECTL_NAMESPACES, a Role granting exactly what the
policy's kubectl verbs (ELK_RESOLVER_KUBECTL_VERBS) need there and a RoleBinding to the execute
stage's service account. Nothing cluster-wide, no '*', no secrets. Apply it with
  elk-resolver kubernetes rbac | kubectl apply -f -
and run it again whenever the policy changes (deploy/kubernetes keeps a copy for its example)."""


def add_commands(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's own type
    kube = sub.add_parser("kubernetes", help="Kubernetes deployment helpers (RBAC from the policy)")
    actions = kube.add_subparsers(dest="action", required=True, metavar="ACTION")
    rbac = actions.add_parser("rbac", help="Role + RoleBinding per allowlisted namespace, from the policy",
                              description=RBAC_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    rbac.add_argument("--service-account", default="elk-resolver-execute",
                      help="the execute stage's service account (default elk-resolver-execute)")
    rbac.add_argument("--service-namespace", default="elk-resolver",
                      help="the namespace the service runs in (default elk-resolver)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from elk_resolver.actions.kubernetes.rbac import RbacError, manifests, to_yaml
    from elk_resolver.actions.policy import ExecutionPolicy

    policy = ExecutionPolicy.from_settings(settings)
    try:
        docs = manifests(policy, service_account=args.service_account, service_namespace=args.service_namespace)
    except RbacError as exc:
        from elk_resolver.cli.common import CliError

        raise CliError(str(exc)) from None
    print(f"# elk-resolver kubernetes rbac: namespaces {','.join(policy.kubectl_namespaces)}; "
          f"kubectl verbs {','.join(policy.kubectl_verbs)}")
    print(to_yaml(docs), end="")
    return 0
