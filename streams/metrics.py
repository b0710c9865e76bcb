"""Prometheus metrics of the stage runners, labelled by stage; ``/metrics`` serves the default
registry. Defined once at import (the registry rejects duplicates); nothing connects here."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_IN = Counter("elk_resolver_events_in", "records consumed", ["stage"])
EVENTS_STORED = Counter("elk_resolver_events_stored", "error events written (each occurrence)", ["stage"])
NEW_OCCURRENCES = Counter("elk_resolver_new_occurrences", "occurrences never counted before", ["stage"])
EVENTS_SKIPPED = Counter("elk_resolver_events_skipped", "events that are not errors", ["stage"])
DEAD_LETTERED = Counter("elk_resolver_dead_lettered", "records sent to the DLQ", ["stage", "reason"])
PUBLISHED = Counter("elk_resolver_published", "events published downstream", ["stage"])
REFUSED = Counter(
    "elk_resolver_refused", "records refused: they disagree with the database, or lack the internal topics' signature",
    ["stage"],
)
BATCHES = Counter("elk_resolver_batches", "batches committed", ["stage"])
RETRIES = Counter("elk_resolver_retries", "retries after a dependency failed", ["stage", "dependency"])
BATCH_SECONDS = Histogram(
    "elk_resolver_batch_seconds",
    "fetch to offset commit, per batch",
    ["stage"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PATTERNS_INVALID = Gauge("elk_resolver_patterns_invalid", "error_patterns rows skipped as unusable", ["stage"])
ASSIGNED_PARTITIONS = Gauge("elk_resolver_assigned_partitions", "partitions assigned", ["stage"])
