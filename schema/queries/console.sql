-- Statements of the operations layer (elk_resolver/operations.py) that the console and the
-- CLI read through. Every list is paged (LIMIT/OFFSET) and ordered on an indexed column, so a
-- page costs the same with 100 errors or 100,000.

-- name: console-open-errors
-- Errors seen within the window that want attention (open or acknowledged: not resolved,
-- snoozed or muted), most recent first (one page).
SELECT el.id, el.hash_signature, el.error_type, left(el.error_message, 300) AS error_message, el.source_system,
       el.severity, el.occurrence_count, el.last_seen_at, el.created_at, el.timestamp,
       coalesce(st.state, 'open') AS state, st.owner, st.reopen_reason
FROM error_logs el
LEFT JOIN error_state_now st ON st.error_log_id = el.id
WHERE el.last_seen_at >= $1 AND coalesce(st.state, 'open') IN ('open', 'acknowledged')
ORDER BY el.last_seen_at DESC, el.id DESC
LIMIT $2;

-- name: console-open-errors-count
-- How many errors and occurrences were seen within the window.
SELECT COUNT(*) AS errors, COALESCE(SUM(occurrence_count), 0) AS occurrences
FROM error_logs WHERE last_seen_at >= $1;

-- name: console-trend
-- Occurrences per hour since $1 (all errors, or one when $2 is set).
SELECT date_trunc('hour', occurred_at) AS hour, COUNT(*) AS n
FROM error_occurrences
WHERE occurred_at >= $1 AND ($2::text IS NULL OR hash_signature = $2)
GROUP BY 1 ORDER BY 1;

-- name: console-errors
-- One page of errors, newest first; filters on type, text and state are optional. The text is
-- looked for in the message and source, and among the objects the error names
-- (error_ids_naming, migration 0130: q=logstash-0 finds the error whose event came from that pod).
SELECT el.id, el.error_type, left(el.error_message, 300) AS error_message, el.source_system, el.severity,
       el.occurrence_count, el.last_seen_at, el.created_at, el.timestamp,
       coalesce(st.state, 'open') AS state, st.owner, st.snoozed_until, st.reopen_reason
FROM error_logs el
LEFT JOIN error_state_now st ON st.error_log_id = el.id
WHERE ($1::text IS NULL OR el.error_type = $1)
  AND ($2::text IS NULL OR el.error_message ILIKE '%' || $2 || '%' OR el.source_system ILIKE '%' || $2 || '%'
       OR el.id IN (SELECT error_ids_naming($2)))
  AND ($5::text IS NULL OR coalesce(st.state, 'open') = $5)
ORDER BY el.id DESC
LIMIT $3 OFFSET $4;

-- name: console-errors-count
-- How many errors the same filters match.
SELECT COUNT(*) FROM error_logs el
LEFT JOIN error_state_now st ON st.error_log_id = el.id
WHERE ($1::text IS NULL OR el.error_type = $1)
  AND ($2::text IS NULL OR el.error_message ILIKE '%' || $2 || '%' OR el.source_system ILIKE '%' || $2 || '%'
       OR el.id IN (SELECT error_ids_naming($2)))
  AND ($3::text IS NULL OR coalesce(st.state, 'open') = $3);

-- name: console-error-types
-- Error types for the filter (the type index serves it).
SELECT DISTINCT error_type FROM error_logs ORDER BY error_type LIMIT 200;

-- name: console-error
-- One error with the pattern that classified it and its state as it stands now.
SELECT el.*, p.pattern_name, p.pattern_regex, p.error_category, p.auto_resolve AS pattern_auto_resolve,
       coalesce(st.state, 'open') AS state, st.recorded_state, st.reopen_reason, st.snoozed_until, st.owner,
       st.owner_set_by, st.owner_set_at, st.changed_by AS state_changed_by, st.changed_at AS state_changed_at
FROM error_logs el
LEFT JOIN error_patterns p ON p.id = el.pattern_id
LEFT JOIN error_state_now st ON st.error_log_id = el.id
WHERE el.id = $1;

-- name: console-error-solutions
-- The error's solutions with what they have learned.
SELECT id, solution_type, solution_description, solution_commands, source, success_rate, execution_count,
       success_count, verified_run_count, verified_success_count, verified_success_rate,
       consecutive_failures, tripped_at, last_success_at, choice_reason
FROM solutions WHERE error_hash = $1 ORDER BY id;

