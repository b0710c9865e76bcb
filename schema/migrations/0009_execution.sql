-- Execution stage (issue 5). Why each table exists:
--  * execution_requests: the claim. Every request id is inserted once (ON CONFLICT DO NOTHING
--    RETURNING decides who handles it), so a redelivered, replayed or concurrently consumed
--    request is handled by exactly one executor. slot/slot_at mark the requests that took a
--    run (live) or a would-be run (dry_run) for their solution and hash: cooldown and the hourly
--    cap are counted over these rows under an advisory lock, so they hold across instances
--    even while a run is still in flight (before its execution_history row exists).
--  * decision_log: every decision that is not a run (dry_run, skipped, denied,
--    pending_approval, duplicate). Kept out of execution_history so that the document's
--    trigger, and with it success_rate and execution_count, only ever sees real runs.
--  * approvals: requests a person must decide; one per request, with an expiry after which
--    the request is denied.
--  * resolver_controls: one row the operator flips to stop all execution (the kill switch),
--    next to the kill_switch setting; either one stops everything.
--  * verifications: a command that exits 0 has not necessarily fixed anything. Each successful
--    run is watched until window_until; the error recurring turns it 'recurred', silence
--    'resolved'. The counts on solutions (verified_*) are derived from these outcomes.
--  * execution_history.request_id: unique, so one request can never leave two history rows.

CREATE TABLE execution_requests (
    request_id TEXT PRIMARY KEY,
    hash_signature VARCHAR(64) NOT NULL,
    solution_id INTEGER,
    error_log_id INTEGER,
    status VARCHAR(20) NOT NULL DEFAULT 'claimed'
        CHECK (status IN ('claimed', 'awaiting_approval', 'running', 'done')),
    outcome VARCHAR(20),
    claimed_by TEXT NOT NULL,
    claimed_at TIMESTAMP NOT NULL DEFAULT NOW(),
    slot VARCHAR(10) CHECK (slot IN ('live', 'dry_run')),
    slot_at TIMESTAMP,
    finished_at TIMESTAMP
);

CREATE INDEX idx_execution_requests_slot
    ON execution_requests(hash_signature, solution_id, slot_at) WHERE slot IS NOT NULL;

CREATE TABLE decision_log (
    id BIGSERIAL PRIMARY KEY,
    request_id TEXT NOT NULL,
    hash_signature VARCHAR(64),
    solution_id INTEGER,
    error_log_id INTEGER,
    decision VARCHAR(20) NOT NULL
        CHECK (decision IN ('dry_run', 'skipped', 'denied', 'pending_approval', 'duplicate')),
    reason TEXT NOT NULL,
    details JSONB NOT NULL DEFAULT '{}'::jsonb,
    decided_by VARCHAR(50),
    decided_at TIMESTAMP NOT NULL DEFAULT NOW()
);

CREATE INDEX idx_decision_log_request ON decision_log(request_id);
CREATE INDEX idx_decision_log_decided_at ON decision_log(decided_at);

CREATE TABLE approvals (
    id SERIAL PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE REFERENCES execution_requests(request_id),
    hash_signature VARCHAR(64) NOT NULL,
    solution_id INTEGER,
    request JSONB NOT NULL,
    status VARCHAR(20) NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'approved', 'rejected', 'expired')),
    reason TEXT NOT NULL,
    decided_by VARCHAR(50),
    created_at TIMESTAMP NOT NULL DEFAULT NOW(),
    expires_at TIMESTAMP NOT NULL,
    decided_at TIMESTAMP
);

CREATE INDEX idx_approvals_pending ON approvals(expires_at) WHERE status = 'pending';
CREATE INDEX idx_approvals_solution_pending
    ON approvals(hash_signature, solution_id) WHERE status = 'pending';

CREATE TABLE resolver_controls (
    id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    kill_switch BOOLEAN NOT NULL DEFAULT FALSE,
    updated_by VARCHAR(50),
    updated_at TIMESTAMP NOT NULL DEFAULT NOW()
);

INSERT INTO resolver_controls (id, kill_switch, updated_by) VALUES (TRUE, FALSE, 'migration');

ALTER TABLE execution_history ADD COLUMN request_id TEXT UNIQUE;

CREATE TABLE verifications (
    execution_history_id INTEGER PRIMARY KEY REFERENCES execution_history(id),
    hash_signature VARCHAR(64) NOT NULL,
    solution_id INTEGER NOT NULL REFERENCES solutions(id),
    request_id TEXT,
    error_log_id INTEGER,
    run_finished_at TIMESTAMP NOT NULL,
    window_until TIMESTAMP NOT NULL,
    outcome VARCHAR(20) NOT NULL DEFAULT 'pending'
        CHECK (outcome IN ('pending', 'resolved', 'recurred')),
    evidence TEXT,
    decided_at TIMESTAMP
);

CREATE INDEX idx_verifications_pending ON verifications(hash_signature) WHERE outcome = 'pending';
