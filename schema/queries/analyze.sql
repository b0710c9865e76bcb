-- Analysis stage: candidate solutions for a hash, new solutions, the LLM claim.

-- name: analyze-solutions-for-hash
-- Every solution known for an error hash, with the counters ranking needs.
SELECT id, error_hash, solution_type, solution_description, solution_commands,
       success_rate, execution_count, source, playbook_name, content_hash,
       approved_success_count, verified_run_count, verified_success_count,
       tripped_at, ai_analysis, ai_model, ai_confidence, choice_reason, created_at,
       n.effect_acted_cases, n.effect_left_cases, n.effect_uplift_low
FROM solutions s JOIN solution_effect_now n ON n.solution_id = s.id
WHERE error_hash = $1
ORDER BY id;

-- name: analyze-solutions-for-hashes
-- The same for every hash of a batch of analysis events, read once per batch.
SELECT id, error_hash, solution_type, solution_description, solution_commands,
       success_rate, execution_count, source, playbook_name, content_hash,
       approved_success_count, verified_run_count, verified_success_count,
       tripped_at, ai_analysis, ai_model, ai_confidence, choice_reason, created_at,
       n.effect_acted_cases, n.effect_left_cases, n.effect_uplift_low
FROM solutions s JOIN solution_effect_now n ON n.solution_id = s.id
WHERE error_hash = any($1::text[])
ORDER BY id;

-- name: analyze-insert-solution
-- A new solution; a concurrent analyzer that stored the same content first wins (no row back).
INSERT INTO solutions (
    error_hash, solution_type, solution_description, solution_commands,
    ai_analysis, ai_model, ai_confidence, source, playbook_name, content_hash
)
VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9, $10)
ON CONFLICT (error_hash, content_hash) DO NOTHING
RETURNING id;

-- name: analyze-solution-by-content
-- The solution with this content for this hash (after an insert that found a conflict).
SELECT id FROM solutions WHERE error_hash = $1 AND content_hash = $2;

-- name: analyze-set-choice-reason
-- Why the analysis stage chose this solution; written only when it changed.
UPDATE solutions SET choice_reason = $2
WHERE id = $1 AND choice_reason IS DISTINCT FROM $2;

-- name: analyze-claim-llm
-- Claim the right to ask the LLM about a hash: a row back means this caller may ask.
-- $2 is the cache TTL in seconds, $3 who asks.
INSERT INTO llm_requests AS r (error_hash, asked_at, asked_by, outcome)
VALUES ($1, NOW(), $3, 'pending')
ON CONFLICT (error_hash) DO UPDATE
    SET asked_at = NOW(), asked_by = EXCLUDED.asked_by, outcome = 'pending',
        model = NULL, detail = NULL, solution_id = NULL, finished_at = NULL
    WHERE r.asked_at < NOW() - make_interval(secs => $2::double precision)
RETURNING asked_at;

-- name: analyze-finish-llm
-- Record how the LLM call for a hash ended.
UPDATE llm_requests
SET outcome = $2, model = $3, detail = $4, solution_id = $5, finished_at = NOW()
WHERE error_hash = $1;

-- name: analyze-llm-request
-- The LLM marker of a hash (tests, diagnostics).
SELECT error_hash, asked_at, asked_by, outcome, model, detail, solution_id, finished_at
FROM llm_requests
WHERE error_hash = $1;

-- name: analyze-release-llm
-- Give a claim back when no call was made (rate limited): the hash may be asked again.
DELETE FROM llm_requests WHERE error_hash = $1 AND outcome = 'pending';

-- name: analyze-store-request
-- The request the execute stage will load (the topic only carries a pointer). A redelivered
-- analysis event replaces the row while no executor has claimed it (the newer pointer matches,
-- an older one is refused); once claimed the row is final (no row back).
INSERT INTO planned_requests AS p (
    request_id, error_log_id, hash_signature, solution_id, pattern_id, target_key, namespace,
    action, history, event_time, requested_at, request, digest
)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13)
ON CONFLICT (request_id) DO UPDATE SET
    pattern_id = EXCLUDED.pattern_id, target_key = EXCLUDED.target_key, namespace = EXCLUDED.namespace,
    action = EXCLUDED.action, history = EXCLUDED.history, event_time = EXCLUDED.event_time,
    requested_at = EXCLUDED.requested_at, request = EXCLUDED.request, digest = EXCLUDED.digest
    WHERE NOT EXISTS (SELECT 1 FROM execution_requests r WHERE r.request_id = p.request_id)
RETURNING request_id;

-- name: analyze-stored-request
-- The stored request body.
SELECT request FROM planned_requests WHERE request_id = $1;

-- name: analyze-disabled-playbooks
-- Playbooks switched off for every copy (`playbooks disable`).
SELECT playbook_name FROM playbook_controls WHERE disabled_at IS NOT NULL;

-- name: analyze-history-mark
-- Whether the occurrence that triggered an analysis event is history nobody asked to act on:
-- stored with a history mark, and no actionable occurrence of the error at or after it.
SELECT EXISTS (
    SELECT 1 FROM error_occurrences o
    JOIN error_logs e ON e.hash_signature = $3
    WHERE o.event_identity = $1 AND o.occurred_at = $2 AND o.history IS NOT NULL
      AND (e.last_actionable_at IS NULL OR e.last_actionable_at < $2)
);

