"""`elk-resolver backfill-es`: error documents already in Elasticsearch, into ``topic_raw``.

Reads with a point-in-time and ``search_after`` sorted by ``[@timestamp, _shard_doc]``, in
pages, and publishes each ``_source`` as Logstash would have (same JSON shape). The event's
identity is Logstash's own ``event.hash`` when the document has it (so an event the service
already consumed live, or a document indexed twice under two ids, counts once), else the
document's ``_id``; it goes in ``event.hash`` (the ingest stage's identity field) and the
``event_id`` header. A document published twice is therefore counted once.

History is never acted on: every record carries the ``elk-history: backfill`` header, which
ingest stores with the occurrence (``error_occurrences.history``) and turns into an analysis
event marked ``replay``/``history``, so nothing is remediated, unless the operator passes
``--execute`` (the ``elk-history-execute`` header).

Resumable: after each page is acknowledged by the broker the cursor (the last ``@timestamp``
sort value and the ids published at it) is stored in ``backfill_cursors``, keyed by (index
pattern, since, until, query). A point-in-time does not outlive the process, so a resumed
run opens a new one and starts at the stored timestamp, skipping the ids it already sent.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from elk_resolver.events.logstash_event import HISTORY_EXECUTE_HEADER, HISTORY_HEADER, get_path
from elk_resolver.kafka.security import client_options
from elk_resolver.operations.progress import Progress
from elk_resolver.settings import Settings
from elk_resolver.store.db import queries

log = logging.getLogger("elk_resolver.backfill")

PAGE_SIZE = 500
KEEP_ALIVE = "2m"
FAR_FUTURE = datetime(9999, 12, 31)


class BackfillError(RuntimeError):
    """Elasticsearch refused the search (bad query, missing index, ...)."""


@dataclass
class BackfillResult:
    published: int = 0
    pages: int = 0
    total_hits: int | None = None
    resumed: bool = False
    already_complete: bool = False


def to_es_query(query: str | None) -> dict[str, Any] | None:
    """JSON query DSL as given, or a KQL-style string as a ``query_string`` query.

    KQL itself is a Kibana language; ``field:value``, quoted phrases, wildcards and
    ``and``/``or``/``not`` (any case) carry over to ``query_string``.
    """
    if not query or not query.strip():
        return None
    text = query.strip()
    if text.startswith("{"):
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise BackfillError(f"--query is not valid JSON: {exc}") from None
        return parsed.get("query", parsed) if isinstance(parsed, dict) else parsed
    parts = re.split(r'("(?:[^"\\]|\\.)*")', text)  # keep quoted phrases as they are
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(r"\b(and|or|not)\b", lambda m: m[1].upper(), parts[i], flags=re.IGNORECASE)
    return {"query_string": {"query": "".join(parts), "default_operator": "AND"}}


def _naive_utc(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when


def _as_logstash_record(hit: dict[str, Any]) -> tuple[bytes, bytes | None, str]:
    """(value, key, identity) of the record that re-publishes one document."""
    source = dict(hit.get("_source") or {})
    logstash_hash = get_path(source, "event.hash")
    identity = logstash_hash.strip() if isinstance(logstash_hash, str) and logstash_hash.strip() else hit["_id"]
    source.pop("event.hash", None)  # a flat key would shadow the nested one
    event = source.get("event")
    event = dict(event) if isinstance(event, dict) else {}
    event["hash"] = identity
    source["event"] = event
    service = source.get("service")
    name = service.get("name") if isinstance(service, dict) else source.get("service.name")
    key = str(name).encode() if name else None
    return orjson.dumps(source), key, identity


def history_headers(identity: str, *, execute: bool) -> list[tuple[str, bytes]]:
    headers = [("event_id", identity.encode()), (HISTORY_HEADER, b"backfill")]
    if execute:
        headers.append((HISTORY_EXECUTE_HEADER, b"true"))
    return headers


def make_client(settings: Settings):
    from elasticsearch import AsyncElasticsearch

    kwargs: dict[str, Any] = {"request_timeout": 30, "retry_on_timeout": True, "max_retries": 2}
    if settings.elasticsearch_api_key:
        kwargs["api_key"] = settings.elasticsearch_api_key
    elif settings.elasticsearch_username:
        kwargs["basic_auth"] = (settings.elasticsearch_username, settings.elasticsearch_password or "")
    return AsyncElasticsearch(settings.elasticsearch_url, **kwargs)


async def backfill(
    settings: Settings,
    pool: asyncpg.Pool,
    *,
    index: str,
    since: datetime,
    until: datetime | None = None,
    query: str | None = None,
    page_size: int = PAGE_SIZE,
    restart: bool = False,
    progress: Progress | None = None,
    client: Any = None,
    execute: bool = False,
) -> BackfillResult:
    from elasticsearch import ApiError, TransportError

    q = queries()
    user_query = to_es_query(query)
    key = (index, _naive_utc(since), _naive_utc(until) if until else FAR_FUTURE, (query or "").strip())
    async with pool.acquire() as conn:
        cursor = await conn.fetchrow(q.backfill_cursor_get, *key)
        if restart:
            await conn.execute(q.backfill_cursor_restart, cursor["id"])
            cursor = await conn.fetchrow(q.backfill_cursor_get, *key)
    result = BackfillResult(published=cursor["docs_published"], total_hits=cursor["total_hits"])
    if cursor["completed_at"] is not None:
        result.already_complete = True
        return result
    last_ts: str | None = cursor["last_timestamp"]
    last_ids: set[str] = set(cursor["last_ids"] or ())
    result.resumed = last_ts is not None

    time_range: dict[str, Any] = {"gte": since.isoformat(), "format": "strict_date_optional_time"}
    if until is not None:
        time_range["lte"] = until.isoformat()
    filters: list[dict[str, Any]] = [{"range": {"@timestamp": time_range}}]
    if last_ts is not None:
        filters.append({"range": {"@timestamp": {"gte": int(last_ts), "format": "epoch_millis"}}})
    if user_query is not None:
        filters.append(user_query)
    es_query = {"bool": {"filter": filters}}

    own_client = client is None
    client = client or make_client(settings)
    producer = AIOKafkaProducer(**client_options(settings), acks=1, enable_idempotence=False, linger_ms=5)
    pit_id: str | None = None
    try:
        await producer.start()
        try:
            pit = await client.open_point_in_time(index=index, keep_alive=KEEP_ALIVE)
        except (ApiError, TransportError) as exc:
            raise BackfillError(f"cannot open a point in time on {index}: {exc}") from None
        pit_id = pit["id"]
        search_after = None
        first_page = True
        if progress is not None:
            progress.done = result.published
        while True:
            try:
                page = await client.search(
                    pit={"id": pit_id, "keep_alive": KEEP_ALIVE},
                    query=es_query,
                    sort=[{"@timestamp": {"order": "asc"}}, {"_shard_doc": "asc"}],
                    size=page_size,
                    search_after=search_after,
                    track_total_hits=first_page,
                )
            except (ApiError, TransportError) as exc:
                raise BackfillError(f"search failed after {result.published} documents: {exc}") from None
            pit_id = page.get("pit_id", pit_id)
            hits = page["hits"]["hits"]
            if first_page:
                total = (page["hits"].get("total") or {}).get("value")
                if total is not None and not result.resumed:
                    result.total_hits = total
                if progress is not None and result.total_hits is not None:
                    progress.total = result.total_hits
                first_page = False
            if not hits:
                break
            futures = []
            for hit in hits:
                ts = str(hit["sort"][0])
                if last_ts is not None and ts == last_ts and hit["_id"] in last_ids:
                    continue  # sent before the interruption
                value, record_key, identity = _as_logstash_record(hit)
                futures.append(await producer.send(
                    settings.topic_raw, value, key=record_key, headers=history_headers(identity, execute=execute)
                ))
            for future in futures:
                await future  # acknowledged before the cursor moves past them
            page_last = str(hits[-1]["sort"][0])
            ids_at_last = {h["_id"] for h in hits if str(h["sort"][0]) == page_last}
            last_ids = (last_ids | ids_at_last) if page_last == last_ts else ids_at_last
            last_ts = page_last
            result.published += len(futures)
            result.pages += 1
            async with pool.acquire() as conn:
                await conn.execute(q.backfill_cursor_save, cursor["id"], last_ts, sorted(last_ids),
                                   result.published, result.total_hits)
            if progress is not None:
                progress.update(len(futures))
            search_after = hits[-1]["sort"]
        async with pool.acquire() as conn:
            await conn.execute(q.backfill_cursor_complete, cursor["id"])
    finally:
        await producer.stop()
        if pit_id is not None:
            try:
                await client.close_point_in_time(id=pit_id)
            except Exception:  # noqa: BLE001 - it expires on its own after keep_alive
                log.debug("closing the point in time failed", exc_info=True)
        if own_client:
            await client.close()
    return result
