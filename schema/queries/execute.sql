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
INSERT INTO execution_requests (request_id, hash_signature, solution_id, error_log_id, claimed_by, claimed_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (request_id) DO NOTHING
RETURNING request_id;

-- name: lock-solution-hash
-- Serialises every decision about one solution for one error hash, across instances.
SELECT pg_advisory_xact_lock(hashtextextended($1::text || '/' || $2::int::text, 5));

-- name: solution-state
-- What the breaker needs; NULL row when the solution does not exist.
SELECT id, source, consecutive_failures, tripped_at, approved_success_count
FROM solutions WHERE id = $1;

-- name: solution-history
-- The recent runs of a solution, attached to approvals the breaker asks for.
SELECT id, execution_status, left(execution_output, 500) AS execution_output,
       extract(epoch FROM execution_time)::float8 AS execution_time_s, executed_at, executed_by
FROM execution_history WHERE solution_id = $1
ORDER BY id DESC LIMIT $2;

-- name: insert-decision
-- One decision that is not a run.
INSERT INTO decision_log (request_id, hash_signature, solution_id, error_log_id, decision, reason, details, decided_by, decided_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING id;

-- name: finish-request
-- A request's final state.
UPDATE execution_requests SET status = $2, outcome = $3, finished_at = $4 WHERE request_id = $1;

-- name: await-approval
-- The request waits for a person.
UPDATE execution_requests SET status = 'awaiting_approval', outcome = 'pending_approval' WHERE request_id = $1;

-- name: pending-approval-for
-- An undecided, unexpired approval for the same solution and hash (one is enough to ask).
SELECT id FROM approvals
WHERE hash_signature = $1 AND solution_id = $2 AND status = 'pending' AND expires_at > $3
ORDER BY id LIMIT 1;

-- name: insert-approval
-- A pending approval carrying the whole request.
INSERT INTO approvals (request_id, hash_signature, solution_id, request, reason, created_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING id, created_at, expires_at;

-- name: recent-slots
-- Cooldown and hourly cap, counted over the runs (or would-be runs) of this solution for this hash.
SELECT
    (SELECT max(slot_at) FROM execution_requests
      WHERE hash_signature = $1 AND solution_id = $2 AND slot = any($3::text[])) AS last_at,
    (SELECT count(*) FROM execution_requests
      WHERE hash_signature = $1 AND solution_id = $2 AND slot = any($3::text[])
        AND slot_at > $4::timestamp - interval '1 hour') AS last_hour;

-- name: take-slot
-- This request runs (live) or would run (dry_run); counted by recent-slots from now on.
UPDATE execution_requests SET slot = $2, slot_at = $3, status = $4 WHERE request_id = $1;

-- name: insert-history
-- Exactly one execution_history row per run; the document's trigger updates the solution.
INSERT INTO execution_history
    (error_log_id, solution_id, execution_status, execution_output, execution_time, executed_at, executed_by, request_id)
VALUES ($1, $2, $3, $4, make_interval(secs => $5), $6, $7, $8)
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
    (execution_history_id, hash_signature, solution_id, request_id, error_log_id, run_finished_at, window_until)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (execution_history_id) DO NOTHING;

-- name: recurred-by-request
-- A request for the same hash about an error that happened after a run, inside its window.
UPDATE verifications SET outcome = 'recurred', decided_at = $3, evidence = $4
WHERE hash_signature = $1 AND outcome = 'pending'
  AND run_finished_at < $2::timestamp AND window_until >= $2::timestamp
RETURNING execution_history_id, hash_signature, solution_id, request_id, error_log_id, evidence;

-- name: recurred-by-occurrence
-- The ingest stage saw the same hash again after the run, inside the window.
UPDATE verifications v SET outcome = 'recurred', decided_at = $1,
    evidence = CASE
        WHEN EXISTS (SELECT 1 FROM error_occurrences o
                      WHERE o.hash_signature = v.hash_signature
                        AND o.occurred_at > v.run_finished_at AND o.occurred_at <= v.window_until)
        THEN 'error_occurrences' ELSE 'error_logs.last_seen_at' END
WHERE v.outcome = 'pending'
  AND (EXISTS (SELECT 1 FROM error_occurrences o
                WHERE o.hash_signature = v.hash_signature
                  AND o.occurred_at > v.run_finished_at AND o.occurred_at <= v.window_until)
       OR EXISTS (SELECT 1 FROM error_logs e
                   WHERE e.hash_signature = v.hash_signature
                     AND e.last_seen_at > v.run_finished_at AND e.last_seen_at <= v.window_until))
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
