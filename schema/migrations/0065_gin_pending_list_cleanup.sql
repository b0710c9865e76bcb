-- The GIN index on error_logs.raw_log_data (0003) keeps fastupdate on: a new row's entries go
-- to the index's pending list, which is moved into the index proper in one sorted pass. When
-- the list passes gin_pending_list_limit (4 MB) the INSERT that crossed it makes that pass
-- itself, inside its statement: 0.4-0.8 s for one ingest batch, every ~6 s at 2,000 new errors
-- a second (about 350 bytes of pending list per error), which was the latency benchmark's p99.
-- The ingest stage calls this function every gin_cleanup_every_s from a connection of its own,
-- so the pass runs beside the stage's writes, on another core, and the list never gets near
-- the limit; an INSERT that does cross it while a pass runs skips its own (PostgreSQL's
-- ginInsertCleanup). What the index holds, and every query's answer, are the same either way.
--
-- SECURITY DEFINER because gin_clean_pending_list needs the index's owner (as VACUUM does), and
-- the service role owns nothing; search_path as the other such functions (0035).
CREATE OR REPLACE FUNCTION clean_error_logs_gin_pending_list()
RETURNS BIGINT
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT gin_clean_pending_list('idx_error_logs_raw_log_data'::regclass)
$$;

REVOKE EXECUTE ON FUNCTION clean_error_logs_gin_pending_list() FROM PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'elk_resolver_user') THEN
        GRANT EXECUTE ON FUNCTION clean_error_logs_gin_pending_list() TO elk_resolver_user;
    END IF;
END
$$;
