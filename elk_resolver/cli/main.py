"""``elk-resolver``: the command line.

Every command answers bad arguments, an unreachable broker or database, or a missing
migration with one clear line and a non-zero exit status, never a traceback.

Exit status: 0 done; 1 refused (e.g. an approval that is no longer pending); 2 bad arguments
or settings; 3 the database needs ``migrate``; 4 an embedded service failed; 5 Kafka,
PostgreSQL or Elasticsearch cannot be reached; 6 a backfill or replay stopped part-way (run
it again to resume); 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Only the standard library and argument parsing at the top: `elk-resolver --help` (and every
# command's --help) imports none of the service, the console, the handlers, asyncpg or pydantic.
# Each command imports what it uses when it runs.
from elk_resolver.cli import console as console_command
from elk_resolver.cli import errors as errors_cli
from elk_resolver.cli import kafka as kafka_command
from elk_resolver.cli import kubernetes as kubernetes_command
from elk_resolver.cli.common import CliError, PartialError, Unreachable, parse_time, records, table, where

if TYPE_CHECKING:
    import asyncpg

    from elk_resolver.settings import Settings

STAGE_CHOICES = ("ingest", "analyze", "execute", "monitor")
RUNNING_FILE = "running.json"  # written by `up`: where its services are, for other commands


# --- small helpers --------------------------------------------------------------------------


def _running_file(settings: Settings) -> Path:
    return settings.state_dir / RUNNING_FILE


def _read_running(settings: Settings) -> dict[str, Any] | None:
    """The services of an `up` running from this state directory, if it is alive."""
    try:
        info = json.loads(_running_file(settings).read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[Settings]:
    """Settings with a database: the configured one; else that of a running ``up``; else the
    embedded PostgreSQL of the state directory, started (and migrated) for this command."""
    from elk_resolver.kafka.stack import ensure_database, services
    from elk_resolver.store.migrate import migrate

    if settings.database_url:
        yield settings
        return
    running = _read_running(settings)
    if running:
        yield settings.model_copy(update={
            "database_url": running["database_url"],
            "kafka_bootstrap_servers": settings.kafka_bootstrap_servers or running.get("kafka_bootstrap_servers"),
        })
        return
    with services(settings.model_copy(update={"kafka_bootstrap_servers": "unused:0"})) as svc:

        async def bring_up() -> None:
            await ensure_database(svc.database_url)
            await migrate(svc.database_url)

        asyncio.run(bring_up())
        yield settings.model_copy(update={"database_url": svc.database_url})


@contextlib.asynccontextmanager
async def open_pool(settings: Settings, *, max_size: int = 4):
    """A pool on a database that is reachable and fully migrated, or one clear error."""
    from elk_resolver.store.db import create_pool
    from elk_resolver.store.migrate import check

    try:
        pool = await create_pool(settings.database_url, min_size=1, max_size=max_size, timeout=10)
    except (OSError, TimeoutError) as exc:
        raise Unreachable(f"cannot reach PostgreSQL at {where(settings.database_url)}: {_unreachable(exc)}") from None
    try:
        async with pool.acquire() as conn:
            await check(conn)
        yield pool
    finally:
        await pool.close()


def _require_kafka(settings: Settings, command: str) -> None:
    if not settings.kafka_bootstrap_servers:
        raise CliError(
            f"{command} needs Kafka: set ELK_RESOLVER_KAFKA_BOOTSTRAP_SERVERS (or run it while `elk-resolver up` runs)"
        )


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    import logging

    logger = logging.getLogger(logger_name)
    was, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = was


def _print_services(svc, settings: Settings) -> None:
    kafka_note = " (embedded Tansu, memory only)" if svc.embedded_kafka else ""
    pg_note = f" (embedded, data in {settings.state_dir / 'postgres'})" if svc.embedded_postgres else ""
    print(f"Kafka bootstrap servers: {svc.kafka_bootstrap_servers}{kafka_note}")
    print(f"  Logstash writes to topic {settings.topic_raw} there (codec => json)")
    print(f"Database URL: {svc.database_url}{pg_note}")


# --- commands: running the service ----------------------------------------------------------


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from elk_resolver.kafka.stack import ensure_database, services
    from elk_resolver.store.migrate import migrate

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


def _serve(settings: Settings, stages: Sequence[str], *, banner: Callable[[Any], None] | None = None) -> int:
    from elk_resolver.service import run_service
    from streams.app import HttpPortUnavailable

    def started(app) -> None:
        if banner is not None:
            banner(app)
        print(f"HTTP: {app.http_url}  (/health /ready /metrics /asyncapi)", flush=True)
        print(f"stages running: {', '.join(app.stages)}. Ctrl-C stops.", flush=True)

    try:
        return asyncio.run(run_service(settings, stages, on_started=started))
    except HttpPortUnavailable as exc:
        raise CliError(str(exc)) from None


def _refuse_unsafe_live(settings: Settings, stages: Sequence[str]) -> None:
    """Live mode with kubectl needs to know which cluster it acts on; say so in one line."""
    from elk_resolver.actions.policy import live_kubectl_problem

    problem = live_kubectl_problem(settings) if "execute" in stages else None
    if problem:
        raise CliError(problem)


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from elk_resolver.kafka.stack import prepare, services

    _refuse_unsafe_live(settings, STAGE_CHOICES)
    with services(settings) as svc:
        asyncio.run(prepare(settings, svc))
        _print_services(svc, settings)
        live = settings.model_copy(update={
            "kafka_bootstrap_servers": svc.kafka_bootstrap_servers, "database_url": svc.database_url,
        })
        running = _running_file(settings)
        running.parent.mkdir(parents=True, exist_ok=True)
        running.write_text(json.dumps({
            "pid": os.getpid(), "kafka_bootstrap_servers": svc.kafka_bootstrap_servers,
            "database_url": svc.database_url,
        }))
        try:
            return _serve(live, STAGE_CHOICES)
        finally:
            running.unlink(missing_ok=True)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    missing = [name for name, value in (("ELK_RESOLVER_KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers),
                                        ("ELK_RESOLVER_DATABASE_URL", settings.database_url)) if not value]
    if missing:
        raise CliError(f"run needs {' and '.join(missing)} (`elk-resolver up` starts embedded ones instead)")
    _refuse_unsafe_live(settings, args.stage or STAGE_CHOICES)

    async def probe() -> None:
        async with open_pool(settings, max_size=1):
            pass

    asyncio.run(probe())  # the topics are created by the service as it starts
    stages = list(dict.fromkeys(args.stage or STAGE_CHOICES))
    return _serve(settings, stages)


def _password(env: str, role: str) -> str:
    value = os.environ.get(env)
    if value:
        return value
    if sys.stdin.isatty():
        import getpass

        value = getpass.getpass(f"password for {role}: ")
        if value:
            return value
    raise CliError(f"set {env} (the password for {role}), or run this on a terminal to be asked")


def cmd_roles(args: argparse.Namespace, settings: Settings) -> int:
    from elk_resolver.store.roles import apply_roles

    readonly = _password("ELK_RESOLVER_READONLY_PASSWORD", "elk_readonly")
    app = _password("ELK_RESOLVER_APP_PASSWORD", "elk_resolver_user")
    with database(settings) as s:
        asyncio.run(apply_roles(s.database_url, readonly_password=readonly, app_password=app))
    print("roles elk_readonly (SELECT) and elk_resolver_user (INSERT, SELECT, UPDATE) are in place")
    return 0


def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    _require_kafka(settings, "topics")
    from elk_resolver.kafka.security import client_options
    from elk_resolver.kafka.topics import ensure_topics

    created = asyncio.run(ensure_topics(client_options(settings), settings.topics(),
                                        partitions=settings.topic_partitions,
                                        replication_factor=settings.topic_replication_factor))
    for name in settings.topics():
        state = f"created with {settings.topic_partitions} partitions" if name in created else "exists"
        print(f"{name}: {state}")
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    import shutil
    import tempfile

    from elk_resolver.cli import logs
    from elk_resolver.kafka.stack import prepare, services

    workdir = Path(tempfile.mkdtemp(prefix="elk-resolver-demo-"))
    demo = settings.model_copy(update={
        "kafka_bootstrap_servers": None, "database_url": None, "state_dir": workdir, "http_port": 0,
        **DEMO_SETTINGS,
        "log_level": "DEBUG" if args.verbose else "WARNING",
    })
    logs.configure(json_lines=demo.log_json, level=demo.log_level)
    try:
        with services(demo) as svc:
            asyncio.run(prepare(demo, svc))
            live = demo.model_copy(update={
                "kafka_bootstrap_servers": svc.kafka_bootstrap_servers, "database_url": svc.database_url,
            })
            print(f"demo: embedded Kafka at {svc.kafka_bootstrap_servers}, PostgreSQL at {svc.database_url} "
                  f"(temporary), execution mode dry-run", flush=True)
            return asyncio.run(_demo(live, timeout=args.timeout, serve=args.serve))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


DEMO_SETTINGS: dict[str, Any] = {
    "execution_mode": "dry-run", "monitor_interval_s": 5.0,
    # the namespaces of the shipped events, so dry-run shows what would run there
    "kubectl_namespaces": ["production", "elk-stack"],
    # and the Elasticsearch actions (opt-in): dry-run shows them, nothing can run
    "elasticsearch_actions": ["clear_read_only_block", "cluster_reroute_retry_failed", "ilm_retry"],
}


def demo_events() -> list[dict[str, Any]]:
    from importlib import resources

    text = resources.files("elk_resolver.cli").joinpath("demo", "events.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def publish_demo_events(app: Any, settings: Settings, *, timeout: float) -> float:
    """Publish the shipped events (timed just before now) through a started app's stages and
    wait until every stage has committed them; returns the seconds it took."""
    import orjson
    from aiokafka import AIOKafkaProducer

    from elk_resolver.kafka.offsets import group_lag
    from elk_resolver.kafka.security import client_options

    events = demo_events()
    deadline = time.monotonic() + 30
    while not all(getattr(st, "ready", False) for st in app.stages.values()):
        if time.monotonic() > deadline:
            raise CliError("the stages did not get their partitions within 30s")
        await asyncio.sleep(0.1)
    producer = AIOKafkaProducer(**client_options(settings), acks=1, linger_ms=5)
    await producer.start()
    started = time.monotonic()
    try:
        now = datetime.now(UTC)
        futures = []
        for i, event in enumerate(events):
            event["@timestamp"] = (now - timedelta(seconds=len(events) - i)).isoformat(timespec="milliseconds")
            service = event.get("service", {}).get("name") if isinstance(event.get("service"), dict) else None
            key = (service or event.get("service.name") or event.get("host") or "").encode() or None
            futures.append(await producer.send(settings.topic_raw, orjson.dumps(event), key=key))
        for future in futures:
            await future
    finally:
        await producer.stop()
    print(f"demo: published {len(events)} Logstash events to {settings.topic_raw}", flush=True)
    groups = [(settings.group_ingest, settings.topic_raw), (settings.group_analyze, settings.topic_analysis),
              (settings.group_execute, settings.topic_execution)]
    deadline = time.monotonic() + timeout
    while True:
        # in pipeline order: when ingest has committed everything, its output is on the next topic
        lags = [sum((await group_lag(client_options(settings), g, t)).values()) for g, t in groups]
        if not any(lags):
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise PartialError(f"not processed within {timeout:.0f}s (records behind per stage: {lags})")
        await asyncio.sleep(0.5)


async def _demo(settings: Settings, *, timeout: float, serve: bool = False) -> int:
    import signal

    from elk_resolver.service import create_app

    app = create_app(settings)
    await app.start()
    try:
        took = await publish_demo_events(app, settings, timeout=timeout)
        monitor = app.stages.get("monitor")
        if monitor is not None:
            await monitor.check_once()
        print(f"demo: processed by ingest, analyze and execute in {took:.1f}s\n", flush=True)
        async with app.pool.acquire() as conn:
            summary = await conn.fetchrow("""
                SELECT (SELECT count(*) FROM error_logs) AS distinct_errors,
                       (SELECT coalesce(sum(occurrence_count), 0) FROM error_logs) AS occurrences,
                       (SELECT count(*) FROM solutions) AS solutions,
                       (SELECT count(*) FROM decision_log) AS decisions""")
            decisions = await conn.fetch(
                "SELECT decision, count(*) AS n FROM decision_log GROUP BY decision ORDER BY n DESC")
            errors = await conn.fetch("""
                SELECT el.error_type, el.severity, el.source_system, el.occurrence_count,
                       left(el.error_message, 70) AS message, s.solution_type, s.playbook_name
                FROM error_logs el
                LEFT JOIN LATERAL (SELECT solution_type, playbook_name FROM solutions
                                   WHERE error_hash = el.hash_signature ORDER BY id LIMIT 1) s ON TRUE
                ORDER BY el.occurrence_count DESC, el.id""")
        print(f"{summary['occurrences']} error events became {summary['distinct_errors']} distinct errors; "
              f"{summary['solutions']} solutions; {summary['decisions']} execution decisions "
              f"({', '.join(f'{r[0]} {r[1]}' for r in decisions) or 'none'})\n")
        print(table(["error_type", "severity", "source", "count", "message", "solution", "playbook"],
                    [tuple(r.values()) for r in errors]))
        print()
        await _print_report(app.pool, as_json=False)
        if serve:
            print(f"demo: the web console is at {app.http_url}/ (reading is open on loopback); Ctrl-C stops",
                  flush=True)
            stop = asyncio.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                asyncio.get_running_loop().add_signal_handler(sig, stop.set)
            await stop.wait()
    finally:
        await app.stop()
    return 0


# --- commands: reading and maintaining the database -----------------------------------------


async def _print_report(pool: asyncpg.Pool, *, as_json: bool) -> None:
    from elk_resolver.operations import controls, people, reading

    found = await reading.report(pool)
    if as_json:
        print(json.dumps({name: records(rows) for name, _, rows in found}, indent=2, default=str))
        return
    for _, title, rows in found:
        print(f"== {title} ==")
        print(table(list(rows[0].keys()), [tuple(r.values()) for r in rows]) if rows else "(no rows)")
        print()


def _with_pool(settings: Settings, work: Callable[[asyncpg.Pool, Settings], Any]) -> int:
    with database(settings) as s:

        async def run() -> int:
            async with open_pool(s) as pool:
                result = await work(pool, s)
            return 0 if result is None else int(result)

        return asyncio.run(run())


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    if args.what == "effect":
        return _with_pool(settings, lambda pool, s: _print_effect(pool, s, scope=args.scope, as_json=args.json))
    return _with_pool(settings, lambda pool, _s: _print_report(pool, as_json=args.json))


async def _print_effect(pool: asyncpg.Pool, settings: Settings, *, scope: str | None, as_json: bool) -> None:
    """Each action's effect: resolved with and without it, the uplift and its 95 % interval."""
    from elk_resolver.operations import effect

    rows = await effect.report(pool, settings, scope)
    if as_json:
        print(json.dumps(records(rows), indent=2, default=str))
        return
    headers = ["SCOPE", "KEY", "COMPARISON", "ACTED: RESOLVED", "MEDIAN", "LEFT ALONE: RESOLVED", "MEDIAN",
               "UPLIFT PTS [95% CI]", "IN GRACE", "VERDICT"]  # fmt: skip
    body = [(r["scope"], r["key"], r["comparison"], r["acted"], r["acted_median"], r["left"], r["left_median"],
             r["uplift_text"], r["in_grace"], r["verdict"]) for r in rows]  # fmt: skip
    print(table(headers, body) if body else "(no judged cases yet)")
    print(f"\n(a verdict needs {settings.effect_min_cases} cases on each side; 'trial' compares a random share"
          " left alone on purpose, 'left alone' every case nothing ran on, which may differ from the acted ones)")


