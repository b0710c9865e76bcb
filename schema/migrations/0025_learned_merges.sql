-- Learned merges, operator merges/splits and fingerprint rules per pattern (issue 11).
--  * error_templates: each error's template as a token array (split on white space), the
--    merge pass's input. `learned` marks a canonical whose tokens gained a <*> from a merge:
--    ingest matches new values at that position against it.
--  * error_aliases: fingerprint -> canonical fingerprint. Every ingest copy applies it before
--    its upsert (cached in memory, reloaded when fingerprint_state.alias_generation moves).
--    An operator's split turns the alias into a pin (to_hash = from_hash): the member's own
--    row again, and the merge pass never merges the pair again (error_splits).
--    moved_occurrences: what the merge moved to the canonical row, moved back by a split.
--  * error_logs.merged_into: the canonical row of a merged row. The merged row stays (its
--    solutions and execution_history stay linked to it: they record what ran for it); its
--    occurrence_count moves to the canonical row, its error_occurrences keep their original
--    hash (a fact about the event), later events of that fingerprint count on the canonical.
--  * error_merge_log: every merge, split and remap, who made it and why (reversible, recorded).
--  * fingerprint_state: one row. rules_digest: the fingerprint rules the stored hashes were
--    made with; when it changes, the merge pass maps old fingerprints to new ones.
--  * error_patterns.fingerprint_fields: fingerprint errors of this pattern from these event
--    fields or regex captures instead of the message template (NULL: the template).

CREATE TABLE error_templates (
    hash_signature VARCHAR(64) PRIMARY KEY,
    error_type VARCHAR(100) NOT NULL,
    tokens TEXT[] NOT NULL,
    learned BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at TIMESTAMP NOT NULL DEFAULT NOW()
);

CREATE TABLE error_aliases (
    from_hash VARCHAR(64) PRIMARY KEY,
    to_hash VARCHAR(64) NOT NULL,
    reason JSONB NOT NULL,
    moved_occurrences BIGINT NOT NULL DEFAULT 0,
    created_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMP NOT NULL DEFAULT NOW()
);
CREATE INDEX idx_error_aliases_to ON error_aliases(to_hash);

CREATE TABLE error_splits (
    hash_a VARCHAR(64) NOT NULL,
    hash_b VARCHAR(64) NOT NULL,
    created_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT NOW(),
    PRIMARY KEY (hash_a, hash_b),
    CHECK (hash_a < hash_b)
);

CREATE TABLE error_merge_log (
    id BIGSERIAL PRIMARY KEY,
    action VARCHAR(16) NOT NULL,  -- merge | split | remap
    from_hash VARCHAR(64) NOT NULL,
    to_hash VARCHAR(64) NOT NULL,
    detail JSONB NOT NULL,
    actor TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT NOW()
);

ALTER TABLE error_logs ADD COLUMN merged_into INTEGER REFERENCES error_logs(id) ON DELETE SET NULL;

CREATE TABLE fingerprint_state (
    id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    alias_generation BIGINT NOT NULL DEFAULT 0,
    rules_digest TEXT,
    tokenized_upto INTEGER NOT NULL DEFAULT 0,
    last_pass_at TIMESTAMP
);
INSERT INTO fingerprint_state DEFAULT VALUES;

ALTER TABLE error_patterns ADD COLUMN fingerprint_fields TEXT[];
