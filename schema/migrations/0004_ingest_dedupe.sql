-- Service extension (ingest stage). Why each piece exists:
--  * fingerprint_version / fingerprint_template: the hash is computed over a template of the
--    message (volatile tokens replaced); storing the template beside the row lets a person see
--    why two errors were merged, and the version tells which rule produced the hash.
--  * pattern_id: which error_patterns row classified the error (NULL: none matched).
--  * occurrence_count / last_seen_at: a repeated error keeps its first row and id; its
--    occurrences are counted here instead of being stored again.
--  * error_occurrences: one row per distinct event identity (event.hash, the event_id header,
--    or the SHA-256 of the record), so a replayed or redelivered record is never counted twice.
--    Partitioned by month of the event time, as the document's performance section suggests,
--    so retention drops whole partitions.

ALTER TABLE error_logs
    ADD COLUMN fingerprint_version VARCHAR(16) NOT NULL DEFAULT 'exact',
    ADD COLUMN fingerprint_template TEXT,
    ADD COLUMN pattern_id INTEGER REFERENCES error_patterns(id) ON DELETE SET NULL,
    ADD COLUMN occurrence_count BIGINT NOT NULL DEFAULT 1,
    ADD COLUMN last_seen_at TIMESTAMP DEFAULT NOW();

-- No index on last_seen_at: every repeat of a known error updates it, and an indexed column
-- makes that update non-HOT (a new entry in every index of error_logs, the GIN one included).
-- The retention job filters on COALESCE(last_seen_at, created_at), which such an index could
-- not serve anyway.

CREATE TABLE error_occurrences (
    event_identity TEXT NOT NULL,
    occurred_at TIMESTAMP NOT NULL,
    hash_signature VARCHAR(64) NOT NULL,
    source_topic TEXT,
    source_partition INTEGER,
    source_offset BIGINT,
    received_at TIMESTAMP NOT NULL DEFAULT NOW(),
    PRIMARY KEY (event_identity, occurred_at)
) PARTITION BY RANGE (occurred_at);

CREATE INDEX idx_error_occurrences_hash ON error_occurrences(hash_signature, occurred_at);

-- Creates the month's partition if it is missing. SECURITY DEFINER so the restricted
-- application role (which has no CREATE on the schema) can still receive a new month.
CREATE FUNCTION ensure_error_occurrences_partition(month_start DATE)
RETURNS TEXT
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    first_day DATE := date_trunc('month', month_start)::date;
    part_name TEXT := format('error_occurrences_y%sm%s', to_char(first_day, 'YYYY'), to_char(first_day, 'MM'));
BEGIN
    IF to_regclass(part_name) IS NULL THEN
        PERFORM pg_advisory_xact_lock(hashtext('error_occurrences_partition'));
        IF to_regclass(part_name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF error_occurrences FOR VALUES FROM (%L) TO (%L)',
                part_name, first_day, (first_day + INTERVAL '1 month')::date
            );
        END IF;
    END IF;
    RETURN part_name;
END;
$$;

SELECT ensure_error_occurrences_partition((date_trunc('month', NOW()) + make_interval(months => m))::date)
FROM generate_series(-1, 1) AS m;

-- Retention (settings.retention_days, the document's 90 days): whole months are dropped once
-- they end before the cutoff, which costs nothing per row. A record older than the
-- retention window that is replayed after its month was dropped is counted again: replays
-- are expected within the window.
CREATE FUNCTION drop_expired_error_occurrences_partitions(cutoff DATE)
RETURNS SETOF TEXT
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    part_name TEXT;
    first_day DATE;
BEGIN
    FOR part_name IN
        SELECT c.relname
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'error_occurrences'::regclass
          AND c.relname ~ '^error_occurrences_y[0-9]{4}m[0-9]{2}$'
        ORDER BY c.relname
    LOOP
        first_day := to_date(substr(part_name, 20, 4) || substr(part_name, 25, 2) || '01', 'YYYYMMDD');
        IF first_day + INTERVAL '1 month' <= cutoff THEN
            EXECUTE format('DROP TABLE %I', part_name);
            RETURN NEXT part_name;
        END IF;
    END LOOP;
END;
$$;
