-- The console and CLI an on-call engineer lives in (issue 26). Why each piece exists:
--  * error_states: an error had no state, so nothing could say "bob is on it" or "fixed, tell me
--    if it comes back". One row per error that a person (or the service) gave a state: open,
--    acknowledged, resolved, snoozed (until snoozed_until) or muted, with who and when and an
--    owner. It lives beside error_logs, not in it: the ingest upsert of every occurrence never
--    touches it, so a new occurrence keeps the state. occurrences_at_change is the error's
--    occurrence_count when the state was set: a resolved error with more occurrences than that
--    has recurred and is open again (read that way at once; the monitor stage records it, once,
--    as the service's decision), and a snooze past snoozed_until is open again the same way.
--  * error_notes: what people wrote about an error, kept as a list (who, when, what).
--  * audit_log: every change a person or the service made outside the decision log: the kill
--    switch, playbook and pattern switches, error states, owners and notes, sign-ins and ended
--    sessions. Triggers on those tables write it, so no face (CLI, console, a future one) can
--    change them without a row here. Approvals, rejections and the execute stage's decisions are
--    already one row each in decision_log, merges and splits in error_merge_log: the view
--    audit_trail reads the three as one list instead of copying them.
--  * error_patterns.updated_by / updated_at: who switched a pattern (the trigger needs the name).
--  * two indexes for the console's reads: dry runs by time (the Runs list shows them beside
--    runs), and requests by error (the objects an error's requests were bound to); and
--    error_ids_naming, the errors that name an object (the console's search).

CREATE TABLE error_states (
    error_log_id INTEGER PRIMARY KEY REFERENCES error_logs(id) ON DELETE CASCADE,
    state VARCHAR(16) NOT NULL DEFAULT 'open'
        CHECK (state IN ('open', 'acknowledged', 'resolved', 'snoozed', 'muted')),
    snoozed_until TIMESTAMP,
    owner VARCHAR(50),
    owner_set_by VARCHAR(50),
    owner_set_at TIMESTAMP,
    changed_by VARCHAR(50) NOT NULL,
    changed_at TIMESTAMP NOT NULL DEFAULT LOCALTIMESTAMP,
    occurrences_at_change BIGINT NOT NULL DEFAULT 0,
    reopened_at TIMESTAMP,
    reopen_reason TEXT,
    CHECK (state <> 'snoozed' OR snoozed_until IS NOT NULL)
);

-- the monitor's pass: resolved rows (recurrence) and snoozes that end
CREATE INDEX idx_error_states_watch ON error_states (state) WHERE state IN ('resolved', 'snoozed');

CREATE TABLE error_notes (
    id BIGSERIAL PRIMARY KEY,
    error_log_id INTEGER NOT NULL REFERENCES error_logs(id) ON DELETE CASCADE,
    author VARCHAR(50) NOT NULL,
    body TEXT NOT NULL CHECK (length(body) BETWEEN 1 AND 4000),
    created_at TIMESTAMP NOT NULL DEFAULT LOCALTIMESTAMP
);
-- The state as it stands now: a resolved error that occurred again, or a snooze that ended, is
-- open (and says why) even before the monitor's pass records it.
CREATE VIEW error_state_now AS
SELECT s.error_log_id,
       CASE WHEN s.state = 'resolved' AND e.occurrence_count > s.occurrences_at_change THEN 'open'
            WHEN s.state = 'snoozed' AND s.snoozed_until <= LOCALTIMESTAMP THEN 'open'
            ELSE s.state END AS state,
       CASE WHEN s.state = 'resolved' AND e.occurrence_count > s.occurrences_at_change
                 THEN format('reopened: %s new occurrence(s) since %s resolved it',
                             e.occurrence_count - s.occurrences_at_change, s.changed_by)
            WHEN s.state = 'snoozed' AND s.snoozed_until <= LOCALTIMESTAMP
                 THEN format('reopened: the snooze %s set ended at %s', s.changed_by,
                             to_char(s.snoozed_until, 'YYYY-MM-DD HH24:MI:SS'))
            ELSE s.reopen_reason END AS reopen_reason,
       s.state AS recorded_state, s.snoozed_until, s.owner, s.owner_set_by, s.owner_set_at,
       s.changed_by, s.changed_at, s.reopened_at
FROM error_states s
JOIN error_logs e ON e.id = s.error_log_id;

CREATE INDEX idx_error_notes_error ON error_notes (error_log_id, id);

CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMP NOT NULL DEFAULT LOCALTIMESTAMP,
    actor VARCHAR(50) NOT NULL,
    action VARCHAR(40) NOT NULL,
    object TEXT NOT NULL,
    error_log_id INTEGER,
    details JSONB NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX idx_audit_log_at ON audit_log (at);
CREATE INDEX idx_audit_log_actor ON audit_log (lower(actor), at);
CREATE INDEX idx_audit_log_error ON audit_log (error_log_id, at) WHERE error_log_id IS NOT NULL;
CREATE INDEX idx_error_merge_log_created ON error_merge_log (created_at);

-- the console's reads: the runs list shows dry runs beside runs (newest first), and an error's
-- page and search list the objects its requests were bound to
CREATE INDEX idx_decision_log_dry_runs ON decision_log (decided_at, id) WHERE decision = 'dry_run';
CREATE INDEX idx_planned_requests_hash ON planned_requests (hash_signature, requested_at);

-- The errors that name an object (the console's search): its event's pod, deployment,
-- container, host or service (one GIN index search per field: an OR of five is costed above a
-- scan of the table), or an object one of its requests was bound to.
CREATE FUNCTION error_ids_naming(needle TEXT) RETURNS SETOF INTEGER
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT o.id FROM error_logs o
    WHERE o.raw_log_data @> jsonb_build_object('kubernetes', jsonb_build_object('pod', jsonb_build_object('name', needle)))
    UNION ALL SELECT o.id FROM error_logs o
    WHERE o.raw_log_data @> jsonb_build_object('kubernetes', jsonb_build_object('deployment', jsonb_build_object('name', needle)))
    UNION ALL SELECT o.id FROM error_logs o
    WHERE o.raw_log_data @> jsonb_build_object('kubernetes', jsonb_build_object('container', jsonb_build_object('name', needle)))
    UNION ALL SELECT o.id FROM error_logs o WHERE o.raw_log_data @> jsonb_build_object('host', jsonb_build_object('name', needle))
    UNION ALL SELECT o.id FROM error_logs o WHERE o.raw_log_data @> jsonb_build_object('service', jsonb_build_object('name', needle))
    UNION ALL SELECT e.id FROM error_logs e
    WHERE e.hash_signature IN (SELECT p.hash_signature FROM planned_requests p WHERE p.target_key ILIKE '%' || needle || '%')
$$;

ALTER TABLE error_patterns
    ADD COLUMN updated_by VARCHAR(50),
    ADD COLUMN updated_at TIMESTAMP;

CREATE FUNCTION audit_kill_switch() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO audit_log (actor, action, object, details)
    VALUES (coalesce(NEW.updated_by, 'unknown'), CASE WHEN NEW.kill_switch THEN 'kill switch on' ELSE 'kill switch off' END,
            'kill-switch', jsonb_build_object('was', CASE WHEN TG_OP = 'UPDATE' THEN OLD.kill_switch END));
    RETURN NULL;
END $$;
CREATE TRIGGER resolver_controls_audit AFTER INSERT OR UPDATE ON resolver_controls
    FOR EACH ROW EXECUTE FUNCTION audit_kill_switch();

CREATE FUNCTION audit_playbook_control() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO audit_log (actor, action, object)
    VALUES (coalesce(NEW.updated_by, 'unknown'),
            CASE WHEN NEW.disabled_at IS NULL THEN 'playbook enabled' ELSE 'playbook disabled' END,
            'playbook:' || NEW.playbook_name);
    RETURN NULL;
END $$;
CREATE TRIGGER playbook_controls_audit AFTER INSERT OR UPDATE ON playbook_controls
    FOR EACH ROW EXECUTE FUNCTION audit_playbook_control();

CREATE FUNCTION audit_pattern() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO audit_log (actor, action, object, details)
        VALUES (coalesce(NEW.updated_by, 'unknown'), 'pattern added', 'pattern:' || NEW.id,
                jsonb_build_object('name', NEW.pattern_name, 'regex', NEW.pattern_regex,
                                   'auto_resolve', NEW.auto_resolve));
        RETURN NULL;
    END IF;
    IF NEW.disabled_at IS DISTINCT FROM OLD.disabled_at THEN
        INSERT INTO audit_log (actor, action, object, details)
        VALUES (coalesce(NEW.updated_by, 'unknown'),
                CASE WHEN NEW.disabled_at IS NULL THEN 'pattern enabled' ELSE 'pattern disabled' END,
                'pattern:' || NEW.id, jsonb_build_object('name', NEW.pattern_name));
    END IF;
    IF NEW.auto_resolve IS DISTINCT FROM OLD.auto_resolve THEN
        INSERT INTO audit_log (actor, action, object, details)
        VALUES (coalesce(NEW.updated_by, 'unknown'),
                CASE WHEN NEW.auto_resolve THEN 'pattern auto-resolve on' ELSE 'pattern auto-resolve off' END,
                'pattern:' || NEW.id, jsonb_build_object('name', NEW.pattern_name));
    END IF;
    IF NEW.fingerprint_fields IS DISTINCT FROM OLD.fingerprint_fields THEN
        INSERT INTO audit_log (actor, action, object, details)
        VALUES (coalesce(NEW.updated_by, 'unknown'), 'pattern fingerprint fields', 'pattern:' || NEW.id,
                jsonb_build_object('name', NEW.pattern_name, 'fields', to_jsonb(NEW.fingerprint_fields)));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER error_patterns_audit AFTER INSERT OR UPDATE ON error_patterns
    FOR EACH ROW EXECUTE FUNCTION audit_pattern();

CREATE FUNCTION audit_error_state() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    -- a first row made only to hold an owner is open, as the error was: no state changed
    IF (TG_OP = 'INSERT' AND NEW.state <> 'open')
       OR (TG_OP = 'UPDATE' AND (NEW.state IS DISTINCT FROM OLD.state
                                 OR NEW.snoozed_until IS DISTINCT FROM OLD.snoozed_until)) THEN
        INSERT INTO audit_log (actor, action, object, error_log_id, details)
        VALUES (NEW.changed_by, 'error ' || NEW.state, 'error:' || NEW.error_log_id, NEW.error_log_id,
                jsonb_strip_nulls(jsonb_build_object(
                    'was', CASE WHEN TG_OP = 'UPDATE' THEN OLD.state END,
                    'snoozed_until', NEW.snoozed_until,
                    'reopened', CASE WHEN NEW.reopened_at IS DISTINCT FROM
                                          (CASE WHEN TG_OP = 'UPDATE' THEN OLD.reopened_at END)
                                     THEN NEW.reopen_reason END)));
    END IF;
    IF NEW.owner IS DISTINCT FROM (CASE WHEN TG_OP = 'UPDATE' THEN OLD.owner END) THEN
        INSERT INTO audit_log (actor, action, object, error_log_id, details)
        VALUES (coalesce(NEW.owner_set_by, NEW.changed_by), 'error owner', 'error:' || NEW.error_log_id, NEW.error_log_id,
                jsonb_build_object('owner', NEW.owner));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER error_states_audit AFTER INSERT OR UPDATE ON error_states
    FOR EACH ROW EXECUTE FUNCTION audit_error_state();

CREATE FUNCTION audit_error_note() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO audit_log (actor, action, object, error_log_id, details)
    VALUES (NEW.author, 'error note', 'error:' || NEW.error_log_id, NEW.error_log_id,
            jsonb_build_object('note', left(NEW.body, 200)));
    RETURN NULL;
END $$;
CREATE TRIGGER error_notes_audit AFTER INSERT ON error_notes
    FOR EACH ROW EXECUTE FUNCTION audit_error_note();

-- a sign-in is a new session; signing out (or an approver ending it) sets ended_at. The update
-- of last_seen_at on every request is not an event.
CREATE FUNCTION audit_console_session() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO audit_log (actor, action, object, details)
        VALUES (NEW.user_name, 'signed in', 'session:' || NEW.id,
                jsonb_strip_nulls(jsonb_build_object('from', NEW.remote_address)));
    ELSIF NEW.ended_at IS NOT NULL AND OLD.ended_at IS NULL THEN
        INSERT INTO audit_log (actor, action, object, details)
        VALUES (coalesce(NEW.ended_by, NEW.user_name),
                CASE WHEN coalesce(NEW.ended_by, NEW.user_name) = NEW.user_name THEN 'signed out' ELSE 'session ended' END,
                'session:' || NEW.id, jsonb_build_object('user', NEW.user_name));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER console_sessions_audit AFTER INSERT OR UPDATE OF ended_at ON console_sessions
    FOR EACH ROW EXECUTE FUNCTION audit_console_session();

-- Every decision, as one list: the audit log; the execute stage's and people's decisions on
-- requests (approved, denied, dry_run, skipped, held, refused, ...); the runs (a live run has
-- no decision_log row); merges and splits. actor 'service' stands for the stages
-- (decision_log and execution_history say 'auto-resolver' or nothing); object names the bound
-- object of a request where one is stored, else the error.
CREATE VIEW audit_trail AS
SELECT 'a' || a.id AS key, a.at, a.actor, a.actor NOT IN ('service', 'unknown') AS by_person,
       a.action, a.object, a.error_log_id, a.details
FROM audit_log a
UNION ALL
SELECT 'd' || d.id, d.decided_at,
       CASE WHEN d.decided_by IS NULL OR d.decided_by IN ('auto-resolver', 'auto') THEN 'service' ELSE d.decided_by END,
       d.decided_by IS NOT NULL AND d.decided_by NOT IN ('auto-resolver', 'auto'),
       d.decision, coalesce(p.target_key, 'error:' || d.error_log_id), d.error_log_id,
       jsonb_build_object('reason', d.reason, 'request_id', d.request_id, 'solution_id', d.solution_id)
FROM decision_log d
LEFT JOIN planned_requests p ON p.request_id = d.request_id
UNION ALL
SELECT 'r' || h.id, h.executed_at,
       CASE WHEN h.executed_by IS NULL OR h.executed_by IN ('auto-resolver', 'auto') THEN 'service' ELSE h.executed_by END,
       h.executed_by IS NOT NULL AND h.executed_by NOT IN ('auto-resolver', 'auto'),
       'run ' || h.execution_status, coalesce(h.target_key, 'error:' || h.error_log_id), h.error_log_id,
       jsonb_build_object('request_id', h.request_id, 'solution_id', h.solution_id, 'run', h.id)
FROM execution_history h
UNION ALL
SELECT 'm' || m.id, m.created_at, CASE WHEN m.actor = 'merge-pass' THEN 'service' ELSE m.actor END,
       m.actor <> 'merge-pass',
       'error ' || m.action, coalesce('error:' || e.id, 'fingerprint:' || left(m.from_hash, 12)), e.id,
       jsonb_build_object('from', left(m.from_hash, 12), 'to', left(m.to_hash, 12), 'detail', m.detail)
FROM error_merge_log m
LEFT JOIN error_logs e ON e.hash_signature = m.from_hash;

-- The audit log is written, never rewritten: the service role may add rows, not change them.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'elk_resolver_user') THEN
        REVOKE UPDATE, DELETE ON audit_log FROM elk_resolver_user;
    END IF;
END
$$;
