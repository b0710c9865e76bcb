-- Retention must not break replay's idempotency (issue 22). error_occurrences is what makes a
-- replayed or redelivered record count nothing twice, and retention drops its monthly
-- partitions: a record replayed after its month was dropped would be counted again, and
-- ensure_error_occurrences_partition would create the month again for it, for the next
-- retention run to drop. So:
--  * error_occurrences_horizon remembers the first month retention keeps (every month before
--    it may have been dropped). Retention moves it forward before it drops anything (the
--    function below, and `maintain`, which calls advance_error_occurrences_horizon).
--  * ensure_error_occurrences_partition creates no month before the horizon: it answers NULL,
--    and the ingest stage and replay count such an occurrence as expired (not stored, not
--    counted again). Live events never land there: an event whose own time is older than the
--    retention when the broker receives it is stored at the time the broker received it
--    (handlers/ingest.py, occurrence_time).
--  * it creates no month more than a month ahead of the database's clock either (an event
--    time far in the future would make a partition retention never removes): the write is
--    refused with SQLSTATE 22008, a data error, so that record is dead-lettered.
--  * two ingest copies creating the same month at once no longer fail one batch with
--    duplicate_table (the check under the advisory lock could miss the other's new table).
--  * error_occurrences_odd holds the occurrences of events whose own time is not believed
--    (1975, 2150...: stored at their receipt): their occurred_at is noon of 0001-01-01, so one is told
--    apart by its identity alone and a producer's resend (another Kafka timestamp) counts
--    nothing again. No month of retention's covers them: retention deletes those received
--    before the horizon (prune_odd_error_occurrences), and ingest counts a record received
--    before the horizon as expired, so a replay never counts one again.

CREATE TABLE error_occurrences_horizon (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    expired_before DATE NOT NULL
);

CREATE TABLE error_occurrences_odd PARTITION OF error_occurrences
    FOR VALUES FROM ('0001-01-01') TO ('0001-01-02');

CREATE FUNCTION advance_error_occurrences_horizon(cutoff DATE)
RETURNS DATE
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    kept DATE := date_trunc('month', cutoff)::date;
BEGIN
    IF cutoff IS NULL OR cutoff > CURRENT_DATE THEN
        RAISE EXCEPTION 'retention cutoff % is in the future: nothing that has not happened expires', cutoff
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO error_occurrences_horizon (expired_before) VALUES (kept)
    ON CONFLICT (only_row) DO UPDATE SET expired_before = greatest(error_occurrences_horizon.expired_before, kept);
    RETURN (SELECT expired_before FROM error_occurrences_horizon);
END;
$$;

-- The odd occurrences received before the horizon (an ingest copy counts such a record as
-- expired, so none is counted again once its row is gone); the number deleted.
CREATE FUNCTION prune_odd_error_occurrences()
RETURNS BIGINT
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    gone BIGINT;
BEGIN
    DELETE FROM error_occurrences_odd
    WHERE received_at < (SELECT expired_before FROM error_occurrences_horizon);
    GET DIAGNOSTICS gone = ROW_COUNT;
    RETURN gone;
END;
$$;

CREATE OR REPLACE FUNCTION ensure_error_occurrences_partition(month_start DATE)
RETURNS TEXT
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    first_day DATE := date_trunc('month', month_start)::date;
    part_name TEXT := format('error_occurrences_y%sm%s', to_char(first_day, 'YYYY'), to_char(first_day, 'MM'));
BEGIN
    IF to_regclass(part_name) IS NOT NULL THEN
        RETURN part_name;
    END IF;
    IF first_day < (SELECT expired_before FROM error_occurrences_horizon) THEN
        RETURN NULL;  -- expired: retention dropped (or would drop) this month
    END IF;
    IF first_day > date_trunc('month', now()) + INTERVAL '1 month' THEN
        RAISE EXCEPTION 'error_occurrences: month % is more than a month ahead of the database clock', first_day
            USING ERRCODE = 'datetime_field_overflow';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('error_occurrences_partition'));
    IF to_regclass(part_name) IS NULL THEN
        BEGIN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF error_occurrences FOR VALUES FROM (%L) TO (%L)',
                part_name, first_day, (first_day + INTERVAL '1 month')::date
            );
        EXCEPTION WHEN duplicate_table THEN
            NULL;  -- another copy made it between the check and here
        END;
    END IF;
    RETURN part_name;
END;
$$;

CREATE OR REPLACE FUNCTION drop_expired_error_occurrences_partitions(cutoff DATE)
RETURNS SETOF TEXT
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    part_name TEXT;
    first_day DATE;
BEGIN
    PERFORM advance_error_occurrences_horizon(cutoff);  -- refuses a cutoff in the future
    PERFORM prune_odd_error_occurrences();
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

REVOKE EXECUTE ON FUNCTION advance_error_occurrences_horizon(DATE) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION prune_odd_error_occurrences() FROM PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'elk_resolver_user') THEN
        GRANT EXECUTE ON FUNCTION advance_error_occurrences_horizon(DATE) TO elk_resolver_user;
        GRANT EXECUTE ON FUNCTION prune_odd_error_occurrences() TO elk_resolver_user;
        GRANT SELECT ON error_occurrences_horizon TO elk_resolver_user;
    END IF;
END
$$;