def _list_rows(args: argparse.Namespace, settings: Settings, query: str, headers: list[str], row, empty: str) -> int:
    """Print one named query's rows as a table, or as JSON with --json."""
    from elk_resolver.store.db import queries

    async def work(pool: asyncpg.Pool, _s: Settings) -> None:
        async with pool.acquire() as conn:
            rows = await conn.fetch(queries()[query])
        if args.json:
            print(json.dumps(records(rows), indent=2, default=str))
        elif not rows:
            print(empty)
        else:
            print(table(headers, [row(r) for r in rows]))

    return _with_pool(settings, work)


def age(seconds: float | None) -> str:
    """``42s``, ``12m``, ``3h``, ``2d`` (how long ago)."""
    if seconds is None:
        return "never"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from elk_resolver.operations import reading

    async def work(pool: asyncpg.Pool, s: Settings) -> None:
        rows = await reading.system_status(pool, s)
        if args.json:
            print(json.dumps(records(rows), indent=2, default=str))
            return
        if not rows:
            print("no component has been checked yet (the monitor stage records them)")
            return
        print(table(["component", "status", "age", "errors", "last_check", "last_error_at", "details"], [
            (r["component_name"], f"STALE (was {r['status']})" if r["stale"] else r["status"], age(r["age_s"]),
             r["error_count"], r["last_check"], r["last_error_at"], r["metadata"]) for r in rows]))
        stale = [r["component_name"] for r in rows if r["stale"]]
        if stale:
            print(f"\n{len(stale)} row(s) not checked for over {reading.stale_after_s(s):g}s (twice "
                  f"ELK_RESOLVER_MONITOR_INTERVAL_S): no monitor is running, or it cannot reach the database; "
                  "their status is what was last seen, not what is")

    return _with_pool(settings, work)


