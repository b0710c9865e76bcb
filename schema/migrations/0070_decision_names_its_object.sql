-- Issue 20 (every affected object gets its own decision): a decision_log line names the object
-- it is about, so "for every (error, object) a live error asks an action for there is a run on
-- the object or a decision_log line naming it" can be read from the table itself, and the
-- console shows an object's timeline without reading every request body.
--  * decision_log.target_key: the bound object of the request ('k8s:shop/deployment/checkout'),
--    else the object its event came from (planned_requests.request's subject) when nothing
--    could be bound; NULL for a refused message (it names nothing the database holds).
ALTER TABLE decision_log ADD COLUMN target_key TEXT;

CREATE INDEX idx_decision_log_target ON decision_log(target_key, id) WHERE target_key IS NOT NULL;
