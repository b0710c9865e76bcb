-- Issue 25 (did the fix help?): success_rate counts a run that exited 0 (and verified_success_rate
-- one whose error then stayed away), but many errors stop by themselves: a restart that
-- "succeeds" 90 % of the time where 85 % of cases resolve untouched is worth almost nothing.
-- Measuring an action's effect needs the same measurement for the cases it was NOT run on.
-- Why each piece exists:
--  * request_outcomes: one row per request (per (error, object) request the analysis stage stored;
--    the primary key makes it exactly one): when its case started (the request's event time),
--    whether an action ran on the object during the case (acted, acted_at: any run on the object,
--    whichever request made it, so a case whose object was restarted for another error is never
--    counted as left alone), why not (not_acted: dry_run, skipped, budget, hold, rejected,
--    expired, kill_switch, observe_only, ...; not_acted_reason the decision's own words), the arm
--    of an observe-only trial it was drawn into (trial_arm), and whether and when the error
--    stopped on the object: resolved at the last error before a quiet verification window,
--    within effect_horizon_s of the case's start (state open until that is known).
--  * solutions.effect_*: the effect of each solution, kept current next to the document's
--    success_rate (which stays as the document defines it; its trigger is untouched): cases acted
--    on and left alone, how many of each resolved, the uplift (difference of the two resolution
--    rates) and its 95 % Newcombe interval, and which comparison it came from (a random trial,
--    or every case left alone).
--  * action_effects: the same figures per solution template (playbook), per kind of action and
--    per error type, with medians of the time to resolution and the share of cases resolved
--    inside the grace period; rewritten by the execute stage's maintenance pass. preferred marks
--    the comparison a scope is judged by (the trial once both its arms have effect_min_cases,
--    else every case left alone): a playbook's solution stored a moment ago (a new error hash)
--    is judged by its playbook's preferred row at once.
--  * playbook_trials: a playbook in trial mode: for this fraction of its eligible decisions
--    nothing runs and the case joins the comparison group (never in a critical namespace, at
--    most trial_max_per_window per trial_window_s).
--  * trial_draws: every draw, recorded (request, playbook, arm, the random number, the fraction):
--    who was left alone on purpose, and why, stays answerable.
--  * planned_requests.deferred_until: an automatic action waiting out the grace period
--    (grace_s after the case's first error); the maintenance pass decides it again then.
--  * decision_log 'observe_only': the decision for a case a trial left alone.
--  * solution_effect_now: each solution's effect as ranking and the execute stage read it: a
--    playbook's solution by its playbook's preferred comparison as it is now (a solution stored a
--    moment ago for a new error hash included), any other by its own figures.

CREATE TABLE request_outcomes (
    request_id TEXT PRIMARY KEY,
    hash_signature VARCHAR(64) NOT NULL,
    error_log_id INTEGER NOT NULL,
    solution_id INTEGER,
    playbook_name VARCHAR(100),
    action TEXT,
    error_type VARCHAR(100),
    target_key TEXT,
    namespace TEXT,
    started_at TIMESTAMP NOT NULL,
    acted BOOLEAN NOT NULL DEFAULT FALSE,
    acted_at TIMESTAMP,
    not_acted VARCHAR(20),
    not_acted_reason TEXT,
    trial_arm VARCHAR(10) CHECK (trial_arm IN ('observe', 'act')),
    state VARCHAR(12) NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'resolved', 'unresolved')),
    resolved_at TIMESTAMP,
    resolution_s DOUBLE PRECISION,
    judged_at TIMESTAMP,
    recorded_at TIMESTAMP NOT NULL DEFAULT (NOW() AT TIME ZONE 'UTC'),
    CHECK (NOT (acted AND not_acted IS NOT NULL)),
    CHECK ((state = 'resolved') = (resolved_at IS NOT NULL))
);

CREATE INDEX idx_request_outcomes_open ON request_outcomes(started_at) WHERE state = 'open';
CREATE INDEX idx_request_outcomes_solution ON request_outcomes(solution_id) WHERE state <> 'open';

ALTER TABLE solutions
    ADD COLUMN effect_acted_cases INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN effect_acted_resolved INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN effect_left_cases INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN effect_left_resolved INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN effect_uplift DOUBLE PRECISION,
    ADD COLUMN effect_uplift_low DOUBLE PRECISION,
    ADD COLUMN effect_uplift_high DOUBLE PRECISION,
    ADD COLUMN effect_comparison VARCHAR(12),
    ADD COLUMN effect_updated_at TIMESTAMP;

CREATE TABLE action_effects (
    scope VARCHAR(12) NOT NULL CHECK (scope IN ('solution', 'playbook', 'action', 'error_type')),
    key TEXT NOT NULL,
    comparison VARCHAR(12) NOT NULL CHECK (comparison IN ('trial', 'left alone')),
    acted_cases INTEGER NOT NULL,
    acted_resolved INTEGER NOT NULL,
    acted_median_s DOUBLE PRECISION,
    left_cases INTEGER NOT NULL,
    left_resolved INTEGER NOT NULL,
    left_median_s DOUBLE PRECISION,
    uplift DOUBLE PRECISION,
    uplift_low DOUBLE PRECISION,
    uplift_high DOUBLE PRECISION,
    resolved_in_grace DOUBLE PRECISION,
    preferred BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (scope, key, comparison)
);

CREATE TABLE playbook_trials (
    playbook_name VARCHAR(100) PRIMARY KEY,
    fraction DOUBLE PRECISION NOT NULL CHECK (fraction > 0 AND fraction <= 1),
    started_at TIMESTAMP NOT NULL,
    started_by VARCHAR(50) NOT NULL,
    stopped_at TIMESTAMP,
    stopped_by VARCHAR(50)
);

CREATE TABLE trial_draws (
    request_id TEXT PRIMARY KEY,
    playbook_name VARCHAR(100) NOT NULL,
    namespace TEXT,
    arm VARCHAR(10) NOT NULL CHECK (arm IN ('observe', 'act')),
    draw DOUBLE PRECISION NOT NULL,
    fraction DOUBLE PRECISION NOT NULL,
    drawn_at TIMESTAMP NOT NULL
);

CREATE INDEX idx_trial_draws_window ON trial_draws(playbook_name, drawn_at) WHERE arm = 'observe';

ALTER TABLE planned_requests ADD COLUMN deferred_until TIMESTAMP;
CREATE INDEX idx_planned_requests_deferred ON planned_requests(deferred_until) WHERE deferred_until IS NOT NULL;

ALTER TABLE decision_log DROP CONSTRAINT decision_log_decision_check;
ALTER TABLE decision_log ADD CONSTRAINT decision_log_decision_check
    CHECK (decision IN ('dry_run', 'skipped', 'denied', 'pending_approval', 'duplicate',
                        'refused', 'held', 'lost', 'approved', 'observe_only'));

CREATE VIEW solution_effect_now AS
SELECT s.id AS solution_id,
       coalesce(e.acted_cases, s.effect_acted_cases) AS effect_acted_cases,
       coalesce(e.acted_resolved, s.effect_acted_resolved) AS effect_acted_resolved,
       coalesce(e.left_cases, s.effect_left_cases) AS effect_left_cases,
       coalesce(e.left_resolved, s.effect_left_resolved) AS effect_left_resolved,
       coalesce(e.uplift, s.effect_uplift) AS effect_uplift,
       coalesce(e.uplift_low, s.effect_uplift_low) AS effect_uplift_low,
       coalesce(e.uplift_high, s.effect_uplift_high) AS effect_uplift_high,
       coalesce(e.comparison, s.effect_comparison) AS effect_comparison
FROM solutions s
LEFT JOIN action_effects e ON s.source = 'playbook' AND e.scope = 'playbook' AND e.key = s.playbook_name AND e.preferred;