-- name: analyze-fold-repeats
-- Repeats of errors on objects that have an open request (migration 0060), a batch at once:
-- each input (coalesce key $1, the request the event would create itself $2, history mark $3,
-- the records' partition $4 or NULL outside Kafka, the newest repeat's event time $5) is
-- counted on the newest request of its key when that request has the same history mark, is
-- not the input's own request (a redelivery: stored and published again), and is open:
-- decided and inside open_until, or undecided and requested after $10. The records ($6 key,
-- $7 offset, $8 new occurrences) count only when newer than the newest record counted, so a
-- redelivered record never counts twice. $9 is now. One row back per folded key.
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::bool[], $4::int[], $5::timestamp[])
        AS i(key, own_request, history, part, newest_at)
), recs AS (
    SELECT * FROM unnest($6::text[], $7::bigint[], $8::int[]) AS r(key, off, occ)
), latest AS (
    SELECT i.*, l.request_id, l.history AS stored_history, l.open_until, l.requested_at, l.repeat_partition,
           l.repeat_offset
    FROM input i
    CROSS JOIN LATERAL (
        SELECT request_id, history, open_until, requested_at, repeat_partition, repeat_offset
        FROM planned_requests p
        WHERE p.coalesce_key = i.key
        ORDER BY p.requested_at DESC
        LIMIT 1
    ) l
    WHERE l.request_id <> i.own_request AND l.history = i.history
      AND (l.open_until > $9::timestamp OR (l.open_until IS NULL AND l.requested_at > $10::timestamp))
), fresh AS (
    SELECT l.key, count(*) AS n, coalesce(sum(r.occ), 0) AS occ, max(r.off) AS top
    FROM latest l JOIN recs r ON r.key = l.key
    WHERE l.part IS NULL OR l.repeat_partition IS DISTINCT FROM l.part OR l.repeat_offset IS NULL
       OR r.off > l.repeat_offset
    GROUP BY l.key
)
UPDATE planned_requests p SET
    repeats = p.repeats + coalesce(f.n, 0),
    repeat_occurrences = p.repeat_occurrences + coalesce(f.occ, 0),
    last_repeat_event_at = CASE WHEN f.n > 0 THEN greatest(p.last_repeat_event_at, l.newest_at)
                                ELSE p.last_repeat_event_at END,
    last_repeat_seen_at = CASE WHEN f.n > 0 THEN $9::timestamp ELSE p.last_repeat_seen_at END,
    repeat_partition = coalesce(l.part, p.repeat_partition),
    repeat_offset = CASE WHEN l.part IS NULL OR f.top IS NULL THEN p.repeat_offset
                         WHEN p.repeat_partition IS DISTINCT FROM l.part THEN f.top
                         ELSE greatest(p.repeat_offset, f.top) END
FROM latest l LEFT JOIN fresh f ON f.key = l.key
WHERE p.request_id = l.request_id
RETURNING l.key, p.request_id;

-- name: analyze-open-request-window
-- A new request starts its coalesce key's window: the events folded into it in the same batch
-- ($3 repeats beyond the first, $4 their new occurrences), and the newest record counted.
UPDATE planned_requests SET
    coalesce_key = $2, repeats = $3, repeat_occurrences = $4, repeat_partition = $5, repeat_offset = $6,
    last_repeat_event_at = CASE WHEN $3 > 0 THEN $7::timestamp END,
    last_repeat_seen_at = CASE WHEN $3 > 0 THEN $8::timestamp END
WHERE request_id = $1 AND coalesce_key IS NULL;

-- name: analyze-load-triggers
-- What the database holds for a batch of analysis records (each a pointer: its trigger
-- occurrence's identity $1 and time $2): what ingest stored about the event (0071), the error
-- row of that event's hash and the error's stored pattern as it is now. No row back for a
-- trigger ingest never stored. n is the record's position (1-based).
SELECT x.n, t.hash_signature, t.message, t.context, t.source_system, t.history,
       e.id AS error_log_id, e.error_type, e.severity, e.fingerprint_template,
       p.id AS pattern_id, p.pattern_name, p.error_category, coalesce(p.priority, 5) AS priority, p.auto_resolve
FROM unnest($1::text[], $2::timestamp[]) WITH ORDINALITY AS x(i, a, n)
JOIN analysis_triggers t ON t.event_identity = x.i AND t.occurred_at = x.a
LEFT JOIN error_logs e ON e.hash_signature = t.hash_signature
LEFT JOIN error_patterns p ON p.id = e.pattern_id;

-- name: analyze-replicasets
-- The ReplicaSets (pod-template hashes) of deployment $1 (its subject key, pod name prefix $3)
-- whose pods' events ingest stored since $2 (0071): first and last event, how many; and the
-- newest run on the deployment (a restart makes a ReplicaSet of its own).
SELECT split_part(substr(context->>'pod', length($3) + 1), '-', 1) AS rs, min(occurred_at) AS first_at,
       max(occurred_at) AS last_at, count(*) AS n,
       (SELECT max(executed_at) FROM execution_history WHERE target_key = $1) AS last_run_at
FROM analysis_triggers
WHERE subject = $1 AND occurred_at > $2 AND history IS NULL AND starts_with(context->>'pod', $3)
GROUP BY 1;
