-- Security review (issue 12) of the two SECURITY DEFINER functions of 0004.
--  * PostgreSQL grants EXECUTE on a new function to PUBLIC: any role that can connect, the
--    document's elk_readonly included, could drop every occurrence partition. Only the owner
--    (migrations, maintain) and the service role (schema/roles/roles.sql grants it) keep it.
--  * search_path = public, pg_temp: pg_temp last, so a temporary object of the caller can
--    never stand in for public's (PostgreSQL's advice for SECURITY DEFINER functions).
--  * Retention never drops a month that has not ended before today: a cutoff in the future
--    is refused, so even the service role cannot empty the table through it.
ALTER FUNCTION ensure_error_occurrences_partition(DATE) SET search_path = public, pg_temp;

CREATE OR REPLACE FUNCTION drop_expired_error_occurrences_partitions(cutoff DATE)
RETURNS SETOF TEXT
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    part_name TEXT;
    first_day DATE;
BEGIN
    IF cutoff IS NULL OR cutoff > CURRENT_DATE THEN
        RAISE EXCEPTION 'retention cutoff % is in the future: nothing that has not happened expires', cutoff
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

REVOKE EXECUTE ON FUNCTION ensure_error_occurrences_partition(DATE) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION drop_expired_error_occurrences_partitions(DATE) FROM PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'elk_resolver_user') THEN
        GRANT EXECUTE ON FUNCTION ensure_error_occurrences_partition(DATE) TO elk_resolver_user;
        GRANT EXECUTE ON FUNCTION drop_expired_error_occurrences_partitions(DATE) TO elk_resolver_user;
    END IF;
END
$$;
