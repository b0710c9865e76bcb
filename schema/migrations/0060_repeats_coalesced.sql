-- Issue 14 (decision latency): a repeat of an error on an object that already has an open
-- request is counted on that request instead of becoming a new request the execute stage must
-- decide again. During an incident 99 % of the events repeat earlier errors; one request and
-- one decision each made the first decision about a new error wait behind thousands of
-- redundant ones (p99 from raw event to decision 21-74 s at 2,000 events/s).
--  * coalesce_key: the error, the object the request is bound to and the history mark
--    (hash_signature, target key or unbound solution, history), as the analysis stage computes
--    it. A live event is never folded into a history request.
--  * open_until: set by the execute stage when it decides the request: until then (and for at
--    most repeat_undecided_s after requested_at) repeats are folded in; after the decision until
--    open_until, which is the decision time plus cooldown_s for a decision a repeat would get
--    again (run, dry run, approval asked or pending, hold, policy refusal), the object's own
--    cooldown end for a cooldown skip, and repeat_recheck_s for a skip that does not claim
--    (execution off, kill switch) or a playbook/pattern switched off.
--  * repeats / repeat_occurrences: the analysis events folded in and their new occurrences;
--    repeat_partition / repeat_offset: the newest analysis record counted, so a redelivered
--    record is not counted twice; last_repeat_event_at / last_repeat_seen_at: the newest
--    repeat's event time (verification counts it as a recurrence) and when it was folded in
--    (the systemic hold counts the object as still needing the action).
ALTER TABLE planned_requests
    ADD COLUMN coalesce_key TEXT,
    ADD COLUMN open_until TIMESTAMP,
    ADD COLUMN repeats INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN repeat_occurrences BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN repeat_partition INTEGER,
    ADD COLUMN repeat_offset BIGINT,
    ADD COLUMN last_repeat_event_at TIMESTAMP,
    ADD COLUMN last_repeat_seen_at TIMESTAMP;

CREATE INDEX idx_planned_requests_coalesce ON planned_requests(coalesce_key, requested_at DESC)
    WHERE coalesce_key IS NOT NULL;
CREATE INDEX idx_planned_requests_action_repeats ON planned_requests(action, last_repeat_seen_at)
    WHERE NOT history AND last_repeat_seen_at IS NOT NULL;
CREATE INDEX idx_planned_requests_target_repeats ON planned_requests(target_key, last_repeat_event_at)
    WHERE last_repeat_event_at IS NOT NULL;
