-- Did the fix help? (issue 25, migration 0120): every request's outcome, acted on or not, and
-- each action's effect against the cases left alone. Read and written by handlers/effect.py.

-- name: effect-new-outcomes
-- Every stored request gets its outcome row, once (the key makes a second insert a no-op).
INSERT INTO request_outcomes (request_id, hash_signature, error_log_id, solution_id, playbook_name, action,
                              error_type, target_key, namespace, started_at, not_acted)
SELECT p.request_id, p.hash_signature, p.error_log_id, p.solution_id, s.playbook_name, p.action,
       el.error_type, coalesce(p.target_key, p.request->>'subject'), p.namespace, p.event_time,
       CASE WHEN p.history THEN 'history' END
FROM planned_requests p
LEFT JOIN solutions s ON s.id = p.solution_id
LEFT JOIN error_logs el ON el.id = p.error_log_id
WHERE NOT EXISTS (SELECT 1 FROM request_outcomes o WHERE o.request_id = p.request_id)
ORDER BY p.requested_at
LIMIT $1
ON CONFLICT (request_id) DO NOTHING;

-- name: effect-open-cases
-- Cases still open (their error not yet judged stopped or past the horizon), oldest first.
SELECT o.request_id, o.hash_signature, o.target_key, o.started_at, o.not_acted = 'history' AS history,
       p.deferred_until
FROM request_outcomes o
LEFT JOIN planned_requests p ON p.request_id = o.request_id
WHERE o.state = 'open'
ORDER BY o.started_at
LIMIT $1;

-- name: effect-case-errors
-- When each case's error was seen on its object after the case started, up to the horizon and
-- one window past it ($5, seconds): what ingest stored about the live analysis events it
-- published (0071) and the repeats folded into requests about the object (0060).
SELECT c.request_id, t.occurred_at AS at
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamp[]) AS c(request_id, hash_signature, subject, started_at)
JOIN analysis_triggers t ON t.subject = c.subject AND t.hash_signature = c.hash_signature
 AND t.occurred_at > c.started_at AND t.occurred_at <= c.started_at + make_interval(secs => $5)
 AND t.history IS NULL
UNION ALL
SELECT c.request_id, coalesce(p.last_repeat_event_at, p.event_time)
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamp[]) AS c(request_id, hash_signature, subject, started_at)
JOIN planned_requests p ON p.target_key = c.subject AND p.hash_signature = c.hash_signature AND NOT p.history
 AND coalesce(p.last_repeat_event_at, p.event_time) > c.started_at
 AND coalesce(p.last_repeat_event_at, p.event_time) <= c.started_at + make_interval(secs => $5);

-- name: effect-case-runs
-- The runs on each case's object, whichever request made them, from $4 seconds before the case
-- started to $5 seconds after.
SELECT c.request_id, h.executed_at AS at
FROM unnest($1::text[], $2::text[], $3::timestamp[]) AS c(request_id, target_key, started_at)
JOIN execution_history h ON h.target_key = c.target_key
 AND h.executed_at >= c.started_at - make_interval(secs => $4)
 AND h.executed_at <= c.started_at + make_interval(secs => $5);

-- name: effect-case-decisions
-- Each case's own decision_log lines, the status of its approval and its trial draw.
SELECT d.request_id, d.id, d.decision, d.reason, d.decided_at
FROM decision_log d WHERE d.request_id = any($1::text[]);

-- name: effect-case-approvals
SELECT request_id, status FROM approvals WHERE request_id = any($1::text[])
UNION ALL
SELECT request_id, CASE WHEN status = 'held' THEN 'pending' ELSE status END FROM incident_objects
WHERE request_id = any($1::text[]);

-- name: effect-case-draws
SELECT request_id, arm FROM trial_draws WHERE request_id = any($1::text[]);

-- name: effect-judge
-- Each case's outcome as judged now; a case leaves 'open' once (only open rows are updated).
UPDATE request_outcomes o
SET acted = u.acted, acted_at = u.acted_at, not_acted = u.not_acted, not_acted_reason = u.reason,
    trial_arm = u.arm, state = u.state, resolved_at = u.resolved_at, resolution_s = u.resolution_s,
    judged_at = CASE WHEN u.state <> 'open' THEN $10::timestamp END
