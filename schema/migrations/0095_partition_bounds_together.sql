-- 0080 (issue 21: the bounds a caller cannot move) and 0090 (issue 22: retention cannot make a
-- replay count an event again) were written side by side and each replaced the two partition
-- functions; applied in order, 0090's bodies dropped 0080's checks. These are both in one:
--  * ensure_error_occurrences_partition: an existing month is returned; a month before the
--    retention horizon answers NULL (expired, 0090); a month more than a month ahead of the
--    database's clock is refused with 22008 for everyone (0090: such a month would outlive
--    retention; ingest stores an event whose own time is not believed at its receipt).
--  * drop_expired_error_occurrences_partitions: a cutoff in the future is refused; a role other
--    than the owner may not cut inside retention_policy.retention_days (0080); the horizon moves
--    first and the odd occurrences received before it are pruned (0090).
-- retention_policy.partition_months_ahead (0080) is no longer read: the bound is one month.

CREATE OR REPLACE FUNCTION ensure_error_occurrences_partition(month_start DATE)
RETURNS TEXT
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    first_day DATE := date_trunc('month', month_start)::date;
    part_name TEXT := format('error_occurrences_y%sm%s', to_char(first_day, 'YYYY'), to_char(first_day, 'MM'));
BEGIN
    IF month_start IS NULL THEN
        RAISE EXCEPTION 'no partition for an unknown month' USING ERRCODE = 'invalid_parameter_value';
    END IF;
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
    kept INTEGER := (SELECT retention_days FROM retention_policy);
BEGIN
    IF cutoff IS NULL OR cutoff > CURRENT_DATE THEN
        RAISE EXCEPTION 'retention cutoff % is in the future: nothing that has not happened expires', cutoff
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT caller_owns_error_occurrences() AND cutoff > CURRENT_DATE - coalesce(kept, 90) THEN
        RAISE EXCEPTION 'retention cutoff % is inside the configured retention of % days', cutoff, coalesce(kept, 90)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM advance_error_occurrences_horizon(cutoff);
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
