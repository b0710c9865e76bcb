-- Issue 21, item 1 (every stage decides from the database, whatever its topic says): the
-- analysis topic carried the event the analysis stage acted on (message, object, pattern), and
-- nothing checked it: a record naming an existing hash_signature, any error_log_id, a made-up
-- context and a pattern with auto_resolve true made the service restart a workload no event
-- ever came from. Ingest now stores, in the same statement as the occurrences, what each
-- analysis event it publishes says; the analysis stage loads it (and the error row and its
-- stored pattern) and treats the record as a pointer, refusing one whose ids or content
-- disagree.
--  * analysis_triggers: one row per analysis event ingest published, keyed like
--    error_occurrences by the trigger occurrence (occurred_at, event_identity): its error
--    (hash_signature), the object it came from (subject, targets.subject_of), and its own
--    message, context (the AnalysisEvent context's fields) and source, masked. Written once
--    (ON CONFLICT DO NOTHING: every delivery of the record says the same). Also what the
--    console's timeline of an object reads (subject, occurred_at). Retention deletes it with
--    the decisions (`maintain`).
--  * dependency (the host:port the message names) and the node (context->>'host'): what the
--    execute stage reads to tell a dependency outage or a node going bad (issue 20) from
--    objects that each need their own action.
CREATE TABLE analysis_triggers (
    occurred_at TIMESTAMP NOT NULL,
    event_identity TEXT NOT NULL,
    hash_signature VARCHAR(64) NOT NULL,
    subject TEXT,
    message TEXT NOT NULL,
    context JSONB NOT NULL,
    source_system VARCHAR(50) NOT NULL,
    history VARCHAR(16),
    dependency TEXT,
    recorded_at TIMESTAMP NOT NULL DEFAULT (NOW() AT TIME ZONE 'UTC'),
    PRIMARY KEY (occurred_at, event_identity)
);

CREATE INDEX idx_analysis_triggers_subject ON analysis_triggers(subject, occurred_at) WHERE subject IS NOT NULL;
-- No index by dependency or node: their rules read a few minutes (systemic_window_s), which the
-- key's leading occurred_at finds; every index here is paid on each ingest batch.
