-- Execution stage statements (handlers/execute.py). Every timestamp is passed in as naive UTC,
-- so tests can move the clock and the guards never depend on the server's time zone.

-- name: kill-switch-get
-- The operator's kill switch row.
SELECT kill_switch, updated_by, updated_at FROM resolver_controls WHERE id;

-- name: kill-switch-set
-- Flip the kill switch; the row always exists (migration 0009 inserts it).
INSERT INTO resolver_controls (id, kill_switch, updated_by, updated_at)
VALUES (TRUE, $1, $2, $3)
ON CONFLICT (id) DO UPDATE SET kill_switch = $1, updated_by = $2, updated_at = $3
RETURNING kill_switch, updated_by, updated_at;

-- name: claim-request
-- The claim: exactly one caller gets a row back for a request id, however often it is delivered.
INSERT INTO execution_requests (request_id, hash_signature, solution_id, error_log_id, claimed_by, claimed_at,
                                target_key, namespace)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (request_id) DO NOTHING
RETURNING request_id;

-- name: solution-state
-- What the breaker needs; NULL row when the solution does not exist.
SELECT id, source, playbook_name, consecutive_failures, tripped_at, approved_success_count
FROM solutions WHERE id = $1;

-- name: solution-history
-- The recent runs of a solution, attached to approvals the breaker asks for.
SELECT id, execution_status, left(execution_output, 500) AS execution_output,
       extract(epoch FROM execution_time)::float8 AS execution_time_s, executed_at, executed_by
FROM execution_history WHERE solution_id = $1
ORDER BY id DESC LIMIT $2;

-- name: insert-decision
-- One decision that is not a run; $10 the object it is about (0070; NULL for a refused message).
INSERT INTO decision_log (request_id, hash_signature, solution_id, error_log_id, decision, reason, details, decided_by,
                          decided_at, target_key)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
RETURNING id;

-- name: finish-request
-- A request's final state.
UPDATE execution_requests SET status = $2, outcome = $3, finished_at = $4 WHERE request_id = $1;

-- name: await-approval
-- The request waits for a person.
UPDATE execution_requests SET status = 'awaiting_approval', outcome = 'pending_approval' WHERE request_id = $1;

-- name: pending-approval-for-object
-- An undecided, unexpired approval for the same object (one is enough to ask).
SELECT id FROM approvals
WHERE target_key = $1 AND status = 'pending' AND expires_at > $2
ORDER BY id LIMIT 1;

-- name: insert-approval
-- A pending approval carrying the whole request.
INSERT INTO approvals (request_id, hash_signature, solution_id, request, reason, created_at, expires_at, target_key)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING id, created_at, expires_at;

-- name: recent-slots-target
-- Cooldown and hourly cap of one object: every run (or would-be run) on it, whatever error,
-- solution or executor copy took the slot.
SELECT max(slot_at) AS last_at,
       count(*) FILTER (WHERE slot_at > $3::timestamp - interval '1 hour') AS last_hour
FROM execution_requests
WHERE target_key = $1 AND slot = any($2::text[]);

-- name: fleet-slots
-- The fleet budget: actions taken since $2, overall and in namespace $3.
SELECT count(*) AS total, count(*) FILTER (WHERE namespace = $3) AS namespace
FROM execution_requests
WHERE slot = any($1::text[]) AND slot_at > $2;

-- name: lock-object
-- Serialises every decision about one object, across executor copies.
SELECT pg_advisory_xact_lock(hashtextextended($1::text, 11));

-- name: lock-fleet
-- Serialises the fleet-wide checks (systemic hold, fleet budget).
SELECT pg_advisory_xact_lock(hashtextextended('elk-resolver fleet budget', 11));

-- name: systemic-demand
-- Distinct objects that needed this kind of action since $2 (history excluded): a request, or
-- a repeat folded into one (migration 0060).
SELECT count(DISTINCT target_key) FROM (
    SELECT target_key FROM planned_requests
    WHERE action = $1 AND requested_at > $2 AND NOT history AND target_key IS NOT NULL
    UNION ALL
    SELECT target_key FROM planned_requests
    WHERE action = $1 AND last_repeat_seen_at > $2 AND NOT history AND target_key IS NOT NULL
) needing;

-- name: hold-repeats
-- Until when repeats are folded into this decided request (migration 0060); a request deferred
-- for the grace period is decided now (0120).
UPDATE planned_requests SET open_until = $2, deferred_until = NULL WHERE request_id = $1;

