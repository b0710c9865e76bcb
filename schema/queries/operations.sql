-- Statements of the operating side: monitor, maintain, backfill cursors, patterns, reports
-- of the CLI. The transaction boundary is always the caller's.

-- name: upsert-system-status
-- One row per component; error_count grows with every check that is not healthy.
INSERT INTO system_status (component_name, status, last_check, error_count, last_error_at, metadata)
VALUES ($1::varchar, $2::varchar, NOW(), CASE WHEN $2::varchar = 'healthy' THEN 0 ELSE 1 END,
        CASE WHEN $2::varchar = 'healthy' THEN NULL ELSE NOW() END, $3::jsonb)
ON CONFLICT (component_name) DO UPDATE SET
    status = EXCLUDED.status,
    last_check = EXCLUDED.last_check,
    error_count = COALESCE(system_status.error_count, 0) + EXCLUDED.error_count,
    last_error_at = COALESCE(EXCLUDED.last_error_at, system_status.last_error_at),
    metadata = EXCLUDED.metadata;

-- name: system-status-mark-silent-copies
-- Stage rows (stage.<name>@<host:pid>) of a copy that stopped reporting become 'error'.
UPDATE system_status
SET status = 'error', error_count = coalesce(error_count, 0) + 1, last_error_at = NOW(),
    metadata = coalesce(metadata, '{}'::jsonb) || jsonb_build_object('cause', 'this copy stopped reporting')
WHERE component_name LIKE 'stage.%@%' AND status <> 'error'
  AND last_check < NOW() - make_interval(secs => $1::float8);