def cmd_solutions(args: argparse.Namespace, settings: Settings) -> int:
    return _list_rows(
        args, settings, "solutions_all",
        ["id", "error_hash", "error_type", "type", "source", "success", "runs", "last_success", "tripped_at",
         "description"],
        lambda r: (r["id"], r["error_hash"][:12], r["error_type"], r["solution_type"], r["source"],
                   f"{float(r['success_rate'] or 0):.2f} %" if r["execution_count"] else "never run",
                   r["execution_count"] or 0, r["last_success_at"], r["tripped_at"], r["solution_description"]),
        "no solutions yet",
    )  # fmt: skip


def cmd_maintain(args: argparse.Namespace, settings: Settings) -> int:
    from elk_resolver.store.maintain import maintain

    days = args.retention_days or settings.retention_days

    async def work(pool: asyncpg.Pool, _s: Settings) -> None:
        result = await maintain(pool, retention_days=days)
        print(f"retention {days} days (before {result.cutoff:%Y-%m-%d %H:%M:%S}), {result.seconds:.1f}s")
        print(table(["table", "rows deleted"], sorted(result.deleted.items())))
        dropped = ", ".join(result.dropped_partitions) or "none"
        print(f"error_occurrences partitions dropped: {dropped}")
        print("analyzed: error_logs, solutions, execution_history")

    return _with_pool(settings, work)