-- name: planned-request
-- The request the analysis stage stored.
SELECT request_id, request, digest FROM planned_requests WHERE request_id = $1;

-- name: pattern-state
-- The pattern as it is now (auto_resolve and disabled are read at decision time).
SELECT id, auto_resolve, disabled_at FROM error_patterns WHERE id = $1;

-- name: pattern-of-error
-- The pattern stored with an error (error_logs.pattern_id) as it is now: what the execute stage
-- judges, whatever pattern a request names. id NULL: no pattern (or none stored).
SELECT p.id, p.pattern_name, p.auto_resolve, p.disabled_at
FROM error_logs e LEFT JOIN error_patterns p ON p.id = e.pattern_id
WHERE e.id = $1;

-- name: playbook-control-get
-- Whether `playbooks disable` switched a playbook off.
SELECT playbook_name, disabled_at, updated_by, updated_at FROM playbook_controls WHERE playbook_name = $1;

-- name: playbook-control-set
-- Disable ($2 = a timestamp) or enable ($2 NULL) a playbook for every executor copy.
INSERT INTO playbook_controls (playbook_name, disabled_at, updated_by, updated_at)
VALUES ($1, $2, $3, $4)
ON CONFLICT (playbook_name) DO UPDATE SET disabled_at = $2, updated_by = $3, updated_at = $4
RETURNING playbook_name, disabled_at, updated_by, updated_at;

-- name: playbook-controls
-- Every playbook switch.
SELECT playbook_name, disabled_at, updated_by, updated_at FROM playbook_controls ORDER BY playbook_name;

-- name: approver-of-waiting-request
-- Who approved a request that waits for a person (an approval or an incident object); NULL when
-- it is not waiting or nobody approved it.
SELECT coalesce(
    (SELECT a.decided_by FROM approvals a WHERE a.request_id = r.request_id AND a.status = 'approved'),
    (SELECT o.decided_by FROM incident_objects o WHERE o.request_id = r.request_id AND o.status = 'approved'))
FROM execution_requests r
WHERE r.request_id = $1 AND r.status = 'awaiting_approval';

-- name: approved-waiting
-- Approved requests the execute stage has not started since $1 (the pointer was lost).
SELECT p.request FROM execution_requests r JOIN planned_requests p USING (request_id)
WHERE r.status = 'awaiting_approval'
  AND (EXISTS (SELECT 1 FROM approvals a WHERE a.request_id = r.request_id AND a.status = 'approved' AND a.decided_at <= $1)
       OR EXISTS (SELECT 1 FROM incident_objects o WHERE o.request_id = r.request_id AND o.status = 'approved'
                  AND o.decided_at <= $1))
ORDER BY r.claimed_at LIMIT 100;

-- name: open-incident
-- The pending, unexpired incident for a kind of action.
SELECT id FROM incidents WHERE action = $1 AND status = 'pending' AND expires_at > $2;

-- name: expire-incident-for-action
-- A pending incident past its expiry makes way for a new one (the maintenance pass denies its objects).
UPDATE incidents SET status = 'expired', decided_by = 'auto-resolver', decided_at = $2
WHERE action = $1 AND status = 'pending' AND expires_at <= $2;

-- name: insert-incident
-- A new incident (systemic hold) for a kind of action.
INSERT INTO incidents (action, reason, opened_at, expires_at) VALUES ($1, $2, $3, $4)
RETURNING id;