FROM unnest($1::text[], $2::boolean[], $3::timestamp[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::timestamp[], $9::float8[])
     AS u(request_id, acted, acted_at, not_acted, reason, arm, state, resolved_at, resolution_s)
WHERE o.request_id = u.request_id AND o.state = 'open';

-- name: effect-arms
-- Per scope (solution, playbook, kind of action, error type) and comparison: the judged cases
-- acted on and left alone, how many resolved, the median time to resolution, and how many
-- resolved within $1 seconds of their start (the grace period). 'trial': only cases a trial drew
-- (its observe arm left alone, its act arm acted on); 'left alone': every case, acted on or not
-- (history, undecided and still-waiting cases are not cases of either side).
WITH judged AS (
    SELECT o.*, (o.state = 'resolved') AS ok
    FROM request_outcomes o
    WHERE o.state <> 'open' AND (o.acted OR o.not_acted NOT IN ('history', 'undecided', 'grace'))
),
sides AS (
    SELECT j.*, 'left alone'::text AS comparison, j.acted AS on_acted FROM judged j
    UNION ALL
    SELECT j.*, 'trial', j.acted FROM judged j
    WHERE (j.trial_arm = 'act' AND j.acted) OR (j.trial_arm = 'observe' AND NOT j.acted)
),
scoped AS (
    SELECT 'solution'::text AS scope, solution_id::text AS key, * FROM sides WHERE solution_id IS NOT NULL
    UNION ALL SELECT 'playbook', playbook_name, * FROM sides WHERE playbook_name IS NOT NULL
    UNION ALL SELECT 'action', action, * FROM sides WHERE action IS NOT NULL
    UNION ALL SELECT 'error_type', error_type, * FROM sides WHERE error_type IS NOT NULL
)
SELECT scope, key, comparison,
       count(*) FILTER (WHERE on_acted) AS acted_cases,
       count(*) FILTER (WHERE on_acted AND ok) AS acted_resolved,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY resolution_s) FILTER (WHERE on_acted AND ok) AS acted_median_s,
       count(*) FILTER (WHERE NOT on_acted) AS left_cases,
       count(*) FILTER (WHERE NOT on_acted AND ok) AS left_resolved,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY resolution_s) FILTER (WHERE NOT on_acted AND ok) AS left_median_s,
       count(*) FILTER (WHERE ok AND resolution_s <= $1) AS in_grace,
       count(*) AS cases
FROM scoped
GROUP BY scope, key, comparison;

-- name: effect-store
-- The figures of every scope, replaced as a whole.
INSERT INTO action_effects (scope, key, comparison, acted_cases, acted_resolved, acted_median_s, left_cases,
                            left_resolved, left_median_s, uplift, uplift_low, uplift_high, resolved_in_grace,
                            updated_at, preferred)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::int[], $6::float8[], $7::int[], $8::int[],
                     $9::float8[], $10::float8[], $11::float8[], $12::float8[], $13::float8[], $14::timestamp[],
                     $15::boolean[])
ON CONFLICT (scope, key, comparison) DO UPDATE SET
    acted_cases = excluded.acted_cases, acted_resolved = excluded.acted_resolved,
    acted_median_s = excluded.acted_median_s, left_cases = excluded.left_cases,
    left_resolved = excluded.left_resolved, left_median_s = excluded.left_median_s, uplift = excluded.uplift,
    uplift_low = excluded.uplift_low, uplift_high = excluded.uplift_high,
    resolved_in_grace = excluded.resolved_in_grace, updated_at = excluded.updated_at, preferred = excluded.preferred;

-- name: effect-store-solutions
-- Each solution's effect next to its success_rate (the comparison ranking uses): a playbook's
-- solutions (one per error hash, the same template) take their playbook's pooled figures ($1:
-- playbook names), every other solution its own ($1 NULL, $10: its id).
UPDATE solutions s
SET effect_acted_cases = u.acted_cases, effect_acted_resolved = u.acted_resolved,
    effect_left_cases = u.left_cases, effect_left_resolved = u.left_resolved, effect_uplift = u.uplift,
    effect_uplift_low = u.low, effect_uplift_high = u.high, effect_comparison = u.comparison,
    effect_updated_at = $11