def cmd_patterns(args: argparse.Namespace, settings: Settings) -> int:
    from elk_resolver.operations import controls, people, reading

    async def work(pool: asyncpg.Pool, s: Settings) -> int:
        try:
            return await _patterns(args, s, pool)
        except people.Refused as exc:
            raise CliError(str(exc)) from None

    return _with_pool(settings, work)


def cmd_errors(args: argparse.Namespace, settings: Settings) -> int:
    return _with_pool(settings, lambda pool, s: errors_cli.main(args, pool, s))


def _fingerprint_fields(text: str) -> list[str] | None:
    try:
        return errors_cli.parse_fields(text)
    except ValueError as exc:
        raise CliError(str(exc)) from None


async def _print_alias(pool: asyncpg.Pool, tested: tuple[str, str]) -> None:
    """The alias ``patterns test`` found: which stored error the message would count on."""
    own, resolved = tested
    if own == resolved:
        print("alias:      none (the message counts on its own fingerprint)")
        return
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT id, fingerprint_template FROM error_logs WHERE hash_signature = $1", resolved)
        why = await conn.fetchval("SELECT reason FROM error_aliases WHERE from_hash = $1", own)
    target = f"error {row['id']} {row['fingerprint_template']!r}" if row else f"fingerprint {resolved}"
    print(f"alias:      counts on {target} ({errors_cli._why(why) if why else 'learned template'})")