-- name: console-error-runs
-- The error's runs with output and its dry runs ($3: its hash), newest first.
SELECT * FROM (
    (SELECT 'run' AS kind, eh.id, eh.solution_id, eh.execution_status, eh.execution_output, eh.execution_time,
            eh.executed_at, eh.executed_by, eh.request_id, eh.target_key, NULL::jsonb AS would_run,
            v.outcome AS verification
     FROM execution_history eh LEFT JOIN verifications v ON v.execution_history_id = eh.id
     WHERE eh.error_log_id = $1 ORDER BY eh.id DESC LIMIT $2)
    UNION ALL
    (SELECT 'dry_run', d.id, d.solution_id, 'dry_run', NULL, NULL, d.decided_at, coalesce(d.decided_by, 'auto-resolver'),
            d.request_id, p.target_key, d.details -> 'would_run', NULL
     FROM decision_log d LEFT JOIN planned_requests p ON p.request_id = d.request_id
     WHERE d.hash_signature = $3 AND d.decision = 'dry_run' ORDER BY d.id DESC LIMIT $2)
) r
ORDER BY executed_at DESC, id DESC, kind
LIMIT $2;

-- name: console-error-decisions
-- The error's decisions that were not runs, newest first.
SELECT id, request_id, solution_id, decision, reason, decided_by, decided_at
FROM decision_log WHERE hash_signature = $1 ORDER BY id DESC LIMIT $2;

-- name: console-error-approvals
-- The error's approvals, newest first.
SELECT id, status, reason, decided_by, created_at, expires_at, decided_at, request
FROM approvals WHERE hash_signature = $1 ORDER BY id DESC LIMIT $2;

-- name: console-approvals
-- One page of approvals ($1 NULL: every status) with their error, newest first.
SELECT a.id, a.request_id, a.hash_signature, a.solution_id, a.status, a.reason, a.decided_by,
       a.created_at, a.expires_at, a.decided_at, a.request,
       el.id AS error_log_id, el.error_type, left(coalesce(own.message, el.error_message), 300) AS error_message,
       el.source_system, el.occurrence_count, s.solution_description, pr.request AS stored_request
FROM approvals a
LEFT JOIN error_logs el ON el.hash_signature = a.hash_signature
LEFT JOIN solutions s ON s.id = a.solution_id
LEFT JOIN planned_requests pr ON pr.request_id = a.request_id
LEFT JOIN request_messages own ON own.request_id = a.request_id  -- its own object's message (0096)
WHERE ($1::text IS NULL OR a.status = $1)
ORDER BY a.id DESC
LIMIT $2 OFFSET $3;

-- name: console-approvals-count
-- How many approvals have that status.
SELECT COUNT(*) FROM approvals WHERE ($1::text IS NULL OR status = $1);

-- name: console-runs
-- One page of runs and dry runs, newest first. $1: a run status, 'dry_run' (only dry runs:
-- what the execute stage recorded in decision_log instead of running, in the default mode),
-- or NULL for both. Each branch reads its time index (at most a page past the offset); the
-- joins run on the page only. (time, id, kind) orders every row: a run and a dry run may share
-- a time and an id, and a page must never show one of them twice or not at all.
SELECT r.kind, r.id, r.execution_status, r.execution_output, r.execution_time, r.executed_at, r.executed_by,
       r.error_log_id, r.solution_id, r.request_id, r.target_key, r.would_run,
       el.error_type, el.source_system, s.solution_description, v.outcome AS verification
FROM (
    (SELECT 'run' AS kind, eh.id, eh.execution_status, left(eh.execution_output, 2000) AS execution_output,
            eh.execution_time, eh.executed_at, eh.executed_by, eh.error_log_id, eh.solution_id, eh.request_id,
            eh.target_key, NULL::jsonb AS would_run
     FROM execution_history eh
     WHERE $1::text IS NULL OR ($1 <> 'dry_run' AND eh.execution_status = $1)
     ORDER BY eh.executed_at DESC, eh.id DESC LIMIT $2::int + $3::int)
    UNION ALL
    (SELECT 'dry_run', d.id, 'dry_run', NULL, NULL, d.decided_at, coalesce(d.decided_by, 'auto-resolver'),
            d.error_log_id, d.solution_id, d.request_id, p.target_key, d.details -> 'would_run'
     FROM decision_log d
     LEFT JOIN planned_requests p ON p.request_id = d.request_id
     WHERE d.decision = 'dry_run' AND ($1::text IS NULL OR $1 = 'dry_run')
     ORDER BY d.decided_at DESC, d.id DESC LIMIT $2::int + $3::int)
    ORDER BY executed_at DESC, id DESC, kind
    LIMIT $2 OFFSET $3
) r
LEFT JOIN error_logs el ON el.id = r.error_log_id
LEFT JOIN solutions s ON s.id = r.solution_id
LEFT JOIN verifications v ON r.kind = 'run' AND v.execution_history_id = r.id
ORDER BY r.executed_at DESC, r.id DESC, r.kind;

-- name: console-runs-count
-- How many runs and dry runs the same filter matches.
SELECT (SELECT COUNT(*) FROM execution_history
        WHERE $1::text IS NULL OR ($1 <> 'dry_run' AND execution_status = $1))
     + (SELECT COUNT(*) FROM decision_log WHERE decision = 'dry_run' AND ($1::text IS NULL OR $1 = 'dry_run'));

