-- Error states, owners and notes (migration 0130): what people say about an error. Each change
-- is recorded in audit_log by the tables' triggers.

-- name: error-state-set
-- Give error $1 the state $2 (snoozed until $3) as $4; returns the row, or nothing when the
-- error does not exist. The occurrence count at this moment is what a recurrence is judged by.
INSERT INTO error_states (error_log_id, state, snoozed_until, changed_by, changed_at, occurrences_at_change)
SELECT el.id, $2, $3, $4, LOCALTIMESTAMP, el.occurrence_count FROM error_logs el WHERE el.id = $1
ON CONFLICT (error_log_id) DO UPDATE SET
    state = EXCLUDED.state, snoozed_until = EXCLUDED.snoozed_until, changed_by = EXCLUDED.changed_by,
    changed_at = EXCLUDED.changed_at, occurrences_at_change = EXCLUDED.occurrences_at_change,
    reopened_at = NULL, reopen_reason = NULL
RETURNING error_log_id, state, snoozed_until, changed_by, changed_at;

-- name: error-owner-set
-- Make $2 the owner of error $1 (NULL: nobody), as $3; the state stays as it is.
INSERT INTO error_states (error_log_id, owner, owner_set_by, owner_set_at, changed_by, changed_at, occurrences_at_change)
SELECT el.id, $2, $3, LOCALTIMESTAMP, $3, LOCALTIMESTAMP, el.occurrence_count FROM error_logs el WHERE el.id = $1
ON CONFLICT (error_log_id) DO UPDATE SET
    owner = EXCLUDED.owner, owner_set_by = EXCLUDED.owner_set_by, owner_set_at = EXCLUDED.owner_set_at
RETURNING error_log_id, owner;

-- name: error-note-add
-- A note on error $1 by $2.
INSERT INTO error_notes (error_log_id, author, body)
SELECT el.id, $2, $3 FROM error_logs el WHERE el.id = $1
RETURNING id, created_at;

-- name: error-notes
-- An error's notes, oldest first.
SELECT id, author, body, created_at FROM error_notes WHERE error_log_id = $1 ORDER BY id LIMIT 200;

-- name: error-states-reopen-due
-- The monitor's pass: a resolved error that occurred again, or a snooze that ended, is open
-- again, recorded once as the service's decision (with why). Returns what it reopened.
UPDATE error_states s SET
    state = 'open', snoozed_until = NULL, changed_by = 'service', changed_at = LOCALTIMESTAMP,
    occurrences_at_change = e.occurrence_count, reopened_at = LOCALTIMESTAMP,
    reopen_reason = CASE WHEN s.state = 'resolved'
        THEN format('reopened: %s new occurrence(s) since %s resolved it', e.occurrence_count - s.occurrences_at_change,
                    s.changed_by)
        ELSE format('reopened: the snooze %s set ended at %s', s.changed_by,
                    to_char(s.snoozed_until, 'YYYY-MM-DD HH24:MI:SS')) END
FROM error_logs e
WHERE e.id = s.error_log_id
  AND ((s.state = 'resolved' AND e.occurrence_count > s.occurrences_at_change)
       OR (s.state = 'snoozed' AND s.snoozed_until <= LOCALTIMESTAMP))
RETURNING s.error_log_id, s.reopen_reason;

-- name: error-silenced
-- Whether messages about error $1 are held back now: muted, or snoozed and the snooze stands.
SELECT EXISTS (SELECT 1 FROM error_state_now WHERE error_log_id = $1 AND state IN ('muted', 'snoozed'));

-- name: error-type-of
-- Two errors' ids, types and messages (an operator's merge says what it merges).
SELECT id, error_type, left(error_message, 120) AS error_message, hash_signature, occurrence_count
FROM error_logs WHERE id = any($1::int[]);

-- name: error-objects
-- The objects an error's requests were bound to, most recently requested first.
SELECT target_key, max(requested_at) AS last_requested
FROM planned_requests
WHERE hash_signature = $1 AND target_key IS NOT NULL
GROUP BY target_key ORDER BY last_requested DESC LIMIT $2;

-- name: error-latest-requests
-- An error's newest stored requests (the commands as rendered for their object), newest first.
SELECT request_id, solution_id, target_key, request, requested_at
FROM planned_requests
WHERE hash_signature = $1
ORDER BY requested_at DESC LIMIT $2;