async def _patterns(args: argparse.Namespace, s: Settings, pool: asyncpg.Pool) -> int:
    from elk_resolver.operations import controls, people, reading

    if args.action == "list":
        with _quiet("elk_resolver.classify"):  # shown in the table instead
            rows = await controls.list_patterns(pool)
        print(table(["id", "name", "regex", "category", "priority", "auto", "state"], [
            (r["id"], r["pattern_name"], r["pattern_regex"], r["error_category"], r["priority"],
             "yes" if r["auto_resolve"] else "no", r["state"].upper() if r["state"] == "invalid" else r["state"])
            for r in rows]))
        return 0
    person, _ = people.cli_person(s)
    if args.action == "add":
        fields = _fingerprint_fields(args.fingerprint_fields)
        with _quiet("elk_resolver.classify"):  # the refusal says it in one line
            new_id = await controls.add_pattern(pool, person, args.name, args.regex, args.category, args.priority,
                                                  args.auto_resolve, fingerprint_fields=fields)
        print(f"added pattern {new_id} ({args.name}); the ingest stage picks it up within {s.patterns_refresh_s:g}s")
        return 0
    if args.action == "fingerprint":
        fields = _fingerprint_fields(args.fields)
        name = await controls.set_pattern_fingerprint_fields(pool, args.id, fields, person)
        print(f"pattern {args.id} ({name}) fingerprints its errors from "
              f"{','.join(fields) if fields else 'the message template'}")
        return 0
    if args.action in ("disable", "enable"):
        name = await controls.set_pattern_enabled(pool, args.id, args.action == "enable", person)
        print(f"pattern {args.id} ({name}) {args.action}d")
        return 0
    result = await controls.test_message(pool, s, args.message, error_type=args.error_type,
                                           fingerprint=args.fingerprint)
    p = result.pattern
    if p is None:
        print("pattern:    none matched (error_type falls back to the ECS error.type, else 'unclassified')")
    else:
        print(f"pattern:    {p['id']} {p['name']!r} /{p['regex']}/ "
              f"(priority {p['priority']}, auto_resolve {'yes' if p['auto_resolve'] else 'no'})")
    print(f"error_type: {result.error_type}")
    print(f"message:    {result.message}")
    print(f"template:   {result.template}  ({result.fingerprint_version})")
    print(f"hash:       {result.own_hash}")
    await _print_alias(pool, (result.own_hash, result.hash))
    return 0


# --- commands: Kafka and Elasticsearch ------------------------------------------------------


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from elk_resolver.operations.progress import Progress
    from elk_resolver.operations.replay import replay

    if args.until is not None and args.until <= args.since:
        raise CliError("--until must be after --since")

    with database(settings) as s:
        _require_kafka(s, "replay")

        async def run() -> int:
            progress = Progress("replay")
            async with open_pool(s) as pool:
                result = await replay(s, pool, since=args.since, until=args.until, execute=args.execute,
                                      progress=progress)
            progress.close()
            ranges = ", ".join(f"p{p}:{a}-{b}" for p, (a, b) in sorted(result.ranges.items()))
            print(f"replayed {result.records} records of {s.topic_raw} ({ranges}) through group {result.group_id}")
            print(f"  {result.errors} error events, {result.new_occurrences} not counted before, "
                  f"{result.new_rows} new distinct errors, {result.skipped} not errors, {result.bad_records} bad, "
                  f"{result.db_rejected} refused by PostgreSQL")
            print(f"  {result.dead_lettered} dead-lettered to {s.topic_dlq} with their offsets, "
                  f"{result.already_dead_lettered} already there; {result.expired} older than the retention "
                  "(their months were dropped: not counted again)")
            mode = "remediation allowed (--execute)" if args.execute else "marked replay: no remediation"
            print(f"  {result.published} analysis events published, {mode}")
            return 0

        return asyncio.run(run())


