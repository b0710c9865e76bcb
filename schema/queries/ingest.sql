-- Statements of the ingest stage (handlers/ingest.py). One batch is one transaction:
-- ingest-ensure-partitions (only for months not seen before), then ingest-upsert-batch,
-- then ingest-row-ids when some hashes of the batch brought no new occurrence.

-- name: ingest-ensure-partitions
-- Create the monthly error_occurrences partitions for the given months if missing; a month
-- retention has passed (before the horizon, 0090) answers NULL: its occurrences are expired.
SELECT m AS month, ensure_error_occurrences_partition(m) AS partition FROM unnest($1::date[]) AS m;

-- name: ingest-upsert-batch
-- Record the batch's occurrences idempotently, then insert or count its distinct errors.
-- $1..$6 and $20 (history mark): one element per distinct event identity (sorted, so
-- concurrent consumers lock in the same order); $7..$19 and $21 (last_actionable_at): one
-- element per distinct hash_signature (sorted likewise).
-- severity only ever rises (the worst level seen), so a debug line stored first does not hide
-- the errors of the same fingerprint; it changes rarely, so the update stays mostly HOT.
-- $15 (raw_log_data) is JSON text, cast here: usually the record's own bytes, passed
-- through without a decode/encode round trip in the client.
-- Only occurrences that were not recorded before are counted, so a replayed or redelivered
-- record never counts twice. A known error whose events were all seen before is not
-- rewritten at all (no dead tuple, no lock); ingest-row-ids finds its id.
-- Returns, per error written: id, hash, whether this statement created the row, and the
-- number of new occurrences it brought.
-- $22..$30: one element per analysis event the batch publishes (its trigger occurrence's
-- identity and time, hash, subject, message, context as JSON text, source, history mark,
-- the dependency its message names):
-- stored once in analysis_triggers (0071), where the analysis stage reads what the event says.
WITH trig AS (
    INSERT INTO analysis_triggers AS t
        (event_identity, occurred_at, hash_signature, subject, message, context, source_system, history, dependency)
    SELECT i, a, h, s, m, c::jsonb, src, hist, dep
    FROM unnest($22::text[], $23::timestamp[], $24::text[], $25::text[], $26::text[], $27::text[], $28::text[],
                $29::text[], $30::text[]) AS x(i, a, h, s, m, c, src, hist, dep)
    ON CONFLICT DO NOTHING
), occ AS (
    INSERT INTO error_occurrences AS o
        (event_identity, occurred_at, hash_signature, source_topic, source_partition, source_offset, history)
    SELECT * FROM unnest($1::text[], $2::timestamp[], $3::text[], $4::text[], $5::int[], $6::bigint[],
                         $20::text[])
    ON CONFLICT DO NOTHING
    RETURNING o.hash_signature, o.occurred_at
), counts AS (
    -- an occurrence keyed by its identity alone (0090: its own time not believed, occurred_at
    -- in year 1) says nothing of when: the batch's time for it (its receipt) stands instead
    SELECT hash_signature, count(*) AS n, max(occurred_at) FILTER (WHERE occurred_at >= '1000-01-01') AS last_seen
    FROM occ
    GROUP BY hash_signature
), batch AS (
    SELECT * FROM unnest(
        $7::text[], $8::timestamp[], $9::text[], $10::text[], $11::text[], $12::text[],
        $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::int[],
        $19::timestamp[], $21::timestamp[]
    ) AS b(hash_signature, ts, error_type, error_message, source_system, severity,
           stack_trace, elasticsearch_id, raw_log_data, fingerprint_version,
           fingerprint_template, pattern_id, batch_last_seen, last_actionable_at)
), upserted AS (
    INSERT INTO error_logs AS e
        (timestamp, error_type, error_message, source_system, severity, stack_trace,
         elasticsearch_id, raw_log_data, hash_signature, fingerprint_version,
         fingerprint_template, pattern_id, occurrence_count, last_seen_at, last_actionable_at)
    SELECT b.ts, b.error_type, b.error_message, b.source_system, b.severity, b.stack_trace,
           b.elasticsearch_id, b.raw_log_data::jsonb, b.hash_signature, b.fingerprint_version,
           b.fingerprint_template, b.pattern_id, coalesce(c.n, 0),
           coalesce(c.last_seen, b.batch_last_seen), b.last_actionable_at
    FROM batch b
    LEFT JOIN counts c USING (hash_signature)
    ORDER BY b.hash_signature
    ON CONFLICT (hash_signature) DO UPDATE SET
        occurrence_count = e.occurrence_count + EXCLUDED.occurrence_count,
        last_seen_at = greatest(e.last_seen_at, EXCLUDED.last_seen_at),
        last_actionable_at = greatest(e.last_actionable_at, EXCLUDED.last_actionable_at),
        severity = CASE
            WHEN array_position(ARRAY['ERROR', 'CRITICAL', 'FATAL'], EXCLUDED.severity::text)
                 > coalesce(array_position(ARRAY['ERROR', 'CRITICAL', 'FATAL'], e.severity::text), 0)
            THEN EXCLUDED.severity ELSE e.severity END
    WHERE EXCLUDED.occurrence_count > 0
    RETURNING e.id, e.hash_signature, (e.xmax = 0) AS inserted
)
SELECT u.id, u.hash_signature, u.inserted, coalesce(c.n, 0)::int AS new_occurrences
FROM upserted u
LEFT JOIN counts c USING (hash_signature);

-- name: ingest-clean-gin-pending-list
-- Move the pending list of error_logs' GIN index into the index (0065); the pages it removed.
SELECT clean_error_logs_gin_pending_list();

-- name: ingest-row-ids
-- The error_logs id of each given hash (the errors ingest-upsert-batch left untouched).
SELECT id, hash_signature FROM error_logs WHERE hash_signature = any($1::text[]);

-- name: ingest-pattern-version
-- A cheap fingerprint of error_patterns: the cache reloads the rows only when it changes.
SELECT count(*) AS n,
       md5(coalesce(string_agg(
           concat_ws(E'\x1f', id, pattern_name, pattern_regex, error_category, priority, auto_resolve, disabled_at,
                     fingerprint_fields),
           E'\x1e' ORDER BY id), '')) AS digest
FROM error_patterns;

-- name: ingest-patterns
-- Every enabled error pattern; PatternSet orders them (priority, then id) and skips unusable ones.
SELECT id, pattern_name, pattern_regex, error_category, priority, auto_resolve, fingerprint_fields
FROM error_patterns
WHERE disabled_at IS NULL;

-- name: ingest-drop-expired-occurrences
-- Drop the monthly error_occurrences partitions that end before the retention cutoff.
SELECT drop_expired_error_occurrences_partitions($1::date);
