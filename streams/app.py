"""The app factory: one broker, one pool, the stages asked for, and the HTTP endpoints.

    app = create_app(settings, stages=("ingest", "monitor"))
    async with app:                # pool, migration check, HTTP, broker, stages
        ...                        # app.http_port is the bound port (settings.http_port 0 = any)

Order of start: the PostgreSQL pool (orjson codecs) and :func:`elk_resolver.store.migrate.check`
(refuse a database that is behind), the database watch's first check, then HTTP (``/health``
answers at once, ``/ready`` says 503 until every stage has its partitions), then the topics
(created, partition counts checked), the broker, each stage and the lag and topic watches.
Stop is the reverse: stages drain and commit first, then the broker and the pool close, HTTP
last. A start that fails part-way stops what it started, and leaves nothing running.

Endpoints: ``/health`` (the process is alive), ``/ready`` (every stage ready and the database
answers), ``/metrics`` (Prometheus text), ``/asyncapi`` (the AsyncAPI document of every topic
and event contract, JSON) and ``/asyncapi.html`` (the same, as a page), and whatever the
``http_extensions`` add on the same port: :mod:`elk_resolver.service` adds the web console
(its pages and the JSON API under ``/api/``), so the stages never import a face.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import asyncpg
from aiohttp import web
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from prometheus_client import REGISTRY, CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field

from elk_resolver import notify
from elk_resolver.events.contracts import AnalysisEvent, ApprovalEvent, ExecutionRequest, ExecutionResult
from elk_resolver.kafka.security import broker_options, client_options
from elk_resolver.settings import Settings
from elk_resolver.store import migrate
from elk_resolver.store.db import close_pool, create_pool, describe_db_failure, pool_options, queries
from streams.stage import Stage
from streams.watch import DatabaseWatch, LagWatch, TopicWatch

log = logging.getLogger("elk_resolver.app")

STAGES = ("ingest", "analyze", "execute", "monitor")
DB_PROBE_TIMEOUT_S = 2.0
METRICS_DB_WAIT_S = 0.5
"""A scrape waits this long for the database figures it asked for, then answers with the last
ones: /metrics answers at once whatever the database does."""

Builder = Callable[..., Any]
# adds routes to the HTTP app: ext(web_app, settings, pool=..., publish=..., asyncapi=...)
HttpExtension = Callable[..., None]


class HttpPortUnavailable(RuntimeError):
    """The HTTP port cannot be bound (another process holds it, or it is not this host's); the
    message names the port and the settings that choose it."""


def stage_builder(name: str) -> Builder:
    """``streams.<name>.build_<name>``, imported only when the stage is asked for."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; expected one of {', '.join(STAGES)}")
    return getattr(importlib.import_module(f"streams.{name}"), f"build_{name}")


def make_broker(settings: Settings) -> KafkaBroker:
    """The FastStream broker (aiokafka). No idempotence, no transactions: Tansu has neither,
    and every stage writes idempotently instead."""
    return KafkaBroker(
        **broker_options(settings),
        client_id="elk-resolver",
        acks=1,
        enable_idempotence=False,
        request_timeout_ms=15000,
        graceful_timeout=15.0,
        logger=logging.getLogger("elk_resolver.broker"),
        log_level=logging.DEBUG,  # "Received"/"Processed" per message: debug detail, not INFO
        description="ELK Auto Resolver: Logstash error events in, remediation results out",
    )


# --- the AsyncAPI document --------------------------------------------------------------------


