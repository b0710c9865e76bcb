-- Issue 10, items 5 and 6: what ingest knows about an occurrence that decides whether it may
-- ever be remediated, stored where the analysis and execution stages read it.
--  * error_occurrences.history: NULL for a live event; 'backfill' (published by backfill-es)
--    or 'replay' (first recorded by elk-resolver replay) for history. Set once, when the
--    occurrence is first recorded: a live event replayed later stays live.
--    An analysis event's (trigger_event_id, event_time) is this table's key.
--  * error_logs.last_actionable_at: the newest occurred_at of an occurrence that may be
--    remediated: level ERROR or worse, and live (or history the operator explicitly asked to
--    act on, backfill-es/replay --execute). NULL: nothing of this error was ever actionable
--    (only history, or only lines below ERROR; rows from before this migration too, until
--    their next live error arrives). Not indexed, so updating it keeps the row
--    update HOT like last_seen_at.

ALTER TABLE error_occurrences
    ADD COLUMN history VARCHAR(16) CHECK (history IN ('backfill', 'replay'));

ALTER TABLE error_logs ADD COLUMN last_actionable_at TIMESTAMP;
