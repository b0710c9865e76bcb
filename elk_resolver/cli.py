"""``elk-resolver``: the command line.

Every command answers bad arguments, an unreachable broker or database, or a missing
migration with one clear line and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence

import asyncpg
from pydantic import ValidationError

from elk_resolver.embedded import EmbeddedError
from elk_resolver.migrate import MigrationError, migrate
from elk_resolver.settings import Settings, make_settings
from elk_resolver.stack import ensure_database, services

log = logging.getLogger("elk_resolver")


class CliError(Exception):
    """A failure the user can act on; printed as one line."""


def _print_services(svc, settings: Settings) -> None:
    kafka_note = " (embedded Tansu, memory only)" if svc.embedded_kafka else ""
    pg_note = f" (embedded, data in {settings.state_dir / 'postgres'})" if svc.embedded_postgres else ""
    print(f"Kafka bootstrap servers: {svc.kafka_bootstrap_servers}{kafka_note}")
    print(f"  Logstash writes to topic {settings.topic_raw} there (codec => json)")
    print(f"Database URL: {svc.database_url}{pg_note}")


# --- commands ---------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    with services(settings.model_copy(update={"kafka_bootstrap_servers": "unused:0"})) as svc:

        async def run() -> list:
            if svc.embedded_postgres:
                await ensure_database(svc.database_url)
            return await migrate(svc.database_url)

        applied = asyncio.run(run())
    if applied:
        for m in applied:
            print(f"applied {m.version:04d}_{m.name}")
    else:
        print("database is up to date")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "migrate": cmd_migrate,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="elk-resolver",
        description=(
            "ELK Auto Resolver: consumes Logstash error events from Kafka, classifies and dedupes "
            "them into PostgreSQL, finds solutions and runs them under a safety policy. With no "
            "ELK_RESOLVER_KAFKA_BOOTSTRAP_SERVERS or ELK_RESOLVER_DATABASE_URL configured it starts "
            "an embedded broker and database of its own."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser("migrate", help="apply pending database migrations (safe to run twice, or concurrently)")
    return parser


def _run(handler: Callable[[argparse.Namespace, Settings], int], args: argparse.Namespace) -> int:
    try:
        settings = make_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise CliError(f"invalid setting ELK_RESOLVER_{field.upper()}: {first['msg']}") from None
    return handler(args, settings)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return _run(COMMANDS[args.command], args)
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        print(f"elk-resolver: {exc}", file=sys.stderr)
        return 2
    except MigrationError as exc:
        print(f"elk-resolver: {exc}", file=sys.stderr)
        return 3
    except EmbeddedError as exc:
        print(f"elk-resolver: embedded service failed: {exc}", file=sys.stderr)
        return 4
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"elk-resolver: cannot reach a service: {exc}", file=sys.stderr)
        return 5


if __name__ == "__main__":
    sys.exit(main())
