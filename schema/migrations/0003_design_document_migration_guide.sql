-- The design document's migration guide and performance section: AI model columns,
-- the severity and ai_model indexes, and a GIN index on the JSONB log data.
-- The guide writes CREATE INDEX CONCURRENTLY; every migration here runs inside its own
-- transaction, where CONCURRENTLY is not allowed, so the indexes are built plainly.
-- On a database that already holds millions of rows, build them CONCURRENTLY by hand
-- before running `elk-resolver migrate` (IF NOT EXISTS then skips them).

ALTER TABLE solutions ADD COLUMN ai_model VARCHAR(50);
ALTER TABLE solutions ADD COLUMN ai_confidence DECIMAL(3,2);

-- The guide's backfill for solutions that existed before the columns did.
UPDATE solutions SET ai_model = 'llama-3.1-sonar-large-128k-online' WHERE ai_model IS NULL;

CREATE INDEX IF NOT EXISTS idx_solutions_ai_model ON solutions(ai_model);
CREATE INDEX IF NOT EXISTS idx_error_logs_severity ON error_logs(severity);
CREATE INDEX IF NOT EXISTS idx_error_logs_raw_log_data ON error_logs USING GIN (raw_log_data);
