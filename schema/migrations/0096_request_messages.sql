-- What a request's own object said: the newest message of the analysis events ingest stored
-- (analysis_triggers, 0071) for the request's error and object. The error row keeps its first
-- event's message, which names another object when many fail at once (three deployments crash
-- looping: the first pod's line would stand above the second deployment's approval). The
-- console shows this beside an approval and a held object; one view, so the pages cannot drift.
CREATE VIEW request_messages AS
SELECT p.request_id, own.message
FROM planned_requests p
CROSS JOIN LATERAL (
    SELECT t.message FROM analysis_triggers t
    WHERE t.hash_signature = p.hash_signature
      AND t.subject = coalesce(p.target_key, p.request ->> 'subject')
    ORDER BY t.occurred_at DESC LIMIT 1
) own;
