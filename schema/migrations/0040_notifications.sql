-- People in the loop (issue 15). Why each piece exists:
--  * notifications: one row per event and channel, the outbox of the notifier. The event's
--    key (say 'approval:42:pending') is unique per channel, so the stage that causes an event
--    can emit it again (redelivery, retry, two copies) and the channel still hears of it once.
--    A sender claims due rows (status 'sending', claimed_until a lease) under an advisory lock,
--    so two copies never send the same row; a failed send goes back to 'pending' with a later
--    next_attempt_at (backoff), and 'failed' after notify_max_attempts. sent_at per channel is
--    what the rate limit counts.
--  * indexes for the console: its lists page by id and filter by status, and must stay quick
--    with 100,000 errors (execution_history by solution and by status, decision_log by hash,
--    approvals by status).

CREATE TABLE notifications (
    id BIGSERIAL PRIMARY KEY,
    event_key TEXT NOT NULL,
    channel TEXT NOT NULL,
    kind VARCHAR(30) NOT NULL,
    payload JSONB NOT NULL,
    status VARCHAR(10) NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL DEFAULT NOW(),
    claimed_by TEXT,
    claimed_until TIMESTAMP,
    last_error TEXT,
    created_at TIMESTAMP NOT NULL DEFAULT NOW(),
    sent_at TIMESTAMP,
    UNIQUE (event_key, channel)
);

CREATE INDEX idx_notifications_due ON notifications(next_attempt_at) WHERE status IN ('pending', 'sending');
CREATE INDEX idx_notifications_sent ON notifications(channel, sent_at) WHERE status = 'sent';

CREATE INDEX idx_execution_history_solution ON execution_history(solution_id, id);
CREATE INDEX idx_decision_log_hash ON decision_log(hash_signature, id);
CREATE INDEX idx_approvals_status ON approvals(status, id);
