"""``elk-resolver kafka ...``: what a Kafka administrator applies so each stage may do its job
on the broker and nothing more."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from elk_resolver.settings import Settings

ACLS_HELP = """\
Prints the ACLs each stage's principal needs (read its input topic and group, write its
outputs, describe the service's topics), and those of the operator's CLI, from the topic and
group names in the settings: as kafka-acls.sh commands (--format commands) or as Strimzi
KafkaUser resources (--format strimzi, the default). With ELK_RESOLVER_MANAGE_TOPICS on, the
stages may also create the service's topics again; turn it off and run `elk-resolver topics`
as the operator to grant them no Create. Run it again whenever topic or group names change:
  elk-resolver kafka acls --cluster my-cluster | kubectl apply -n kafka -f -"""


def add_commands(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's own type
    kafka = sub.add_parser("kafka", help="Kafka helpers (the ACLs each stage needs)")
    actions = kafka.add_subparsers(dest="action", required=True, metavar="ACTION")
    acls = actions.add_parser("acls", help="ACLs per stage principal: kafka-acls commands or Strimzi KafkaUsers",
                              description=ACLS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    acls.add_argument("--format", choices=["strimzi", "commands"], default="strimzi")
    acls.add_argument("--user-prefix", default="elk-resolver-",
                      help="principal (and KafkaUser) names are PREFIX + stage (default elk-resolver-)")
    acls.add_argument("--cluster", default="my-cluster", help="Strimzi: the Kafka cluster (strimzi.io/cluster label)")
    acls.add_argument("--namespace", default=None, help="Strimzi: the KafkaUsers' namespace (default: none set)")
    acls.add_argument("--authentication", choices=["scram-sha-512", "tls", "tls-external"], default=None,
                      help="Strimzi: how the users authenticate (default: from the Kafka security settings)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from elk_resolver.kafka import acls

    if args.format == "commands":
        print("# elk-resolver kafka acls: one principal per stage, and the operator's CLI")
        print("\n".join(acls.kafka_acls_commands(settings, user_prefix=args.user_prefix)))
        return 0
    authentication = args.authentication or acls.strimzi_authentication(settings)
    docs = acls.strimzi_users(settings, user_prefix=args.user_prefix, cluster=args.cluster,
                              namespace=args.namespace, authentication=authentication)
    print(f"# elk-resolver kafka acls: KafkaUsers for {', '.join(acls.PRINCIPALS)} (cluster {args.cluster})")
    print(acls.to_yaml(docs), end="")
    return 0
