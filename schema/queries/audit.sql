-- The audit trail (migration 0130's view): every decision a person or the service made.

-- name: audit-page
-- One page, newest first. Filters (NULL: any): $1 the person (exact, any case; 'service' for
-- the stages), $2 an object (part of its name, or error:ID), $3 from, $4 until, $5 people only.
SELECT key, at, actor, by_person, action, object, error_log_id, details
FROM audit_trail
WHERE ($1::text IS NULL OR lower(actor) = lower($1))
  AND ($2::text IS NULL OR object ILIKE '%' || $2 || '%' OR 'error:' || error_log_id = $2)
  AND ($3::timestamp IS NULL OR at >= $3)
  AND ($4::timestamp IS NULL OR at < $4)
  AND (NOT $5::boolean OR by_person)
ORDER BY at DESC, key DESC
LIMIT $6 OFFSET $7;

-- name: audit-count
-- How many entries the same filters match.
SELECT COUNT(*) FROM audit_trail
WHERE ($1::text IS NULL OR lower(actor) = lower($1))
  AND ($2::text IS NULL OR object ILIKE '%' || $2 || '%' OR 'error:' || error_log_id = $2)
  AND ($3::timestamp IS NULL OR at >= $3)
  AND ($4::timestamp IS NULL OR at < $4)
  AND (NOT $5::boolean OR by_person);

-- name: audit-actors
-- The people (and the service) the audit trail names, for the filter.
SELECT DISTINCT actor FROM audit_log
UNION SELECT DISTINCT decided_by FROM decision_log WHERE decided_by IS NOT NULL AND decided_by NOT IN ('auto-resolver', 'auto')
UNION SELECT 'service'
ORDER BY 1 LIMIT 200;

-- name: console-changes
-- A fingerprint of what the console's lists show: it changes when an error is seen, a decision
-- or run is recorded, an approval or incident is created or decided, a state or switch changes
-- or the monitor checks (each a max over an index or a small table). Live refresh polls it and
-- reloads a list only when it moved.
SELECT concat_ws(':',
    (SELECT max(occurred_at)::text FROM error_occurrences),
    (SELECT max(id) FROM error_logs),
    (SELECT max(id) FROM decision_log),
    (SELECT max(id) FROM execution_history),
    (SELECT max(id) FROM approvals),
    (SELECT max(decided_at)::text FROM approvals),
    (SELECT max(id) FROM incidents),
    (SELECT max(decided_at)::text FROM incidents),
    (SELECT max(id) FROM audit_log),
    (SELECT max(last_check)::text FROM system_status));