FROM unnest($1::text[], $2::int[], $3::int[], $4::int[], $5::int[], $6::float8[], $7::float8[], $8::float8[],
            $9::text[], $10::int[])
     AS u(playbook_name, acted_cases, acted_resolved, left_cases, left_resolved, uplift, low, high, comparison, id)
WHERE (u.playbook_name IS NOT NULL AND s.source = 'playbook' AND s.playbook_name = u.playbook_name)
   OR (u.playbook_name IS NULL AND s.id = u.id AND s.source <> 'playbook');

-- name: effect-report
-- The effect figures of one scope (all when $1 is NULL), most cases first.
SELECT e.*, t.fraction AS trial_fraction, t.started_at AS trial_started_at, t.stopped_at AS trial_stopped_at
FROM action_effects e
LEFT JOIN playbook_trials t ON e.scope = 'playbook' AND t.playbook_name = e.key
WHERE ($1::text IS NULL OR e.scope = $1) AND ($2::text IS NULL OR e.key = $2)
ORDER BY e.scope, e.key, e.comparison DESC;

-- name: effect-outcome-counts
-- How the requests' outcomes split: acted, and each reason nothing ran; open and judged.
SELECT coalesce(playbook_name, '') AS playbook_name, acted, coalesce(not_acted, '') AS not_acted, state, count(*) AS n
FROM request_outcomes
WHERE ($1::text IS NULL OR playbook_name = $1)
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2 DESC, 3, 4;

-- name: effect-of-solution
-- One solution's effect (solution_effect_now, 0120), for an approval (the approver sees it) and
-- the execute stage's rule.
SELECT * FROM solution_effect_now WHERE solution_id = $1;

-- name: trial-get
-- The playbook's running trial, if any.
SELECT playbook_name, fraction, started_at, started_by FROM playbook_trials
WHERE playbook_name = $1 AND stopped_at IS NULL;

-- name: trial-list
SELECT playbook_name, fraction, started_at, started_by, stopped_at, stopped_by,
       (SELECT count(*) FROM trial_draws d WHERE d.playbook_name = t.playbook_name AND d.arm = 'observe') AS left_alone,
       (SELECT count(*) FROM trial_draws d WHERE d.playbook_name = t.playbook_name AND d.arm = 'act') AS acted
FROM playbook_trials t ORDER BY playbook_name;

-- name: trial-start
INSERT INTO playbook_trials (playbook_name, fraction, started_at, started_by)
VALUES ($1, $2, $3, $4)
ON CONFLICT (playbook_name) DO UPDATE SET fraction = excluded.fraction, started_at = excluded.started_at,
    started_by = excluded.started_by, stopped_at = NULL, stopped_by = NULL
RETURNING playbook_name, fraction, started_at, started_by;

-- name: trial-stop
UPDATE playbook_trials SET stopped_at = $2, stopped_by = $3 WHERE playbook_name = $1 AND stopped_at IS NULL
RETURNING playbook_name;

-- name: trial-left-in-window
-- Cases the playbook's trial left alone since $2 (the window's start).
SELECT count(*) FROM trial_draws WHERE playbook_name = $1 AND arm = 'observe' AND drawn_at > $2;

-- name: trial-record-draw
INSERT INTO trial_draws (request_id, playbook_name, namespace, arm, draw, fraction, drawn_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (request_id) DO NOTHING;

-- name: defer-request
-- An automatic action waits out the grace period; repeats fold into the request meanwhile.
UPDATE planned_requests SET deferred_until = $2, open_until = greatest(open_until, $2) WHERE request_id = $1;

-- name: deferred-due
-- Requests whose grace period is over and which nobody claimed since: decided again.
SELECT p.request
FROM planned_requests p
WHERE p.deferred_until IS NOT NULL AND p.deferred_until <= $1
  AND NOT EXISTS (SELECT 1 FROM execution_requests r WHERE r.request_id = p.request_id)
ORDER BY p.deferred_until
LIMIT $2;

-- name: effect-of-playbook-solutions
-- The effect figures of every solution stored from playbook $1.
SELECT e.* FROM action_effects e JOIN solutions s ON e.scope = 'solution' AND e.key = s.id::text
WHERE s.playbook_name = $1 ORDER BY s.id, e.comparison DESC;