-- name: system-status-all
-- Every component row, worst first (the document's dashboard order) with its metadata.
SELECT component_name, status, error_count, last_check, last_error_at, metadata
FROM system_status
ORDER BY CASE status WHEN 'error' THEN 1 WHEN 'warning' THEN 2 ELSE 3 END,
         error_count DESC, component_name;

-- name: executions-by-status
-- execution_history rows by status, for the executions gauge.
SELECT execution_status AS status, COUNT(*) AS n FROM execution_history GROUP BY execution_status;

-- name: approvals-pending-count
-- Approvals a person still has to decide.
SELECT COUNT(*) FROM approvals WHERE status = 'pending' AND expires_at > NOW();

-- name: alerting-gauges
-- What the alert rules watch: the oldest pending approval's age, open circuit breakers, the kill
-- switch row (the session time zone is UTC, like every stored timestamp).
SELECT
    (SELECT EXTRACT(EPOCH FROM LOCALTIMESTAMP - MIN(created_at))::float8
       FROM approvals WHERE status = 'pending' AND expires_at > NOW()) AS oldest_pending_s,
    (SELECT COUNT(*) FROM solutions WHERE tripped_at IS NOT NULL) AS breakers_open,
    (SELECT kill_switch FROM resolver_controls WHERE id) AS kill_switch;

-- name: maintenance-last-finished
-- When `maintain` last finished (any copy of the service).
SELECT MAX(finished_at) FROM maintenance_runs;

-- name: maintenance-start
-- Record the start of a maintenance run.
INSERT INTO maintenance_runs (retention_days) VALUES ($1) RETURNING id;

-- name: maintenance-finish
-- Record what a maintenance run deleted.
UPDATE maintenance_runs SET finished_at = NOW(), deleted = $2::jsonb WHERE id = $1;

-- name: maintain-delete-decision-log
-- Decisions (dry runs, skips, denials) older than the cutoff, one batch.
DELETE FROM decision_log WHERE id IN (
    SELECT id FROM decision_log WHERE decided_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED);

-- name: maintain-delete-analysis-triggers
-- What ingest stored about the analysis events it published (0071), older than the cutoff, one batch.
DELETE FROM analysis_triggers WHERE (occurred_at, event_identity) IN (
    SELECT occurred_at, event_identity FROM analysis_triggers WHERE occurred_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED);

-- name: maintain-delete-verifications
-- Verifications of runs older than the cutoff, one batch (they reference execution_history).
DELETE FROM verifications WHERE execution_history_id IN (
    SELECT v.execution_history_id FROM verifications v
    JOIN execution_history eh ON eh.id = v.execution_history_id
    WHERE eh.executed_at < $1 AND v.outcome <> 'pending'
    LIMIT $2 FOR UPDATE OF v SKIP LOCKED);

-- name: maintain-delete-execution-history
-- Runs older than the cutoff that nothing references any more, one batch. The trigger fires
-- on INSERT only, so solutions keep the success_rate and execution_count they learned.
DELETE FROM execution_history WHERE id IN (
    SELECT eh.id FROM execution_history eh
    WHERE eh.executed_at < $1
      AND NOT EXISTS (SELECT 1 FROM verifications v WHERE v.execution_history_id = eh.id)
    LIMIT $2 FOR UPDATE SKIP LOCKED);

-- name: maintain-delete-approvals
-- Decided or expired approvals created before the cutoff, one batch.
DELETE FROM approvals WHERE id IN (
    SELECT id FROM approvals
    WHERE created_at < $1 AND (status <> 'pending' OR expires_at < $1)
    LIMIT $2 FOR UPDATE SKIP LOCKED);

-- name: maintain-delete-execution-requests
-- Execution claims older than the cutoff that no approval refers to, one batch.
DELETE FROM execution_requests WHERE request_id IN (
    SELECT er.request_id FROM execution_requests er
    WHERE er.claimed_at < $1
      AND NOT EXISTS (SELECT 1 FROM approvals a WHERE a.request_id = er.request_id)
      AND NOT EXISTS (SELECT 1 FROM incident_objects o WHERE o.request_id = er.request_id)
    LIMIT $2 FOR UPDATE SKIP LOCKED);

-- name: maintain-delete-incident-objects
-- Objects of decided or expired incidents opened before the cutoff, one batch.
DELETE FROM incident_objects WHERE (incident_id, target_key) IN (
    SELECT o.incident_id, o.target_key FROM incident_objects o JOIN incidents i ON i.id = o.incident_id
    WHERE i.opened_at < $1 AND i.status <> 'pending'
    LIMIT $2 FOR UPDATE OF o SKIP LOCKED);

-- name: maintain-delete-incidents
-- Decided or expired incidents opened before the cutoff whose objects are gone, one batch.
DELETE FROM incidents WHERE id IN (
    SELECT i.id FROM incidents i
    WHERE i.opened_at < $1 AND i.status <> 'pending'
      AND NOT EXISTS (SELECT 1 FROM incident_objects o WHERE o.incident_id = i.id)
    LIMIT $2 FOR UPDATE SKIP LOCKED);

-- name: maintain-delete-planned-requests
-- Stored requests older than the cutoff, one batch (a pointer to them is long handled).
DELETE FROM planned_requests WHERE request_id IN (
    SELECT request_id FROM planned_requests WHERE requested_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED);

-- name: maintain-delete-llm-requests
-- LLM cache rows older than the cutoff, one batch.
DELETE FROM llm_requests WHERE error_hash IN (
    SELECT error_hash FROM llm_requests WHERE asked_at < $1::timestamp LIMIT $2 FOR UPDATE SKIP LOCKED);

-- name: maintain-advance-occurrence-horizon
-- Before partitions are dropped: no month before the cutoff's is created or counted again (0090).
SELECT advance_error_occurrences_horizon($1::date);

-- name: maintain-prune-odd-occurrences
-- Occurrences of events whose own time was not believed, received before the horizon (0090).
SELECT prune_odd_error_occurrences();

-- name: maintain-occurrence-partitions
-- error_occurrences partitions with their bounds (the upper bound decides expiry).
SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'error_occurrences'::regclass
ORDER BY c.relname;

-- name: maintain-delete-unexecuted-solutions
-- Solutions that never ran, of errors last seen before the cutoff, one batch: nothing was
-- learned from them. Solutions that ran keep their row, and so their error's row.
DELETE FROM solutions WHERE id IN (
    SELECT s.id FROM solutions s
    JOIN error_logs el ON el.hash_signature = s.error_hash
    WHERE COALESCE(el.last_seen_at, el.created_at) < $1
      AND COALESCE(s.execution_count, 0) = 0
      AND NOT EXISTS (SELECT 1 FROM execution_history eh WHERE eh.solution_id = s.id)
      AND NOT EXISTS (SELECT 1 FROM verifications v WHERE v.solution_id = s.id)
    LIMIT $2 FOR UPDATE OF s SKIP LOCKED);

-- name: maintain-delete-error-logs
-- Errors last seen before the cutoff that no solution or run refers to, one batch.
DELETE FROM error_logs WHERE id IN (
    SELECT el.id FROM error_logs el
    WHERE COALESCE(el.last_seen_at, el.created_at) < $1
      AND NOT EXISTS (SELECT 1 FROM solutions s WHERE s.error_hash = el.hash_signature)
      AND NOT EXISTS (SELECT 1 FROM execution_history eh WHERE eh.error_log_id = el.id)
    LIMIT $2 FOR UPDATE SKIP LOCKED);

-- name: maintain-delete-error-templates
-- Token arrays of errors the retention deleted, not updated since the cutoff, one batch.
DELETE FROM error_templates WHERE hash_signature IN (
    SELECT t.hash_signature FROM error_templates t
    WHERE t.updated_at < $1
      AND NOT EXISTS (SELECT 1 FROM error_logs e WHERE e.hash_signature = t.hash_signature)
    LIMIT $2 FOR UPDATE SKIP LOCKED);

-- name: maintain-delete-error-aliases
-- Aliases whose member and canonical rows are both gone (a split's pin included), one batch.
DELETE FROM error_aliases WHERE from_hash IN (
    SELECT a.from_hash FROM error_aliases a
    WHERE a.updated_at < $1
      AND NOT EXISTS (SELECT 1 FROM error_logs e WHERE e.hash_signature = a.to_hash)
      AND NOT EXISTS (SELECT 1 FROM error_logs e WHERE e.hash_signature = a.from_hash)
    LIMIT $2 FOR UPDATE SKIP LOCKED);

-- name: maintain-delete-backfill-cursors
-- Finished backfill cursors older than the cutoff, one batch.
DELETE FROM backfill_cursors WHERE id IN (
    SELECT id FROM backfill_cursors WHERE completed_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED);

-- name: backfill-cursor-get
-- The cursor of one backfill (index pattern, since, until, query), creating it if new.
INSERT INTO backfill_cursors (index_pattern, since, until, query)
VALUES ($1, $2, $3, $4)
ON CONFLICT (index_pattern, since, until, query) DO UPDATE SET updated_at = NOW()
RETURNING id, last_timestamp, last_ids, docs_published, total_hits, completed_at;

-- name: backfill-cursor-save
-- After a page was published: where the next page starts.
UPDATE backfill_cursors
SET last_timestamp = $2, last_ids = $3, docs_published = $4, total_hits = $5, updated_at = NOW()
WHERE id = $1;

-- name: backfill-cursor-complete
-- The backfill reached its end.
UPDATE backfill_cursors SET completed_at = NOW(), updated_at = NOW() WHERE id = $1;

-- name: backfill-cursor-restart
-- `backfill-es --restart`: forget where a backfill was.
UPDATE backfill_cursors
SET last_timestamp = NULL, last_ids = '{}', docs_published = 0, completed_at = NULL, updated_at = NOW()
WHERE id = $1;

-- name: patterns-all
-- Every error pattern in match order, disabled ones included.
SELECT id, pattern_name, pattern_regex, error_category, priority, auto_resolve, created_at, disabled_at,
       fingerprint_fields, updated_by, updated_at
FROM error_patterns
ORDER BY COALESCE(priority, 5), id;

-- name: patterns-add
-- A new error pattern, added by $6 (the audit log's trigger records it).
INSERT INTO error_patterns (pattern_name, pattern_regex, error_category, priority, auto_resolve, updated_by, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, LOCALTIMESTAMP) RETURNING id;

-- name: patterns-set-disabled
-- Disable ($2 = true) or enable a pattern, as $3; returns its name.
UPDATE error_patterns SET disabled_at = CASE WHEN $2 THEN COALESCE(disabled_at, NOW()) END,
                          updated_by = $3, updated_at = LOCALTIMESTAMP
WHERE id = $1 RETURNING pattern_name;

-- name: patterns-set-auto-resolve
-- Allow ($2 = true) or forbid automatic remediation of a pattern's errors, as $3; returns its name.
UPDATE error_patterns SET auto_resolve = $2, updated_by = $3, updated_at = LOCALTIMESTAMP
WHERE id = $1 RETURNING pattern_name;

-- name: solutions-all
-- Solutions with their learned rates, best first.
SELECT s.id, s.error_hash, el.error_type, s.solution_type, s.source, s.success_rate,
       s.execution_count, s.last_success_at, s.tripped_at, s.solution_description
FROM solutions s
LEFT JOIN error_logs el ON el.hash_signature = s.error_hash
ORDER BY s.success_rate DESC NULLS LAST, s.execution_count DESC NULLS LAST, s.id;

-- name: maintain-record-retention
-- The owner's retention, which the partition functions hold other roles to (0080).
UPDATE retention_policy SET retention_days = $1, updated_at = LOCALTIMESTAMP WHERE retention_days <> $1;
