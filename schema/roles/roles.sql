-- The design document's security section: a read-only role and a restricted application
-- role, with exactly the document's grants. Opt-in: `elk-resolver roles` runs this file as a
-- superuser (or the database owner with CREATEROLE). Passwords arrive as the settings
-- elk.readonly_password and elk.app_password (set by the command, never written in this file).
-- The database name comes from current_database(): the document's is elk_resolver.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'elk_readonly') THEN
        EXECUTE format('CREATE USER elk_readonly WITH PASSWORD %L', current_setting('elk.readonly_password'));
    ELSE
        EXECUTE format('ALTER USER elk_readonly WITH PASSWORD %L', current_setting('elk.readonly_password'));
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'elk_resolver_user') THEN
        EXECUTE format('CREATE USER elk_resolver_user WITH PASSWORD %L', current_setting('elk.app_password'));
    ELSE
        EXECUTE format('ALTER USER elk_resolver_user WITH PASSWORD %L', current_setting('elk.app_password'));
    END IF;
END
$$;

-- 읽기 전용 사용자 (read-only user)
DO $$ BEGIN EXECUTE format('GRANT CONNECT ON DATABASE %I TO elk_readonly', current_database()); END $$;
GRANT USAGE ON SCHEMA public TO elk_readonly;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO elk_readonly;

-- 애플리케이션 사용자 권한 제한 (application user, restricted)
REVOKE ALL ON SCHEMA public FROM elk_resolver_user;
DO $$ BEGIN EXECUTE format('GRANT CONNECT ON DATABASE %I TO elk_resolver_user', current_database()); END $$;
GRANT INSERT, SELECT, UPDATE ON ALL TABLES IN SCHEMA public TO elk_resolver_user;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO elk_resolver_user;

-- The same grants for tables and sequences that later migrations create (the document's
-- statements only reach the tables that exist when they run).
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO elk_readonly;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT INSERT, SELECT, UPDATE ON TABLES TO elk_resolver_user;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE ON SEQUENCES TO elk_resolver_user;

-- The retention the partition functions hold the service role to (0080): read, never set.
REVOKE INSERT, UPDATE, DELETE ON retention_policy FROM elk_resolver_user;
-- The audit log (0130) is written, never rewritten.
REVOKE UPDATE, DELETE ON audit_log FROM elk_resolver_user;

-- The SECURITY DEFINER functions (0004, hardened in 0035): EXECUTE for the service role
-- only (a new month's partition; retention), never PUBLIC nor the read-only role.
GRANT EXECUTE ON FUNCTION ensure_error_occurrences_partition(DATE) TO elk_resolver_user;
GRANT EXECUTE ON FUNCTION drop_expired_error_occurrences_partitions(DATE) TO elk_resolver_user;
-- retention's horizon: the first month kept, moved before months are dropped (0090)
GRANT EXECUTE ON FUNCTION advance_error_occurrences_horizon(DATE) TO elk_resolver_user;
GRANT EXECUTE ON FUNCTION prune_odd_error_occurrences() TO elk_resolver_user;
-- the GIN pending-list pass the ingest stage runs beside its writes (0065)
GRANT EXECUTE ON FUNCTION clean_error_logs_gin_pending_list() TO elk_resolver_user;
