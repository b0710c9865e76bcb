-- Analysis stage (issue 4). Why each table exists:
--  * llm_requests: the LLM cache across analyzer instances and restarts. The same hash never
--    calls the LLM twice within llm_cache_ttl_s: an analyzer first claims the hash here (one
--    row per hash; the claim succeeds only when there is no row or the row is older than the
--    TTL, decided by one INSERT ... ON CONFLICT DO UPDATE ... WHERE), and only the winner calls
--    the model. A failed call keeps its row too: a model that times out or answers garbage for
--    an error is not asked again for that error until the TTL has passed, which also keeps a
--    flood of one unknown error from turning into a flood of paid API calls.
--    outcome: pending (claimed, call in flight or the claimant died), solution, invalid
--    (no valid JSON after the retry), failed (timeouts, 429s, 5xx exhausted); solution_id
--    points at the solution the answer became.

CREATE TABLE llm_requests (
    error_hash VARCHAR(64) PRIMARY KEY,
    asked_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    asked_by TEXT,
    outcome VARCHAR(20) NOT NULL DEFAULT 'pending'
        CHECK (outcome IN ('pending', 'solution', 'invalid', 'failed')),
    model VARCHAR(100),
    detail TEXT,
    solution_id INTEGER REFERENCES solutions(id) ON DELETE SET NULL,
    finished_at TIMESTAMPTZ
);

CREATE INDEX idx_llm_requests_asked_at ON llm_requests(asked_at);
