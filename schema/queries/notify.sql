-- Statements of the notifier (elk_resolver/notify): the outbox and what its messages say.

-- name: notify-insert
-- One row per channel for an event; an event emitted again (redelivery, another copy) is a no-op.
INSERT INTO notifications (event_key, channel, kind, payload)
SELECT $1, c, $2, $3::jsonb FROM unnest($4::text[]) AS c
ON CONFLICT (event_key, channel) DO NOTHING;

-- name: notify-claim-lock
-- One claimer at a time across every copy, so the rate limit and the claim see one state.
SELECT pg_advisory_xact_lock(hashtext('elk_resolver_notify_claim'));

-- name: notify-due
-- Rows due for a send: pending, or claimed by a sender whose lease ran out.
SELECT id, event_key, channel, kind, payload, attempts
FROM notifications
WHERE status IN ('pending', 'sending') AND next_attempt_at <= $1
  AND (status = 'pending' OR claimed_until < $1)
ORDER BY id LIMIT $2
FOR UPDATE SKIP LOCKED;

-- name: notify-recent-by-channel
-- Messages per channel sent, or being sent, within the last minute (the rate limit).
SELECT channel, COUNT(*) AS n FROM notifications
WHERE (status = 'sent' AND sent_at > $1::timestamp - INTERVAL '1 minute') OR (status = 'sending' AND claimed_until >= $1::timestamp)
GROUP BY channel;

-- name: notify-claim
-- Take rows for sending until the lease ends.
UPDATE notifications SET status = 'sending', claimed_by = $2, claimed_until = $3, attempts = attempts + 1
WHERE id = any($1::bigint[]);

-- name: notify-sent
-- A channel accepted the message.
UPDATE notifications SET status = 'sent', sent_at = $2, last_error = NULL, claimed_until = NULL
WHERE id = $1 AND status = 'sending';

-- name: notify-retry
-- A send failed: try again at $2, or give up ($3 = 'failed').
UPDATE notifications SET status = $3, next_attempt_at = $2, last_error = $4, claimed_until = NULL
WHERE id = $1 AND status = 'sending';

-- name: notify-approval
-- What a message about an approval says: the request, the error and its counts.
SELECT a.id, a.request_id, a.hash_signature, a.solution_id, a.status, a.reason, a.decided_by,
       a.expires_at, a.request,
       el.id AS error_log_id, el.error_type, el.error_message, el.source_system, el.occurrence_count,
       s.solution_description, s.effect_acted_cases, s.effect_acted_resolved, s.effect_left_cases,
       s.effect_left_resolved, s.effect_uplift, s.effect_uplift_low, s.effect_uplift_high, s.effect_comparison
FROM approvals a
LEFT JOIN error_logs el ON el.hash_signature = a.hash_signature
LEFT JOIN solutions s ON s.id = a.solution_id
WHERE a.id = $1;

-- name: notify-run
-- What a message about a run says: its outcome, output, error and solution.
SELECT eh.id, eh.execution_status, eh.execution_output, eh.executed_by, eh.executed_at, eh.request_id,
       el.id AS error_log_id, el.hash_signature, el.error_type, el.error_message, el.source_system,
       el.occurrence_count, s.id AS solution_id, s.solution_description, s.solution_commands,
       s.consecutive_failures, s.tripped_at, v.outcome AS verification, v.evidence
FROM execution_history eh
LEFT JOIN error_logs el ON el.id = eh.error_log_id
LEFT JOIN solutions s ON s.id = eh.solution_id
LEFT JOIN verifications v ON v.execution_history_id = eh.id
WHERE eh.id = $1;

-- name: notify-solution
-- What a message about a tripped breaker says.
SELECT s.id, s.solution_description, s.solution_commands, s.consecutive_failures, s.tripped_at,
       el.id AS error_log_id, el.hash_signature, el.error_type, el.error_message, el.source_system,
       el.occurrence_count
FROM solutions s
LEFT JOIN error_logs el ON el.hash_signature = s.error_hash
WHERE s.id = $1;

-- name: notify-incident
-- What a message about a systemic hold says: the incident and its held objects' requests.
SELECT i.id, i.action, i.status, i.reason, i.opened_at, i.expires_at,
       o.target_key, o.namespace, p.request -> 'commands' AS commands,
       el.error_type, el.error_message, el.source_system, el.occurrence_count
FROM incidents i
JOIN incident_objects o ON o.incident_id = i.id
LEFT JOIN planned_requests p ON p.request_id = o.request_id
LEFT JOIN error_logs el ON el.id = p.error_log_id
WHERE i.id = $1
ORDER BY o.added_at, o.target_key;

-- name: notify-unannounced
-- Pending approvals and systemic holds no message was queued for (the stage stopped between
-- recording one and queueing its message); $1 is one configured channel.
SELECT 'approval' AS kind, a.id FROM approvals a
WHERE a.status = 'pending'
  -- muted or snoozed errors get no message: do not pick them again every sweep
  AND NOT EXISTS (SELECT 1 FROM error_logs el JOIN error_state_now st ON st.error_log_id = el.id
                  WHERE el.hash_signature = a.hash_signature AND st.state IN ('muted', 'snoozed'))
  AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.event_key = 'approval:' || a.id || ':pending' AND n.channel = $1)
UNION ALL
SELECT 'hold', i.id FROM incidents i
WHERE i.status = 'pending'
  AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.event_key = 'hold:' || i.id AND n.channel = $1)
LIMIT 50;
