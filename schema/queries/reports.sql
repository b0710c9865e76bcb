-- The design document's four example queries, unchanged, and the dry runs beside them.

-- name: report-error-stats
-- Error statistics by type over the last 7 days.
SELECT 
    error_type,
    COUNT(*) as total_errors,
    COUNT(DISTINCT DATE(created_at)) as days_occurred
FROM error_logs 
WHERE created_at >= NOW() - INTERVAL '7 days'
GROUP BY error_type
ORDER BY total_errors DESC;

-- name: report-solution-ranking
-- Solution success-rate ranking.
SELECT 
    solution_type,
    AVG(success_rate) as avg_success_rate,
    SUM(execution_count) as total_executions
FROM solutions 
WHERE execution_count > 0
GROUP BY solution_type
ORDER BY avg_success_rate DESC;

-- name: report-recent-executions
-- Executions in the last 24 hours.
SELECT 
    el.error_type,
    s.solution_type,
    eh.execution_status,
    eh.execution_time,
    eh.executed_at
FROM execution_history eh
JOIN error_logs el ON eh.error_log_id = el.id
JOIN solutions s ON eh.solution_id = s.id
WHERE eh.executed_at >= NOW() - INTERVAL '24 hours'
ORDER BY eh.executed_at DESC;

-- name: report-recent-dry-runs
-- Not one of the document's queries: in dry-run mode (the default) the execute stage records
-- what it would have run in decision_log and runs nothing, so the executions above stay empty.
-- These are those dry runs of the last 24 hours, marked as such.
SELECT
    el.error_type,
    s.solution_type,
    'dry_run (nothing ran)' AS execution_status,
    p.target_key AS object,
    coalesce(d.decided_by, 'auto-resolver') AS decided_by,
    d.decided_at
FROM decision_log d
LEFT JOIN error_logs el ON el.id = d.error_log_id
LEFT JOIN solutions s ON s.id = d.solution_id
LEFT JOIN planned_requests p ON p.request_id = d.request_id
WHERE d.decision = 'dry_run' AND d.decided_at >= LOCALTIMESTAMP - INTERVAL '24 hours'
ORDER BY d.decided_at DESC
LIMIT 200;

-- name: report-system-status
-- System status dashboard, worst first.
SELECT 
    component_name,
    status,
    error_count,
    last_check,
    EXTRACT(EPOCH FROM (NOW() - last_check)) as seconds_since_check
FROM system_status
ORDER BY 
    CASE status 
        WHEN 'error' THEN 1 
        WHEN 'warning' THEN 2 
        ELSE 3 
    END,
    error_count DESC;