-- name: console-approval
-- One approval with its error, its solution and its stored request (what would run, on which
-- object: the row the execute stage loads; the approval's own copy is for requests from
-- before requests were stored).
SELECT a.id, a.request_id, a.hash_signature, a.solution_id, a.status, a.reason, a.decided_by,
       a.created_at, a.expires_at, a.decided_at, a.request,
       el.id AS error_log_id, el.error_type, coalesce(own.message, el.error_message) AS error_message,
       el.source_system, el.occurrence_count,
       el.raw_log_data, s.solution_description, s.success_rate, s.execution_count, s.consecutive_failures,
       s.tripped_at, s.solution_commands, s.playbook_name, s.id AS solution_row_id, pr.request AS stored_request
FROM approvals a
LEFT JOIN error_logs el ON el.hash_signature = a.hash_signature
LEFT JOIN solutions s ON s.id = a.solution_id
LEFT JOIN planned_requests pr ON pr.request_id = a.request_id
LEFT JOIN request_messages own ON own.request_id = a.request_id  -- its own object's message (0096)
WHERE a.id = $1;

-- name: console-request-runs
-- The run a request caused, if any.
SELECT id, execution_status, execution_output, execution_time, executed_at, executed_by
FROM execution_history WHERE request_id = $1 ORDER BY id;

-- name: console-request-decisions
-- The decisions recorded for a request.
SELECT id, decision, reason, decided_by, decided_at, details
FROM decision_log WHERE request_id = $1 ORDER BY id;

-- name: console-solution-runs
-- A solution's recent runs (what an approver weighs).
SELECT id, execution_status, executed_at, executed_by, left(execution_output, 500) AS execution_output
FROM execution_history WHERE solution_id = $1 ORDER BY id DESC LIMIT $2;

-- name: console-trend-by-hash
-- Occurrences per hour since $1 of each listed error (the hash index serves it).
SELECT hash_signature, date_trunc('hour', occurred_at) AS hour, COUNT(*) AS n
FROM error_occurrences
WHERE hash_signature = any($2::text[]) AND occurred_at >= $1
GROUP BY 1, 2;

-- name: console-incident-objects
-- A systemic hold's objects with what would run on each, their error and what came of them.
-- The message shown is the newest one this object itself sent (request_messages, 0096).
SELECT o.target_key, o.request_id, o.namespace, o.signs, o.status, o.decided_by, o.decided_at, o.added_at,
       p.request -> 'commands' AS commands, p.error_log_id, el.error_type,
       left(coalesce(own.message, el.error_message), 300) AS error_message,
       eh.id AS run_id, eh.execution_status, eh.executed_by
FROM incident_objects o
LEFT JOIN planned_requests p ON p.request_id = o.request_id
LEFT JOIN error_logs el ON el.id = p.error_log_id
LEFT JOIN request_messages own ON own.request_id = o.request_id
LEFT JOIN execution_history eh ON eh.request_id = o.request_id
WHERE o.incident_id = $1
ORDER BY o.added_at, o.target_key;

-- name: console-objects
-- The objects errors came from since $1, newest first: what the timeline pages list (0071).
SELECT subject, count(*) AS events, max(occurred_at) AS last_at, min(occurred_at) AS first_at,
       count(DISTINCT hash_signature) AS errors
FROM analysis_triggers
WHERE occurred_at > $1 AND subject IS NOT NULL
GROUP BY subject ORDER BY max(occurred_at) DESC LIMIT $2;

-- name: console-object-timeline
-- One object's timeline, newest first: the events ingest stored about it (0071), the requests
-- bound to it, the decisions naming it (0070), the runs on it and its incident holds.
SELECT * FROM (
    SELECT occurred_at AS at, 'event' AS kind, left(message, 400) AS what, NULL::text AS outcome,
           hash_signature AS ref, context->>'pod' AS pod, context->>'host' AS node, NULL::text AS by
    FROM analysis_triggers WHERE subject = $1
    UNION ALL
    SELECT requested_at, 'request', coalesce(request->'commands'->0->>'command', request->>'reason'),
           request->>'decision', request_id, NULL, NULL, NULL
    FROM planned_requests WHERE target_key = $1
    UNION ALL
    SELECT decided_at, 'decision', reason, decision, request_id, NULL, NULL, decided_by
    FROM decision_log WHERE target_key = $1
    UNION ALL
    SELECT executed_at, 'run', left(execution_output, 400), execution_status, request_id, NULL, NULL, executed_by
    FROM execution_history WHERE target_key = $1
    UNION ALL
    SELECT added_at, 'hold', 'held in incident ' || incident_id, status, request_id, NULL, NULL, decided_by
    FROM incident_objects WHERE target_key = $1
) t ORDER BY at DESC NULLS LAST LIMIT $2;
