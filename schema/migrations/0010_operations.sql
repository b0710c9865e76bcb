-- Service extension (operating the service: `elk-resolver patterns|backfill-es|maintain`).
-- Why each piece exists:
--  * error_patterns.disabled_at: `patterns disable` must stop a pattern from classifying
--    without deleting it, because error_logs.pattern_id refers to it and a person may want it
--    back. NULL means enabled; the ingest pattern loader skips rows where it is set.
--  * backfill_cursors: `backfill-es` reads Elasticsearch in pages; after an interruption it
--    resumes from the last page it published instead of starting again. One row per
--    (index pattern, since, until, query); an open-ended run stores 'infinity' as until.
--  * maintenance_runs: the monitor runs `maintain` once a day; every copy of the service has a
--    monitor, so the last finished run (and an advisory lock) decides whether one is due. The
--    row also records what each run deleted, for the operator.

ALTER TABLE error_patterns ADD COLUMN disabled_at TIMESTAMP;

CREATE TABLE backfill_cursors (
    id SERIAL PRIMARY KEY,
    index_pattern TEXT NOT NULL,
    since TIMESTAMP NOT NULL,
    until TIMESTAMP NOT NULL DEFAULT 'infinity',
    query TEXT NOT NULL DEFAULT '',
    last_timestamp TEXT,
    last_ids TEXT[] NOT NULL DEFAULT '{}',
    docs_published BIGINT NOT NULL DEFAULT 0,
    total_hits BIGINT,
    started_at TIMESTAMP NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMP NOT NULL DEFAULT NOW(),
    completed_at TIMESTAMP,
    UNIQUE (index_pattern, since, until, query)
);

CREATE TABLE maintenance_runs (
    id SERIAL PRIMARY KEY,
    started_at TIMESTAMP NOT NULL DEFAULT NOW(),
    finished_at TIMESTAMP,
    retention_days INTEGER NOT NULL,
    deleted JSONB NOT NULL DEFAULT '{}'
);
