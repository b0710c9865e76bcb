-- Issue 10 (items 1, 2, 3, 5, 7): act on the right object, once; the database decides.
-- Why each piece exists:
--  * planned_requests: the analysis stage stores every request it wants carried out (the
--    solution, the error, the pattern, the ONE object the action is bound to, the rendered
--    commands, the history mark, and a digest of all of it). The message on the execution topic
--    only points at a row here; the execute stage loads the row and refuses a message that does
--    not match it, so a forged or edited message runs nothing.
--    target_key names the object ('k8s:<ns>/<kind>/<name>', 'es:index/<name>', ...); action is
--    the kind of action ('kubectl:rollout restart:deployment') the systemic hold counts by.
--  * execution_requests.target_key / namespace: cooldown, hourly cap and the fleet budget are
--    counted per object, per namespace and overall over the slots taken, whatever error,
--    solution or executor copy asked.
--  * execution_history.target_key / target: every run records the concrete object it touched,
--    while the solution (an action with parameters) pools its success rate over objects.
--  * verifications.target_key / action: "recurred" means the same object needed the same kind
--    of action again, not that the error hash was seen anywhere.
--  * approvals.target_key: one pending approval per object is enough.
--  * incidents / incident_objects: the systemic hold. When more than K distinct objects need
--    the same kind of action within a window, automatic runs of that action stop and one
--    incident approval names every held object; a person approves all or some of them.
--  * playbook_controls: `playbooks disable NAME` stops automatic runs of the solutions stored
--    from that playbook at once, in every executor copy (read at decision time).
--  * decision_log: 'refused' (a message that is not what the database holds), 'held' (the
--    systemic hold), 'lost' (a run that died after its claim, found by the reaper).

CREATE TABLE planned_requests (
    request_id TEXT PRIMARY KEY,
    error_log_id INTEGER NOT NULL,
    hash_signature VARCHAR(64) NOT NULL,
    solution_id INTEGER NOT NULL REFERENCES solutions(id),
    pattern_id INTEGER,
    target_key TEXT,
    namespace TEXT,
    action TEXT NOT NULL,
    history BOOLEAN NOT NULL DEFAULT FALSE,
    event_time TIMESTAMP NOT NULL,
    requested_at TIMESTAMP NOT NULL,
    request JSONB NOT NULL,
    digest VARCHAR(64) NOT NULL
);

CREATE INDEX idx_planned_requests_action ON planned_requests(action, requested_at) WHERE NOT history;
CREATE INDEX idx_planned_requests_target ON planned_requests(target_key, event_time);

ALTER TABLE execution_requests
    ADD COLUMN target_key TEXT,
    ADD COLUMN namespace TEXT;
CREATE INDEX idx_execution_requests_target_slot
    ON execution_requests(target_key, slot_at) WHERE slot IS NOT NULL;
CREATE INDEX idx_execution_requests_slot_at ON execution_requests(slot_at) WHERE slot IS NOT NULL;
CREATE INDEX idx_execution_requests_running ON execution_requests(slot_at) WHERE status = 'running';

ALTER TABLE execution_history
    ADD COLUMN target_key TEXT,
    ADD COLUMN target JSONB;

ALTER TABLE verifications
    ADD COLUMN target_key TEXT,
    ADD COLUMN action TEXT;

ALTER TABLE approvals ADD COLUMN target_key TEXT;
CREATE INDEX idx_approvals_target_pending ON approvals(target_key) WHERE status = 'pending';

ALTER TABLE decision_log DROP CONSTRAINT decision_log_decision_check;
ALTER TABLE decision_log ADD CONSTRAINT decision_log_decision_check
    CHECK (decision IN ('dry_run', 'skipped', 'denied', 'pending_approval', 'duplicate',
                        'refused', 'held', 'lost', 'approved'));

CREATE TABLE incidents (
    id SERIAL PRIMARY KEY,
    action TEXT NOT NULL,
    status VARCHAR(20) NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'decided', 'expired')),
    reason TEXT NOT NULL,
    opened_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    decided_by VARCHAR(50),
    decided_at TIMESTAMP
);

CREATE UNIQUE INDEX uq_incidents_pending_action ON incidents(action) WHERE status = 'pending';

CREATE TABLE incident_objects (
    incident_id INTEGER NOT NULL REFERENCES incidents(id),
    target_key TEXT NOT NULL,
    request_id TEXT NOT NULL REFERENCES execution_requests(request_id),
    namespace TEXT,
    signs JSONB NOT NULL DEFAULT '{}'::jsonb,
    added_at TIMESTAMP NOT NULL,
    status VARCHAR(20) NOT NULL DEFAULT 'held' CHECK (status IN ('held', 'approved', 'rejected', 'expired')),
    decided_by VARCHAR(50),
    decided_at TIMESTAMP,
    PRIMARY KEY (incident_id, target_key)
);

CREATE TABLE playbook_controls (
    playbook_name VARCHAR(100) PRIMARY KEY,
    disabled_at TIMESTAMP,
    updated_by VARCHAR(50),
    updated_at TIMESTAMP NOT NULL DEFAULT NOW()
);
