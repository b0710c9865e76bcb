-- An observe-only trial (0120) decides that some of a playbook's cases are left alone: a
-- person's decision, so it belongs in the audit log (0130) beside playbook switches. A trigger,
-- like the other switches', so no face can start or stop a trial without a row.
CREATE FUNCTION audit_playbook_trial() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    IF NEW.stopped_at IS NOT NULL THEN
        IF TG_OP = 'UPDATE' AND OLD.stopped_at IS NOT DISTINCT FROM NEW.stopped_at THEN
            RETURN NULL;
        END IF;
        INSERT INTO audit_log (actor, action, object, details)
        VALUES (coalesce(NEW.stopped_by, 'unknown'), 'trial stopped', 'playbook:' || NEW.playbook_name,
                jsonb_build_object('fraction', NEW.fraction, 'started_at', NEW.started_at));
    ELSIF TG_OP = 'INSERT' OR OLD.stopped_at IS NOT NULL OR OLD.started_at IS DISTINCT FROM NEW.started_at
          OR OLD.fraction IS DISTINCT FROM NEW.fraction THEN
        INSERT INTO audit_log (actor, action, object, details)
        VALUES (coalesce(NEW.started_by, 'unknown'), 'trial started', 'playbook:' || NEW.playbook_name,
                jsonb_build_object('fraction', NEW.fraction));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER playbook_trials_audit AFTER INSERT OR UPDATE ON playbook_trials
    FOR EACH ROW EXECUTE FUNCTION audit_playbook_trial();