def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    from elk_resolver.operations.backfill import BackfillError, backfill
    from elk_resolver.operations.progress import Progress

    if not settings.elasticsearch_url:
        raise CliError("backfill-es needs ELK_RESOLVER_ELASTICSEARCH_URL")
    if args.until is not None and args.until <= args.since:
        raise CliError("--until must be after --since")

    with database(settings) as s:
        _require_kafka(s, "backfill-es")

        async def run() -> int:
            progress = Progress("backfill")
            async with open_pool(s) as pool:
                try:
                    result = await backfill(s, pool, index=args.index, since=args.since, until=args.until,
                                            query=args.query, page_size=args.page_size, restart=args.restart,
                                            progress=progress, execute=args.execute)
                except BackfillError as exc:
                    progress.close()
                    raise PartialError(f"{exc}; run the same command again to resume") from None
            if result.already_complete:
                print("this backfill already completed (same index, since, until and query); --restart runs it again")
                return 0
            progress.close()
            resumed = " (resumed)" if result.resumed else ""
            print(f"published {result.published} documents from {args.index} to {s.topic_raw}{resumed} "
                  f"in {result.pages} pages; identity: the document's event.hash, else its _id; "
                  + ("remediation allowed (--execute)" if args.execute else "marked backfill: no remediation"))
            return 0

        return asyncio.run(run())


def cmd_approvals(args: argparse.Namespace, settings: Settings) -> int:
    from elk_resolver.cli import approvals as approvals_cli

    with database(settings) as s:

        async def run() -> int:
            async with open_pool(s) as pool:
                return await approvals_cli.main(args, s, pool=pool)

        return asyncio.run(run())


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "migrate": cmd_migrate,
    "up": cmd_up,
    "topics": cmd_topics,
    "roles": cmd_roles,
    "run": cmd_run,
    "demo": cmd_demo,
    "replay": cmd_replay,
    "backfill-es": cmd_backfill,
    "report": cmd_report,
    "status": cmd_status,
    "patterns": cmd_patterns,
    "errors": cmd_errors,
    "solutions": cmd_solutions,
    "maintain": cmd_maintain,
    "approvals": cmd_approvals,
    "kill-switch": cmd_approvals,
    "kubernetes": lambda args, settings: kubernetes_command.run(args, settings),
    "kafka": lambda args, settings: kafka_command.run(args, settings),
    "console": lambda args, settings: console_command.run(args, settings),
    "playbooks": cmd_approvals,
}


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line (and where to look), not the whole usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


MAINTAIN_HELP = """\
Delete data older than the retention (default ELK_RESOLVER_RETENTION_DAYS, 90 days as the design
document says), in batches of 1,000 rows, each its own short transaction with a 2 s lock_timeout,
in foreign-key order: decision_log; verifications and execution_history of old runs; decided
approvals, old execution requests and LLM cache rows; error_occurrences partitions whose whole
month is past the retention (dropped, not deleted); solutions that never ran, of errors last seen
before the retention; then error_logs last seen before the retention that no solution or run
refers to. Learned success rates survive: a solution that has run keeps its row, success_rate,
execution_count and success_count (the trigger counts on INSERT only), and its error's row.
Then ANALYZE error_logs, solutions, execution_history. The monitor stage runs this daily. Run it
as the schema owner: the application role has no DELETE or DROP."""