-- name: add-incident-object
-- An object joins an incident once.
INSERT INTO incident_objects (incident_id, target_key, request_id, namespace, signs, added_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (incident_id, target_key) DO NOTHING
RETURNING target_key;

-- name: incident-get
-- One incident.
SELECT id, action, status, reason, opened_at, expires_at, decided_by, decided_at FROM incidents WHERE id = $1;

-- name: incident-objects
-- The objects of an incident, in the order they were held.
SELECT target_key, request_id, namespace, signs, status, decided_by, added_at
FROM incident_objects WHERE incident_id = $1 ORDER BY added_at, target_key;

-- name: incident-decide
-- Decide a pending, unexpired incident; no row back means decided already, or expired.
UPDATE incidents SET status = 'decided', decided_by = $2, decided_at = $3
WHERE id = $1 AND status = 'pending' AND expires_at > $3
RETURNING id;

-- name: incident-object-decide
-- One object's fate in a decided incident.
UPDATE incident_objects SET status = $3, decided_by = $4, decided_at = $5
WHERE incident_id = $1 AND target_key = $2;

-- name: incidents-list
-- Incidents, newest first; $1 NULL lists every status.
SELECT id, action, status, reason, opened_at, expires_at, decided_by, decided_at
FROM incidents WHERE ($1::text IS NULL OR status = $1) ORDER BY id DESC LIMIT $2;

-- name: incidents-expire
-- Undecided incidents past their expiry (their objects are denied), including those a newer
-- incident already replaced.
UPDATE incidents i SET status = 'expired', decided_by = coalesce(decided_by, 'auto-resolver'), decided_at = coalesce(decided_at, $1)
WHERE (status = 'pending' AND expires_at <= $1)
   OR (status = 'expired' AND EXISTS (SELECT 1 FROM incident_objects o WHERE o.incident_id = i.id AND o.status = 'held'))
RETURNING id, expires_at;

-- name: lost-runs
-- Live runs that took their slot before $1 and never recorded an outcome (the reaper).
SELECT r.request_id, r.hash_signature, r.solution_id, r.error_log_id, r.claimed_by, r.slot_at,
       EXISTS (SELECT 1 FROM planned_requests p WHERE p.request_id = r.request_id) AS planned
FROM execution_requests r
WHERE r.status = 'running' AND r.slot = 'live' AND r.slot_at < $1
  AND NOT EXISTS (SELECT 1 FROM execution_history h WHERE h.request_id = r.request_id)
ORDER BY r.slot_at
FOR UPDATE OF r SKIP LOCKED;

-- name: monitor-lost-runs
-- What the monitor reports: runs recorded lost in the last day, live runs older than $1 seconds
-- with no outcome yet (the reaper's next pass records them), and the newest lost run's reason.
SELECT (SELECT count(*) FROM decision_log WHERE decision = 'lost'
         AND decided_at > (NOW() AT TIME ZONE 'UTC') - interval '1 day') AS lost,
       (SELECT count(*) FROM execution_requests WHERE status = 'running' AND slot = 'live'
         AND slot_at < (NOW() AT TIME ZONE 'UTC') - make_interval(secs => $1::float8)) AS overdue,
       (SELECT reason FROM decision_log WHERE decision = 'lost' ORDER BY id DESC LIMIT 1) AS last_reason;

-- name: take-slot
-- This request runs (live) or would run (dry_run); counted by recent-slots from now on.
UPDATE execution_requests SET slot = $2, slot_at = $3, status = $4 WHERE request_id = $1;

-- name: insert-history
-- Exactly one execution_history row per run; the document's trigger updates the solution.
INSERT INTO execution_history
    (error_log_id, solution_id, execution_status, execution_output, execution_time, executed_at, executed_by, request_id,
     target_key, target)
VALUES ($1, $2, $3, $4, make_interval(secs => $5), $6, $7, $8, $9, $10)
ON CONFLICT (request_id) DO NOTHING
RETURNING id;

-- name: history-id-for-request
-- The row an earlier attempt already wrote (its commit succeeded, its answer was lost).
SELECT id FROM execution_history WHERE request_id = $1;

-- name: solution-after-run
-- Breaker bookkeeping after a run. A failure counts towards the breaker; an exit-0 run waits for
-- its verification, except that a person-approved success closes the breaker (0006's rule).
UPDATE solutions SET
    consecutive_failures = CASE
        WHEN $2 THEN consecutive_failures + 1
        WHEN $3 THEN 0
        ELSE consecutive_failures END,
    tripped_at = CASE
        WHEN $2 AND tripped_at IS NULL AND consecutive_failures + 1 >= $4 THEN $5::timestamp
        WHEN NOT $2 AND $3 THEN NULL
        ELSE tripped_at END,
    approved_success_count = approved_success_count + CASE WHEN NOT $2 AND $3 THEN 1 ELSE 0 END
WHERE id = $1
RETURNING consecutive_failures, tripped_at, approved_success_count;

-- name: insert-verification
-- Watch the hash after a successful run.
INSERT INTO verifications
    (execution_history_id, hash_signature, solution_id, request_id, error_log_id, run_finished_at, window_until,
     target_key, action)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (execution_history_id) DO NOTHING;

-- name: recurred-by-request
-- A request about the same object ($5) after a run, inside its window: the object needs an
-- action again (the same one, or another: a rollback after a restart), so the run did not help.
-- Runs recorded before objects were bound (target_key NULL) go by the hash ($1).
UPDATE verifications SET outcome = 'recurred', decided_at = $3, evidence = $4
WHERE outcome = 'pending'
  AND ((target_key IS NOT NULL AND target_key = $5)
       OR (target_key IS NULL AND hash_signature = $1))
  AND run_finished_at < $2::timestamp AND window_until >= $2::timestamp
RETURNING execution_history_id, hash_signature, solution_id, request_id, error_log_id, evidence;

-- name: recurred-by-occurrence
-- The same object needed an action again after the run, inside the window (a stored request
-- about it); for runs from before objects were bound, the ingest stage saw the
-- same hash again.
UPDATE verifications v SET outcome = 'recurred', decided_at = $1,
    evidence = CASE
        WHEN v.target_key IS NOT NULL THEN 'planned_requests: the object needed the action again'
        WHEN EXISTS (SELECT 1 FROM error_occurrences o
                      WHERE o.hash_signature = v.hash_signature
                        AND o.occurred_at > v.run_finished_at AND o.occurred_at <= v.window_until)
        THEN 'error_occurrences' ELSE 'error_logs.last_seen_at' END
WHERE v.outcome = 'pending'
  AND ((v.target_key IS NOT NULL
        AND (EXISTS (SELECT 1 FROM planned_requests p
                      WHERE p.target_key = v.target_key
                        AND p.event_time > v.run_finished_at AND p.event_time <= v.window_until)
             -- a repeat folded into a request (migration 0060): its newest event time
             OR EXISTS (SELECT 1 FROM planned_requests p
                         WHERE p.target_key = v.target_key
                           AND p.last_repeat_event_at > v.run_finished_at
                           AND p.last_repeat_event_at <= v.window_until)))
    OR (v.target_key IS NULL
        AND (EXISTS (SELECT 1 FROM error_occurrences o
                      WHERE o.hash_signature = v.hash_signature
                        AND o.occurred_at > v.run_finished_at AND o.occurred_at <= v.window_until)
             OR EXISTS (SELECT 1 FROM error_logs e
                         WHERE e.hash_signature = v.hash_signature
                           AND e.last_seen_at > v.run_finished_at AND e.last_seen_at <= v.window_until))))
RETURNING execution_history_id, hash_signature, solution_id, request_id, error_log_id, evidence;

-- name: resolve-verifications
-- Windows that passed in silence.
UPDATE verifications SET outcome = 'resolved', decided_at = $1, evidence = 'no recurrence within the window'
WHERE outcome = 'pending' AND window_until <= $1
RETURNING execution_history_id, hash_signature, solution_id, request_id, error_log_id, evidence;

-- name: solution-verified
-- Verified counts, and the breaker: a recurrence is a failure; a resolution of the latest run
-- ends the failure streak (a resolution of an older run does not hide newer failures).
UPDATE solutions s SET
    verified_run_count = verified_run_count + 1,
    verified_success_count = verified_success_count + CASE WHEN $2 THEN 1 ELSE 0 END,
    verified_success_rate = round((verified_success_count + CASE WHEN $2 THEN 1 ELSE 0 END) * 100.0
                                  / (verified_run_count + 1), 2),
    consecutive_failures = CASE
        WHEN NOT $2 THEN consecutive_failures + 1
        WHEN NOT EXISTS (SELECT 1 FROM execution_history h WHERE h.solution_id = s.id AND h.id > $3) THEN 0
        ELSE consecutive_failures END,
    tripped_at = CASE
        WHEN NOT $2 AND tripped_at IS NULL AND consecutive_failures + 1 >= $4 THEN $5::timestamp
        ELSE tripped_at END
WHERE id = $1
RETURNING consecutive_failures, tripped_at, verified_success_rate;

-- name: approvals-list
-- Approvals, newest first; $1 NULL lists every status.
SELECT id, request_id, hash_signature, solution_id, status, reason, decided_by, created_at, expires_at, decided_at, request
FROM approvals WHERE ($1::text IS NULL OR status = $1)
ORDER BY id DESC LIMIT $2;

-- name: approval-get
-- One approval.
SELECT id, request_id, hash_signature, solution_id, status, reason, decided_by, created_at, expires_at, decided_at, request
FROM approvals WHERE id = $1;

-- name: approval-decide
-- Decide a pending, unexpired approval; no row back means someone else decided it, or it expired.
UPDATE approvals SET status = $2, decided_by = $3, decided_at = $4, reason = coalesce($5, reason)
WHERE id = $1 AND status = 'pending' AND expires_at > $4
RETURNING id, request_id, hash_signature, solution_id, status, reason, decided_by, created_at, expires_at, decided_at, request;

-- name: approvals-expire
-- Undecided approvals past their expiry are denied.
UPDATE approvals SET status = 'expired', decided_by = 'auto-resolver', decided_at = $1
WHERE status = 'pending' AND expires_at <= $1
RETURNING id, request_id, hash_signature, solution_id, status, reason, decided_by, created_at, expires_at, decided_at, request;

-- name: start-approved-run
-- The approved request moves from waiting to running (only once).
UPDATE execution_requests SET status = $2 WHERE request_id = $1 AND status = 'awaiting_approval'
RETURNING request_id;

-- name: newest-error-of-object
-- The newest live error event about an object ($1: its keys, the bound object and the object the
-- event came from): what ingest stored about the analysis events it published (0071) and the
-- repeats folded into requests bound to it (0060). Has it stopped by itself?
SELECT greatest(
    (SELECT max(occurred_at) FROM analysis_triggers WHERE subject = any($1::text[]) AND history IS NULL),
    (SELECT max(coalesce(last_repeat_event_at, event_time)) FROM planned_requests
      WHERE target_key = any($1::text[]) AND NOT history)) AS newest;

-- name: dependency-outages
-- The host:port dependencies an object's live errors named since $2 that at least $3 services
-- name (a dependency outage), with every service naming each (0071).
SELECT d.dependency, array_agg(DISTINCT s.subject ORDER BY s.subject) AS services
FROM (SELECT DISTINCT dependency FROM analysis_triggers
      WHERE subject = $1 AND occurred_at > $2 AND dependency IS NOT NULL AND history IS NULL) d
JOIN analysis_triggers s ON s.dependency = d.dependency AND s.occurred_at > $2 AND s.history IS NULL
                        AND s.subject IS NOT NULL
GROUP BY d.dependency
HAVING count(DISTINCT s.subject) >= $3;

-- name: dependency-services
-- Every service whose live errors named dependency $1 since $2 (0071).
SELECT array_agg(DISTINCT subject ORDER BY subject) AS services
FROM analysis_triggers WHERE dependency = $1 AND occurred_at > $2 AND history IS NULL AND subject IS NOT NULL;

-- name: node-only-objects
-- The objects whose live errors since $2 all came from node $1 (a node going bad: they fail
-- there and nowhere else), from what ingest stored (0071).
WITH here AS (
    SELECT DISTINCT subject FROM analysis_triggers
    WHERE context->>'host' = $1 AND occurred_at > $2 AND history IS NULL AND subject IS NOT NULL
)
SELECT coalesce(array_agg(h.subject ORDER BY h.subject), '{}') AS objects FROM here h
WHERE NOT EXISTS (SELECT 1 FROM analysis_triggers t
                  WHERE t.subject = h.subject AND t.occurred_at > $2 AND t.history IS NULL
                    AND t.context->>'host' IS DISTINCT FROM $1);

-- name: object-recurred
-- The newest run on object $1 whose error came back on it (verification 'recurred') since $2.
SELECT v.execution_history_id, v.evidence, v.action, h.executed_at, h.executed_by
FROM verifications v JOIN execution_history h ON h.id = v.execution_history_id
WHERE v.target_key = $1 AND v.outcome = 'recurred' AND v.decided_at > $2
ORDER BY v.decided_at DESC LIMIT 1;

-- name: object-history
-- The recent runs on an object, with how each was verified, attached to what a person decides.
SELECT h.id, h.execution_status, left(h.execution_output, 500) AS execution_output,
       extract(epoch FROM h.execution_time)::float8 AS execution_time_s, h.executed_at, h.executed_by,
       v.outcome AS verified, v.evidence
FROM execution_history h LEFT JOIN verifications v ON v.execution_history_id = h.id
WHERE h.target_key = $1
ORDER BY h.id DESC LIMIT $2;

-- name: requests-for-object
-- A live request bound to object $1 since $2 (the newest), if any.
SELECT request_id FROM planned_requests
WHERE target_key = $1 AND requested_at > $2 AND NOT history
ORDER BY requested_at DESC LIMIT 1;