class LogstashEvent(BaseModel):
    """One record on the raw topic, as Logstash's kafka output writes it with ``codec => json``
    (ECS nested or flat dotted keys, or legacy). Only ``message`` (or ``error.message`` /
    ``event.original``) is required; everything else is read when present."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    timestamp: str | None = Field(None, alias="@timestamp", description="event time, ISO-8601 UTC")
    message: str | None = Field(None, description="the log line; legacy events carry the stack trace here")
    log: dict[str, Any] | None = Field(None, description="ECS log.level: error, fatal, critical ...")
    error: dict[str, Any] | None = Field(None, description="ECS error.type, error.message, error.stack_trace")
    service: dict[str, Any] | None = Field(None, description="ECS service.name: the record key")
    host: dict[str, Any] | str | None = Field(None, description="ECS host.name, or the legacy host string")
    kubernetes: dict[str, Any] | None = Field(None, description="namespace, pod.name, container.name, deployment.name")
    event: dict[str, Any] | None = Field(
        None, description="event.hash: the event's identity and elasticsearch_id (fingerprint filter)"
    )
    level: str | None = Field(None, description="legacy free-form level")
    path: str | None = Field(None, description="legacy log file path")


class DeadLetterRecord(BaseModel):
    """A record the stage could not use: the original bytes (secrets masked) as the value, and
    headers ``x-dlq-reason``, ``x-dlq-detail``, ``x-original-topic``, ``x-original-partition``,
    ``x-original-offset``, ``x-original-timestamp``, ``x-dlq-stage``."""

    value: str = Field(description="the original record value")


def asyncapi_document(settings: Settings, *, version: str = "0.1.0") -> dict[str, Any]:
    """Every topic and contract, declared on a broker that never connects.

    The live broker cannot describe the stages: the ingest stage consumes with aiokafka
    directly and the others register their subscribers only when they start.
    """
    spec = KafkaBroker(
        **broker_options(settings),
        description="ELK Auto Resolver: Logstash error events in, remediation results out",
    )

    def declare(topic: str, model: type[BaseModel], *, consumer: str | None, producer: str | None, about: str) -> None:
        name = topic.replace(".", "_").replace("-", "_")
        if producer:
            spec.publisher(topic, title=f"to_{name}", schema=model, description=f"{producer}: {about}")
        if consumer:
            async def handler(event) -> None:  # noqa: ANN001
                return None

            # set here, not written in the signature: with postponed annotations the name
            # "model" would be looked up in the module and not found
            handler.__annotations__ = {"event": model, "return": None}

            spec.subscriber(topic, group_id=consumer, title=f"on_{name}", description=f"{consumer}: {about}")(handler)

    s = settings
    declare(s.topic_raw, LogstashEvent, consumer=s.group_ingest, producer="Logstash",
            about="error events as Logstash writes them; ingest classifies, fingerprints and dedupes them")
    declare(s.topic_analysis, AnalysisEvent, consumer=s.group_analyze, producer="ingest",
            about="one event per distinct error and object per batch, keyed by hash_signature; a pointer at what"
                  " ingest stored (analysis_triggers): the analysis stage loads the event from the database and"
                  " refuses a record that differs")
    declare(s.topic_execution, ExecutionRequest, consumer=s.group_execute, producer="analyze (and approvals)",
            about="a pointer at the request the analysis stage stored in planned_requests (ids and a digest);"
                  " the execute stage loads it and decides from the database, refusing a message that differs")
    declare(s.topic_results, ExecutionResult, consumer=None, producer="execute",
            about="every outcome, including runs that did not happen and later verification")
    declare(s.topic_approvals, ApprovalEvent, consumer=None, producer="execute",
            about="approvals created or decided")
    declare(s.topic_dlq, DeadLetterRecord, consumer=None, producer="ingest, analyze, execute",
            about="records a stage could not use, with the reason in headers")
    schema = AsyncAPI(spec, title="ELK Auto Resolver", version=version).to_specification()
    return schema.to_jsonable()


# --- consumer lag of the stages in this process -----------------------------------------------


def _consumer_of(stage: Any) -> Any:
    """The aiokafka consumer behind a stage, wherever the stage keeps it."""
    for attr in ("consumer", "_consumer"):
        consumer = getattr(stage, attr, None)
        if consumer is not None and hasattr(consumer, "highwater"):
            return consumer
    return None


async def consumer_lag(stage: Any) -> int | None:
    """Records behind on the partitions this stage holds: highwater - position (Tansu-safe)."""
    lag = getattr(stage, "lag", None)
    if callable(lag):
        value = lag()
        return await value if asyncio.iscoroutine(value) else value
    consumer = _consumer_of(stage)
    if consumer is None:
        return None
    total = 0
    try:
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            total += max(0, highwater - await consumer.position(tp))
    except Exception:  # noqa: BLE001 - a rebalance mid-scrape: report nothing rather than fail
        return None
    return total


# --- the app ----------------------------------------------------------------------------------


class App:
    def __init__(
        self,
        settings: Settings,
        stages: Sequence[str] = STAGES,
        *,
        builders: dict[str, Builder] | None = None,
        serve_http: bool = True,
        stage_options: dict[str, dict[str, Any]] | None = None,
        http_extensions: Sequence[HttpExtension] = (),
    ) -> None:
        if not settings.database_url or not settings.kafka_bootstrap_servers:
            raise ValueError("the app needs database_url and kafka_bootstrap_servers")
        self.settings = settings
        self.stage_names = list(dict.fromkeys(stages))
        for name in self.stage_names:
            if name not in STAGES and name not in (builders or {}):
                raise ValueError(f"unknown stage {name!r}; expected one of {', '.join(STAGES)}")
        self._builders = builders or {}
        self._stage_options = stage_options or {}
        self.serve_http = serve_http
        self._http_extensions = tuple(http_extensions)
        self.pool: asyncpg.Pool | None = None
        self.broker: KafkaBroker | None = None
        self.stages: dict[str, Any] = {}
        self.started_stages: list[Any] = []
        self.http_port: int | None = None
        self._runner: web.AppRunner | None = None
        self._registry = CollectorRegistry()
        self._lag = Gauge("elk_resolver_consumer_lag",
                          "records of the partitions this copy holds that its group has not committed "
                          "(log end - committed offset)", ["stage"], registry=self._registry)
        self._group_lag = Gauge("elk_resolver_group_lag",
                                "records of the stage's topic its group has not committed, every partition",
                                ["stage"], registry=self._registry)
        self._ready = Gauge("elk_resolver_stage_ready", "1 when the stage has its partitions", ["stage"],
                            registry=self._registry)
        self._executions = Gauge("elk_resolver_executions", "execution_history rows by status", ["status"],
                                 registry=self._registry)
        self._approvals = Gauge("elk_resolver_approvals_pending", "approvals waiting for a person",
                                registry=self._registry)
        self._approval_age = Gauge("elk_resolver_approval_oldest_pending_seconds",
                                   "age of the oldest approval still waiting (0 when none)", registry=self._registry)
        self._breakers = Gauge("elk_resolver_breakers_open", "solutions whose circuit breaker is open",
                               registry=self._registry)
        self._kill_switch = Gauge("elk_resolver_kill_switch", "1 while the kill switch (setting or database) is on",
                                  registry=self._registry)
        self._asyncapi: dict[str, Any] | None = None
        self.notifier: notify.Dispatcher | None = None
        self.topic_watch: TopicWatch | None = None
        self.lag_watches: dict[str, LagWatch] = {}
        self.database_watch: DatabaseWatch | None = None
        self._db_figures_at: float | None = None
        self._db_figures: asyncio.Task | None = None

    @property
    def http_url(self) -> str | None:
        if self.http_port is None:
            return None
        host = self.settings.http_host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - display only
        return f"http://{shown}:{self.http_port}"

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        self.pool = await create_pool(s.database_url, min_size=1, max_size=10, **pool_options(s))  # type: ignore[arg-type]
        try:
            async with self.pool.acquire() as conn:
                await migrate.check(conn)
            self.database_watch = DatabaseWatch(s, timeout_s=DB_PROBE_TIMEOUT_S)
            await self.database_watch.start()
            if self.serve_http:
                await self._start_http()
            await self._check_topics()
            self.broker = make_broker(s)
            for name in self.stage_names:
                build = self._builders.get(name) or stage_builder(name)
                self.stages[name] = build(s, pool=self.pool, broker=self.broker, **self._stage_options.get(name, {}))
            monitor = self.stages.get("monitor")
            if monitor is not None and hasattr(monitor, "stages"):
                monitor.stages = [st for n, st in self.stages.items() if n != "monitor"]
            await self.broker.start()
            # Each stage waits for its group to be joined; side by side, `up` is ready in the
            # time of one join instead of one per stage.
            # The monitor starts last, so its first check does not report the others as starting.
            consumers = {n: st for n, st in self.stages.items() if n != "monitor"}
            failures = [
                r
                for r in await asyncio.gather(*(self._start_stage(n, st) for n, st in consumers.items()),
                                              return_exceptions=True)
                if isinstance(r, BaseException)
            ]
            if failures:
                raise failures[0]
            await self._start_watches()
            if "monitor" in self.stages:
                await self._start_stage("monitor", self.stages["monitor"])
            self.notifier = notify.Dispatcher(s, self.pool)
            await self.notifier.start()
        except BaseException:
            await self.stop()
            raise

    async def _check_topics(self) -> None:
        """Create the topics (``manage_topics``) before any client of this process asks for
        them, and refuse to run on one with fewer partitions than configured unless
        ``allow_fewer_partitions``."""
        from elk_resolver.kafka.offsets import probe_consumer, start_or_close
        from elk_resolver.kafka.topics import TooFewPartitions, describe_topics, ensure_topics, too_few_partitions

        s = self.settings
        if s.manage_topics:
            await ensure_topics(client_options(s), s.topics(), partitions=s.topic_partitions,
                                replication_factor=s.topic_replication_factor)
        probe = probe_consumer(client_options(s))
        await start_or_close(probe)
        try:
            found = await describe_topics(probe._client, s.topics())  # noqa: SLF001
        finally:
            await probe.stop()
        problem = too_few_partitions({t: st.partitions for t, st in found.items()}, s.topic_partitions)
        if problem and not s.allow_fewer_partitions:
            raise TooFewPartitions(problem)
        if problem:
            log.warning("%s (running on it: ELK_RESOLVER_ALLOW_FEWER_PARTITIONS is on)", problem)

    async def _rewind(self, topic: str, partitions: set[int] | None, only: Any = None) -> None:
        """Every stage of this copy consuming ``topic`` (or just ``only``) reads those of its
        partitions (None: all) from their start: the log it had positions in is gone."""
        for name, stage in self.stages.items():
            consumed = self._consumed(name, stage)
            if consumed is None or consumed[0] != topic or (only is not None and stage is not only):
                continue
            rewind = getattr(stage, "rewind", None)
            if rewind is None:
                continue
            try:
                moved = await rewind(topic, partitions)
            except Exception as exc:  # noqa: BLE001 - a rebalance in between: the new owner starts afresh
                log.warning("stage %s could not rewind %s: %s", name, topic, exc, extra={"stage": name})
                continue
            if moved:
                log.info("stage %s reads %s from the start", name, ", ".join(f"{t.topic}[{t.partition}]" for t in moved),
                         extra={"stage": name})

    def _consumed(self, name: str, stage: Any) -> tuple[str, str] | None:
        """(topic, group) a stage consumes, for its lag."""
        s = self.settings
        if name == "ingest":
            return s.topic_raw, getattr(stage, "group_id", s.group_ingest)
        if name == "analyze":
            return s.topic_analysis, s.group_analyze
        if name == "execute":
            return s.topic_execution, s.group_execute
        return None

    async def _start_watches(self) -> None:
        self.topic_watch = TopicWatch(self.settings, rewind=self._rewind)
        await self.topic_watch.start()
        for name, stage in self.stages.items():
            consumed = self._consumed(name, stage)
            if consumed is None or not hasattr(stage, "assignment"):
                continue
            watch = LagWatch(self.settings, stage=name, topic=consumed[0], group_id=consumed[1],
                             assignment=lambda st=stage: st.assignment,
                             rewind=lambda topic, parts, st=stage: self._rewind(topic, parts, only=st))
            await watch.start()
            self.lag_watches[name] = watch
        monitor = self.stages.get("monitor")
        if monitor is not None:
            monitor.causes = self.causes

    def causes(self) -> dict[str, str]:
        """Why a stage is not ready, per stage (empty when all is well), for /ready and the monitor."""
        found: dict[str, str] = {}
        topic_cause = self.topic_watch.cause if self.topic_watch is not None else None
        for name, stage in self.stages.items():
            if name == "monitor":
                continue
            watch = self.lag_watches.get(name)
            if topic_cause:
                found[name] = topic_cause
            elif watch is not None and watch.stalled_for is not None:
                found[name] = f"no progress for {watch.stalled_for:.0f}s with {watch.lag} records behind"
            elif not getattr(stage, "ready", False):
                found[name] = "no partitions assigned"
        return found

    async def _start_stage(self, name: str, stage: Stage) -> None:
        await stage.start()
        self.started_stages.append(stage)
        log.info("stage %s started", name, extra={"stage": name})

    async def stop(self) -> None:
        for watch in [*self.lag_watches.values(), self.topic_watch, self.database_watch]:
            if watch is not None:
                await watch.stop()
        self.lag_watches = {}
        self.topic_watch = None
        self.database_watch = None
        figures, self._db_figures = self._db_figures, None
        if figures is not None and not figures.done():
            figures.cancel()
            await asyncio.gather(figures, return_exceptions=True)
        order = {name: i for i, name in enumerate(self.stages)}
        self.started_stages.sort(key=lambda st: order.get(st.name, 0))
        for stage in reversed(self.started_stages):
            try:
                await stage.stop()
            except Exception:  # noqa: BLE001 - keep stopping the others
                log.exception("stage %s did not stop cleanly", stage.name, extra={"stage": stage.name})
        self.started_stages.clear()
        if self.notifier is not None:
            await self.notifier.stop()
            self.notifier = None
        if self.broker is not None:
            with contextlib.suppress(Exception):
                await self.broker.stop()
            self.broker = None
        if self.pool is not None:
            await close_pool(self.pool, min(10.0, self.settings.shutdown_timeout_s / 4))
            self.pool = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> App:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- checks ----------------------------------------------------------------------------------
    def database_state(self) -> tuple[bool, str]:
        """What the database watch found last: (answers and takes writes, cause in words)."""
        watch = self.database_watch
        if watch is None:
            return False, "not checked yet"
        return watch.ok, watch.cause or "ok"

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """From what the watches found last, never waiting on a dependency: a probe gets its
        answer at once, with the age of each finding."""
        causes = self.causes()
        stages = {name: bool(getattr(st, "ready", False)) and name not in causes for name, st in self.stages.items()}
        started = len(self.started_stages) == len(self.stages) and bool(self.stages)
        db_ok, db_detail = self.database_state()
        ok = started and all(stages.values()) and db_ok
        body: dict[str, Any] = {"ready": ok, "stages": stages, "started": started, "database": db_detail}
        if causes:
            body["causes"] = causes
        if self.lag_watches:
            body["lag"] = {name: w.snapshot() for name, w in self.lag_watches.items()}
        checked = {}
        for name, watch in (("database", self.database_watch), ("topics", self.topic_watch),
                            *((f"lag.{n}", w) for n, w in self.lag_watches.items())):
            age = getattr(watch, "age_s", None) if watch is not None else None
            checked[name] = None if age is None else round(age, 1)
        body["checked_s_ago"] = checked
        return ok, body

    async def metrics_text(self) -> bytes:
        from streams import metrics as m  # the stages' counters live in the default registry

        for name, stage in self.stages.items():
            self._ready.labels(name).set(1 if getattr(stage, "ready", False) else 0)
            if name != "monitor":  # it consumes nothing
                for counter in (m.EVENTS_IN, m.EVENTS_SKIPPED, m.PUBLISHED):
                    counter.labels(name)  # every consuming stage shows, at 0 before its first event
                m.BATCH_SECONDS.labels(name)
                watch = self.lag_watches.get(name)
                lag = watch.lag if watch is not None else await consumer_lag(stage)
                if lag is not None:
                    self._lag.labels(name).set(lag)
                if watch is not None and watch.group_lag is not None:
                    self._group_lag.labels(name).set(watch.group_lag)
        if self.pool is not None and self.database_state()[0]:
            # read in a task of its own: the scrape waits a moment for it, then answers with
            # the last figures (a frozen database never holds a scrape)
            if self._db_figures is None or self._db_figures.done():
                self._db_figures = asyncio.create_task(self._read_db_figures(), name="metrics-db-figures")
            await asyncio.wait({self._db_figures}, timeout=METRICS_DB_WAIT_S)
        return generate_latest(REGISTRY) + generate_latest(self._registry)

    async def _read_db_figures(self) -> None:
        """The database's figures for /metrics. execution_history's GROUP BY reads the whole
        table: at most once per metrics_db_interval_s, not on every scrape; the alerting
        figures are cheap and current. A failure is logged once per cause and interval (the
        database watch says the rest)."""
        s = self.settings
        due = self._db_figures_at is None or time.monotonic() - self._db_figures_at >= s.metrics_db_interval_s
        q = queries()
        try:
            async with asyncio.timeout(DB_PROBE_TIMEOUT_S):
                async with self.pool.acquire() as conn:
                    rows = await conn.fetch(q.executions_by_status) if due else None
                    pending = await conn.fetchval(q.approvals_pending_count)
                    gauges = await conn.fetchrow(q.alerting_gauges)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            words = describe_db_failure(exc)
            log.warning("metrics: database figures unavailable, the last ones are shown: %s", words,
                        extra={"coalesce": words.split(":", 1)[0]})
            return
        if rows is not None:
            for row in rows:
                self._executions.labels(row["status"]).set(row["n"])
            self._db_figures_at = time.monotonic()
        self._approvals.set(pending)
        self._approval_age.set(gauges["oldest_pending_s"] or 0)
        self._breakers.set(gauges["breakers_open"])
        self._kill_switch.set(1 if s.kill_switch or gauges["kill_switch"] else 0)

        return generate_latest(REGISTRY) + generate_latest(self._registry)

    # -- HTTP ------------------------------------------------------------------------------------
    async def _start_http(self) -> None:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/ready", self._ready_handler)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/asyncapi", self._asyncapi_json)
        app.router.add_get("/asyncapi.json", self._asyncapi_json)
        for extend in self._http_extensions:
            extend(app, self.settings, pool=lambda: self.pool, publish=self._publish, asyncapi=self._document)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.http_host, self.settings.http_port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            why = {errno.EADDRINUSE: "is in use by another process", errno.EACCES: "needs privileges to bind",
                   errno.EADDRNOTAVAIL: "is not an address of this host"}.get(exc.errno or 0, f"cannot be bound ({exc})")
            raise HttpPortUnavailable(
                f"HTTP port {self.settings.http_port} on {self.settings.http_host} {why}: set ELK_RESOLVER_HTTP_PORT "
                f"(and ELK_RESOLVER_HTTP_HOST) to a free one, or stop the other process") from None
        self.http_port = self._runner.addresses[0][1]
        log.info("HTTP on %s (%s/health /ready /metrics /asyncapi)", self.http_url,
                 "console, " if self._http_extensions else "")

    async def _health(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "alive", "stages": list(self.stages)})

    async def _ready_handler(self, _: web.Request) -> web.Response:
        ok, body = await self.readiness()
        return web.json_response(body, status=200 if ok else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        body = await self.metrics_text()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _document(self) -> dict[str, Any]:
        if self._asyncapi is None:
            self._asyncapi = asyncapi_document(self.settings)
        return self._asyncapi

    async def _asyncapi_json(self, _: web.Request) -> web.Response:
        return web.json_response(self._document())

    async def _publish(
        self, results: list[ExecutionResult], events: list[ApprovalEvent], pointers: list[ExecutionRequest] = ()
    ) -> None:
        """What a decision in the console changed, on the results and approvals topics, and
        approved requests on the execution topic (the execute stage runs them)."""
        if self.broker is not None:
            from streams.execute import publish_outcomes

            await publish_outcomes(self.broker, self.settings, results, events, pointers)


def create_app(
    settings: Settings,
    stages: Iterable[str] = STAGES,
    *,
    builders: dict[str, Builder] | None = None,
    serve_http: bool = True,
    stage_options: dict[str, dict[str, Any]] | None = None,
    http_extensions: Sequence[HttpExtension] = (),
) -> App:
    """The stages asked for; nothing connects until :meth:`App.start`."""
    return App(settings, list(stages), builders=builders, serve_http=serve_http, stage_options=stage_options,
               http_extensions=http_extensions)


async def run_service(
    settings: Settings,
    stages: Iterable[str] = STAGES,
    *,
    on_started: Callable[[App], Any] | None = None,
    stop: asyncio.Event | None = None,
    **options: Any,
) -> int:
    """Run until SIGINT or SIGTERM (or ``stop`` is set), then shut everything down cleanly,
    within ``settings.shutdown_timeout_s`` whatever the dependencies do: past it the stop is
    abandoned (what was not committed is redelivered), and after a signal a watchdog thread
    ends the process a few seconds later still, should the event loop itself be stuck."""
    from elk_resolver.kafka.topics import forbid_client_auto_create

    # only the topic watch creates topics (with the configured count), never a client's request;
    # undone when the service has stopped (the CLI runs it in-process in tests)
    allow_auto_create_again = forbid_client_auto_create()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    watchdog: list[threading.Timer] = []

    def on_signal() -> None:
        if not watchdog:
            timer = threading.Timer(settings.shutdown_timeout_s + 5.0, _exit_now, args=(settings.shutdown_timeout_s,))
            timer.daemon = True
            timer.start()
            watchdog.append(timer)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
    app = create_app(settings, stages, **options)
    started = time.monotonic()
    try:
        await app.start()
        if on_started is not None:
            result = on_started(app)
            if asyncio.iscoroutine(result):
                await result
        await stop.wait()
        log.info("stopping after %.0fs", time.monotonic() - started)
    finally:
        try:
            await asyncio.wait_for(app.stop(), settings.shutdown_timeout_s)
        except TimeoutError:
            log.error("stop took longer than %.0fs; leaving without it (uncommitted records are redelivered)",
                      settings.shutdown_timeout_s)
        for sig in installed:
            loop.remove_signal_handler(sig)
        for timer in watchdog:
            timer.cancel()
        allow_auto_create_again()
    return 0


def _exit_now(deadline_s: float) -> None:
    log.critical("still running %.0fs after the stop signal; exiting now", deadline_s + 5.0)
    logging.shutdown()
    os._exit(70)