def build_parser() -> argparse.ArgumentParser:
    from elk_resolver.cli import approvals as approvals_cli

    parser = _Parser(
        prog="elk-resolver",
        description=(
            "ELK Auto Resolver: consumes Logstash error events from Kafka, classifies and dedupes "
            "them into PostgreSQL, finds solutions and runs them under a safety policy. With no "
            "ELK_RESOLVER_KAFKA_BOOTSTRAP_SERVERS or ELK_RESOLVER_DATABASE_URL configured it starts "
            "an embedded broker and database of its own."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Settings come from ELK_RESOLVER_* environment variables or .env. "
               "Exit status: 0 ok, 1 refused, 2 bad arguments/settings, 3 database needs migrate, "
               "4 embedded service failed, 5 service unreachable, 6 stopped part-way (run again to resume).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    sub.add_parser("migrate", help="apply pending database migrations (safe to run twice, or concurrently)")
    sub.add_parser("topics", help="create the topics with the configured partition count (idempotent)",
                   description="Creates every topic the service uses with ELK_RESOLVER_TOPIC_PARTITIONS "
                               "partitions. Create them before Logstash writes: brokers auto-create unknown "
                               "topics with their own default, and partitions cannot be added later without "
                               "moving keys.")
    sub.add_parser("roles", help="create the design document's roles (run as a superuser, after migrate)",
                   description="Creates or updates elk_readonly (SELECT) and elk_resolver_user (INSERT, SELECT, "
                               "UPDATE; no DELETE or DDL) with the document's grants. Passwords come from "
                               "ELK_RESOLVER_READONLY_PASSWORD and ELK_RESOLVER_APP_PASSWORD, or are asked for.")
    sub.add_parser("up", help="embedded Kafka and PostgreSQL plus every stage in one process; Ctrl-C stops all",
                   description="Start the embedded broker and database (for whatever is not configured), "
                               "migrate, create the topics, and run all stages with the HTTP endpoints. "
                               "Prints the broker address Logstash should write to, the database URL and "
                               "the HTTP URL.")
    run = sub.add_parser("run", help="run stages against the configured Kafka and PostgreSQL (production)",
                         description="The production entry point. Copies started with the same settings "
                                     "form one consumer group per stage and share the partitions.")
    run.add_argument("--stage", action="append", choices=STAGE_CHOICES,
                     help="a stage to run (repeat for several; default: all four)")
    demo = sub.add_parser("demo", help="embedded stack in dry-run: publish sample Logstash events, print the report",
                          description="Starts a throw-away embedded stack in dry-run mode, publishes the shipped "
                                      "Logstash events (ECS and legacy; Kubernetes, JVM, Elasticsearch and "
                                      "network failures, with repeats) through the real pipeline, waits until "
                                      "every stage has processed them, prints the report and exits.")
    demo.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for processing (default 120)")
    demo.add_argument("--serve", action="store_true",
                      help="keep the service and its web console running on the demo data until Ctrl-C")

    replay = sub.add_parser(
        "replay", help="re-read the raw topic from a time through a fresh consumer group",
        description="Re-reads the raw topic from --since (to --until, or to the end as it was when the "
                    "replay started) through a fresh consumer group. Idempotent: events already counted "
                    "change nothing. Analysis events are marked as replays, so nothing is remediated "
                    "unless --execute. Times: ISO-8601 (UTC unless a zone is given) or 2h / 7d / now-30m. "
                    "Kafka looks times up by when the broker received the record.")
    replay.add_argument("--since", type=parse_time, required=True, metavar="TIME")
    replay.add_argument("--until", type=parse_time, metavar="TIME")
    replay.add_argument("--execute", action="store_true", help="let the replayed errors be remediated")

    backfill = sub.add_parser(
        "backfill-es", help="publish error documents from Elasticsearch to the raw topic (resumable)",
        description="Reads documents from Elasticsearch (point in time + search_after, in pages) and "
                    "publishes them to the raw topic in Logstash's JSON shape with each document's _id "
                    "as its identity (event.hash), so nothing is counted twice. Interrupted? Run the same "
                    "command again: it resumes after the last page published.")
    backfill.add_argument("--index", required=True, metavar="PATTERN", help="index pattern, e.g. logs-*")
    backfill.add_argument("--since", type=parse_time, required=True, metavar="TIME")
    backfill.add_argument("--until", type=parse_time, metavar="TIME")
    backfill.add_argument("--query", metavar="KQL_OR_JSON",
                          help='KQL-style (log.level:error and service.name:api) or query DSL JSON')
    backfill.add_argument("--page-size", type=int, default=500)
    backfill.add_argument("--restart", action="store_true", help="forget the stored cursor and start over")
    backfill.add_argument("--execute", action="store_true",
                          help="let the backfilled errors be remediated (by default they are history: never acted on)")

    report = sub.add_parser("report", help="the design document's four report queries as tables; `report effect`:"
                                           " each action's effect against the cases left alone")
    report.add_argument("what", nargs="?", choices=["effect"], help="effect: did the fix help? (issue 25)")
    report.add_argument("--scope", choices=["solution", "playbook", "action", "error_type"],
                        help="with effect: one scope only (default: all)")
    report.add_argument("--json", action="store_true", help="JSON instead of tables")

    patterns = sub.add_parser("patterns", help="list, add, disable or test error patterns")
    actions = patterns.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=_Parser)
    actions.add_parser("list", help="every pattern in match order (priority, then id)")
    add = actions.add_parser("add", help="add a pattern (RE2 syntax: linear time, no backreferences)")
    add.add_argument("--name", required=True)
    add.add_argument("--regex", required=True)
    add.add_argument("--category", required=True, help="becomes error_type of matching errors")
    add.add_argument("--priority", type=int, default=5, help="1 = highest (default 5)")
    add.add_argument("--auto-resolve", action="store_true", help="allow automatic remediation")
    add.add_argument("--fingerprint-fields", default="",
                     help="fingerprint its errors from these fields (pattern,namespace,workload,capture:NAME...)")
    for verb in ("disable", "enable"):
        p = actions.add_parser(verb, help=f"{verb} a pattern by id (the row stays)")
        p.add_argument("id", type=int)
    test = actions.add_parser("test", help="which pattern a message matches, its template and hash")
    test.add_argument("message")
    test.add_argument("--error-type", help="the ECS error.type the event would carry")
    test.add_argument("--fingerprint", choices=["exact", "template"], help="default: the configured version")

    fp = actions.add_parser("fingerprint", help="fingerprint a pattern's errors from fields instead of the template")
    fp.add_argument("id", type=int)
    fp.add_argument("fields", help="comma-separated: pattern,namespace,workload,... or capture:NAME; '' = template")
    errors_cli.add_parser(sub, _Parser)

    solutions = sub.add_parser("solutions", help="solutions with their learned success rates")
    solutions.add_argument("action", choices=["list"], nargs="?", default="list")
    solutions.add_argument("--json", action="store_true")
    status = sub.add_parser("status", help="the system_status table (one row per component)")
    status.add_argument("--json", action="store_true")
    maintain = sub.add_parser("maintain", help="delete data past the retention in small batches, then ANALYZE",
                              description=MAINTAIN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    maintain.add_argument("--retention-days", type=int, metavar="N",
                          help="keep this many days (default ELK_RESOLVER_RETENTION_DAYS)")
    approvals_cli.add_commands(sub)
    kubernetes_command.add_commands(sub)
    kafka_command.add_commands(sub)
    console_command.add_commands(sub)
    for name in (*approvals_cli.COMMANDS, "kubernetes", "kafka", "console"):  # their parsers too answer bad arguments in one line
        choice = sub.choices[name]
        choice.__class__ = _Parser
        for action in choice._actions:  # noqa: SLF001 - argparse keeps nested parsers here
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                for nested in action.choices.values():
                    nested.__class__ = _Parser
    return parser


def _run(handler: Callable[[argparse.Namespace, Settings], int], args: argparse.Namespace) -> int:
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from elk_resolver.cli import logs
    from elk_resolver.settings import explain, make_settings

    try:
        settings = make_settings()
    except ValidationError as exc:
        raise CliError("\n".join(explain(exc))) from None
    except SettingsError as exc:  # a value pydantic-settings could not even decode
        raise CliError(f"invalid setting: {' '.join(str(exc).split())}") from None
    service = args.command in ("up", "run")
    level = "DEBUG" if args.verbose else (settings.log_level if service else "WARNING")
    logs.configure(json_lines=settings.log_json, level=level)
    if not service and not args.verbose:
        # one-shot commands end with one line that names the failure; aiokafka's own
        # connection errors before it would only repeat it
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    _CONTEXT["kafka"] = settings.kafka_bootstrap_servers
    return handler(args, settings)


_CONTEXT: dict[str, Any] = {}


def _unreachable(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:300]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # --help ends here, having imported nothing of the service
    import asyncpg
    from aiokafka.errors import KafkaError

    from elk_resolver.kafka.embedded import EmbeddedError, EmbeddedNotInstalled
    from elk_resolver.kafka.topics import TooFewPartitions
    from elk_resolver.store.migrate import MigrationError
    from streams.app import HttpPortUnavailable
    try:
        return _run(COMMANDS[args.command], args)
    except KeyboardInterrupt:
        print("elk-resolver: interrupted", file=sys.stderr)
        return 130
    except CliError as exc:
        for line in str(exc).splitlines():
            print(f"elk-resolver: {line}", file=sys.stderr)
        return 2
    except (HttpPortUnavailable, TooFewPartitions) as exc:
        print(f"elk-resolver: {exc}", file=sys.stderr)
        return 2
    except MigrationError as exc:
        print(f"elk-resolver: {exc}", file=sys.stderr)
        return 3
    except EmbeddedNotInstalled as exc:
        print(f"elk-resolver: {exc}", file=sys.stderr)
        return 4
    except EmbeddedError as exc:
        print(f"elk-resolver: embedded service failed: {exc}", file=sys.stderr)
        return 4
    except (asyncpg.InvalidCatalogNameError, asyncpg.InvalidPasswordError,
            asyncpg.InvalidAuthorizationSpecificationError) as exc:
        print(f"elk-resolver: cannot use the database: {_unreachable(exc)}", file=sys.stderr)
        return 5
    except Unreachable as exc:
        print(f"elk-resolver: {exc}", file=sys.stderr)
        return 5
    except KafkaError as exc:
        where = f" at {_CONTEXT['kafka']}" if _CONTEXT.get("kafka") else ""
        reason = "not reachable" if "bootstrap" in str(exc).lower() else _unreachable(exc)
        print(f"elk-resolver: cannot reach Kafka{where}: {reason}", file=sys.stderr)
        return 5
    except (OSError, TimeoutError, asyncpg.InterfaceError) as exc:
        print(f"elk-resolver: cannot reach a service: {_unreachable(exc)}", file=sys.stderr)
        return 5
    except asyncpg.UndefinedTableError as exc:
        print(f"elk-resolver: the database has no schema ({_unreachable(exc)}); run `elk-resolver migrate`",
              file=sys.stderr)
        return 3
    except asyncpg.PostgresError as exc:
        from elk_resolver.store.db import describe_db_failure, is_transient_db_error

        if is_transient_db_error(exc):  # read-only, full, shutting down...: later, not never
            print(f"elk-resolver: cannot use the database now: {describe_db_failure(exc)}", file=sys.stderr)
        else:
            print(f"elk-resolver: the database refused: {_unreachable(exc)}", file=sys.stderr)
        return 5
    except PartialError as exc:
        print(f"elk-resolver: {exc}", file=sys.stderr)
        return 6


if __name__ == "__main__":
    sys.exit(main())
