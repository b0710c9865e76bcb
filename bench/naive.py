"""``python -m bench.naive``: the consumer a user would write by hand, as the comparison point.

A FastStream per-message subscriber that does the same work per event as the project's stage
(parse the Logstash record, mask secrets, classify against error_patterns, fingerprint), then
one awaited upsert and one awaited publish per event. ``ack_policy=ACK`` (commit after the
handler) so it is at least not the lossy default. It runs in a process of its own, like the
stage, and reports on stdout: the number handled and the wall-clock time of the first and the
latest event, from which the benchmark takes its rate (startup excluded).

Settings come from the ``ELK_RESOLVER_*`` environment the benchmark sets.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time

import orjson

UPSERT = """
INSERT INTO error_logs AS e
    (timestamp, error_type, error_message, source_system, severity, stack_trace,
     elasticsearch_id, raw_log_data, hash_signature, fingerprint_version, fingerprint_template,
     pattern_id, occurrence_count, last_seen_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1, $1)
ON CONFLICT (hash_signature) DO UPDATE SET
    occurrence_count = e.occurrence_count + 1,
    last_seen_at = greatest(e.last_seen_at, EXCLUDED.last_seen_at)
RETURNING id, (xmax = 0) AS inserted
"""


async def run(report_s: float = 0.2) -> None:
    from faststream import AckPolicy
    from faststream.kafka import KafkaBroker
    from faststream.kafka.annotations import KafkaMessage

    from elk_resolver.events.classify import PatternSet
    from elk_resolver.events.fingerprint import fingerprint
    from elk_resolver.events.logstash_event import BadRecord, parse_record
    from elk_resolver.events.masking import SecretMasker
    from elk_resolver.kafka.security import broker_options
    from elk_resolver.settings import make_settings
    from elk_resolver.store.db import create_pool

    settings = make_settings()
    masker = SecretMasker()
    # cpu_*: this process's CPU seconds (time.process_time) at the first and the last event
    state = {"handled": 0, "bad": 0, "first": None, "last": None, "cpu_first": None, "cpu_last": None}

    async with await create_pool(settings.database_url, min_size=1, max_size=2) as pool:
        patterns = PatternSet(
            await pool.fetch("SELECT id, pattern_name, pattern_regex, error_category, priority, auto_resolve FROM error_patterns")
        )
        broker = KafkaBroker(**broker_options(settings), enable_idempotence=False, acks=1)

        @broker.subscriber(
            settings.topic_raw,
            group_id=settings.group_ingest,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.ACK,
        )
        async def on_raw(msg: KafkaMessage) -> None:
            if state["first"] is None:
                state["first"] = time.time()
                state["cpu_first"] = time.process_time()
            try:
                ev = parse_record(msg.body)
            except BadRecord:
                state["bad"] += 1
                return
            message = masker.mask_text(ev.message)
            match = patterns.match(message, ev.error_type_ecs)
            error_type = match.error_category if match else (ev.error_type_ecs or "unclassified")
            fp = fingerprint(error_type, message, settings.fingerprint_version)
            row = await pool.fetchrow(
                UPSERT,
                ev.timestamp,
                error_type[:100],
                message,
                ev.source_system,
                ev.severity or "ERROR",
                ev.stack_trace and masker.mask_text(ev.stack_trace),
                ev.elasticsearch_id,
                masker.mask_obj(ev.raw),
                fp.hash,
                fp.version,
                fp.template,
                match.id if match else None,
            )
            event = {
                "error_log_id": row["id"],
                "hash_signature": fp.hash,
                "error_type": error_type,
                "error_message": message,
                "severity": ev.severity or "ERROR",
                "source_system": ev.source_system,
                "first_seen": row["inserted"],
                "event_time": ev.timestamp,
                "trigger_event_id": ev.event_identity,
            }
            await broker.publish(orjson.dumps(event), topic=settings.topic_analysis, key=fp.hash.encode())
            state["handled"] += 1
            state["last"] = time.time()
            state["cpu_last"] = time.process_time()

        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopped.set)
        await broker.start()
        try:
            while not stopped.is_set():
                sys.stdout.buffer.write(orjson.dumps(state) + b"\n")
                sys.stdout.flush()
                try:
                    await asyncio.wait_for(stopped.wait(), report_s)
                except TimeoutError:
                    pass
        finally:
            await broker.stop()
        sys.stdout.buffer.write(orjson.dumps(state) + b"\n")
        sys.stdout.flush()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(run())


if __name__ == "__main__":
    main()
