-- Security review (issue 21) of the two SECURITY DEFINER partition functions (0004, 0035).
-- As elk_resolver_user, drop_expired_error_occurrences_partitions(current_date) dropped a
-- month still inside the 90-day retention, and ensure_error_occurrences_partition('9999-12-01')
-- created a partition eight thousand years ahead. Both now hold their caller to bounds the
-- caller cannot move:
--  * retention_policy (one row) keeps the configured retention. The service role may read it,
--    never change it: `elk-resolver maintain --retention-days N`, run as the schema owner,
--    records N there. A role other than the owner may only drop months that ended before
--    CURRENT_DATE - retention_days. The owner may drop what it likes (it could DROP TABLE).
--  * A role other than the owner gets no partition for a month more than partition_months_ahead
--    months from now: ingest never stores an event that far ahead (a clock that far ahead is
--    broken; such events are stored at their Kafka timestamp).
CREATE TABLE retention_policy (
    id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    retention_days INTEGER NOT NULL DEFAULT 90 CHECK (retention_days >= 1),
    partition_months_ahead INTEGER NOT NULL DEFAULT 2 CHECK (partition_months_ahead BETWEEN 1 AND 24),
    updated_at TIMESTAMP NOT NULL DEFAULT LOCALTIMESTAMP
);
INSERT INTO retention_policy DEFAULT VALUES;

-- roles.sql (and its default privileges) grant the service role INSERT and UPDATE on every
-- table; this one it may only read
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'elk_resolver_user') THEN
        REVOKE INSERT, UPDATE, DELETE ON retention_policy FROM elk_resolver_user;
    END IF;
END
$$;

-- true when the role that logged in owns the occurrences table (or is a member of its owner)
CREATE FUNCTION caller_owns_error_occurrences()
RETURNS BOOLEAN
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT pg_has_role(session_user, c.relowner, 'MEMBER')
    FROM pg_class c WHERE c.oid = 'error_occurrences'::regclass
$$;

CREATE OR REPLACE FUNCTION ensure_error_occurrences_partition(month_start DATE)
RETURNS TEXT
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    first_day DATE := date_trunc('month', month_start)::date;
    part_name TEXT := format('error_occurrences_y%sm%s', to_char(first_day, 'YYYY'), to_char(first_day, 'MM'));
    ahead INTEGER := (SELECT partition_months_ahead FROM retention_policy);
BEGIN
    IF month_start IS NULL
       OR (first_day > date_trunc('month', CURRENT_DATE) + make_interval(months => coalesce(ahead, 2))
           AND NOT caller_owns_error_occurrences()) THEN
        RAISE EXCEPTION 'no partition for % : more than % months ahead', month_start, coalesce(ahead, 2)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
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

-- CREATE OR REPLACE keeps the grants of 0035 (no PUBLIC, the service role only)
REVOKE EXECUTE ON FUNCTION caller_owns_error_occurrences() FROM PUBLIC;
