-- Statements of the merge pass and the operators' merge/split (elk_resolver/merge_pass.py).
-- Every change runs in one transaction under the merge advisory lock and moves
-- fingerprint_state.alias_generation, which tells every ingest copy to reload its alias index.

-- name: merge-lock
-- Wait for the merge lock (operators' commands).
SELECT pg_advisory_xact_lock(hashtext('elk_resolver.merge_pass'));

-- name: merge-try-lock
-- Take the merge lock if free: one copy runs the pass at a time, the others skip it.
SELECT pg_try_advisory_xact_lock(hashtext('elk_resolver.merge_pass'));

-- name: merge-state
SELECT alias_generation, rules_digest, tokenized_upto FROM fingerprint_state;

-- name: merge-bump-generation
UPDATE fingerprint_state SET alias_generation = alias_generation + 1, last_pass_at = NOW();

-- name: merge-set-state
UPDATE fingerprint_state SET rules_digest = $1, tokenized_upto = $2, last_pass_at = NOW();

-- name: merge-untokenized
-- Rows stored since the last pass, to add to error_templates, $2 at a time.
SELECT id, hash_signature, error_type, fingerprint_template
FROM error_logs WHERE id > $1 AND fingerprint_template IS NOT NULL ORDER BY id LIMIT $2;

-- name: merge-add-template
INSERT INTO error_templates (hash_signature, error_type, tokens) VALUES ($1, $2, $3::text[])
ON CONFLICT (hash_signature) DO NOTHING;

-- name: merge-set-template
-- A canonical's template after a merge (tokens with a learned <*>) or a remap.
WITH t AS (
    INSERT INTO error_templates (hash_signature, error_type, tokens, learned) VALUES ($1, $2, $3::text[], $4)
    ON CONFLICT (hash_signature) DO UPDATE
        SET tokens = EXCLUDED.tokens, learned = error_templates.learned OR EXCLUDED.learned, updated_at = NOW()
)
UPDATE error_logs SET fingerprint_template = array_to_string($3::text[], ' ') WHERE hash_signature = $1;

-- name: merge-touched-buckets
-- The (error type, width) buckets of the rows stored after id $1 (every bucket when $1 is
-- NULL: a rule change may have changed any template). A family needs a new row, so the pass
-- looks at these buckets only, one at a time.
SELECT DISTINCT t.error_type, t.width
FROM error_templates t JOIN error_logs e USING (hash_signature)
WHERE e.merged_into IS NULL AND e.fingerprint_version = 'template' AND ($1::int IS NULL OR e.id > $1)
ORDER BY 1, 2;

-- name: merge-bucket-rows
-- Rows of one bucket the merge pass may merge: template-fingerprinted, not merged, oldest
-- first, at most $3 (the pass's memory bound): the newest rows and the oldest, where a
-- family's canonical is.
SELECT * FROM (
    SELECT e.id, e.hash_signature, e.error_type, e.occurrence_count, t.tokens, t.learned
    FROM error_logs e JOIN error_templates t USING (hash_signature)
    WHERE t.error_type = $1 AND t.width = $2 AND e.merged_into IS NULL AND e.fingerprint_version = 'template'
    ORDER BY (e.id > $4) DESC, e.id
    LIMIT $3
) b ORDER BY id;

-- name: merge-touched-span-buckets
-- Templates of one error type whose value spans a varying number of tokens share their first
-- and last tokens (the slot lies between) and differ in width: the (error type, first, last)
-- buckets of live templates of two widths at least, one of them stored after id $1 (every
-- such bucket when $1 is NULL).
SELECT t.error_type, t.tokens[1] AS first, t.tokens[t.width] AS last
FROM error_templates t JOIN error_logs e USING (hash_signature)
WHERE e.merged_into IS NULL AND e.fingerprint_version = 'template' AND t.width >= 3
GROUP BY 1, 2, 3
HAVING count(DISTINCT t.width) >= 2 AND ($1::int IS NULL OR max(e.id) > $1)
ORDER BY 1, 2, 3;

-- name: merge-span-rows
-- Rows of one (error type, first token, last token) bucket, as merge-bucket-rows: at most $4,
-- the rows stored after id $5 first.
SELECT * FROM (
    SELECT e.id, e.hash_signature, e.error_type, e.occurrence_count, t.tokens, t.learned
    FROM error_logs e JOIN error_templates t USING (hash_signature)
    WHERE t.error_type = $1 AND t.width >= 3 AND t.tokens[1] = $2 AND t.tokens[t.width] = $3
      AND e.merged_into IS NULL AND e.fingerprint_version = 'template'
    ORDER BY (e.id > $5) DESC, e.id
    LIMIT $4
) b ORDER BY id;

-- name: merge-vocabulary
-- In how many live templates of error type $1 each of the tokens $2 appears: a value that is
-- a token of other templates is a constant there (a closed set's word, not an identifier).
-- (a join on the asked tokens, not = any(): the array may hold thousands, a hash join reads it once)
SELECT x AS tok, count(DISTINCT t.hash_signature)::int AS templates
FROM error_templates t JOIN error_logs e USING (hash_signature)
CROSS JOIN unnest(t.tokens) x
JOIN unnest($2::text[]) asked(w) ON asked.w = x
WHERE t.error_type = $1 AND e.merged_into IS NULL
GROUP BY x;

-- name: merge-blocked
SELECT hash_a, hash_b FROM error_splits;

-- name: merge-row
SELECT id, hash_signature, error_type, occurrence_count, merged_into, fingerprint_version,
       fingerprint_template, pattern_id, error_message, last_seen_at
FROM error_logs WHERE id = $1;

-- name: merge-row-by-hash
SELECT id, hash_signature, error_type, occurrence_count, merged_into, fingerprint_version,
       fingerprint_template, pattern_id, error_message, last_seen_at
FROM error_logs WHERE hash_signature = $1;

-- name: merge-move-counts
-- Move the members' counts to the canonical row and mark them merged; returns what moved.
WITH m AS (
    SELECT id, hash_signature, occurrence_count, last_seen_at
    FROM error_logs WHERE hash_signature = any($2::text[]) AND hash_signature <> $1
    FOR UPDATE
), c AS (
    UPDATE error_logs SET
        occurrence_count = occurrence_count + (SELECT coalesce(sum(occurrence_count), 0) FROM m),
        last_seen_at = greatest(last_seen_at, (SELECT max(last_seen_at) FROM m))
    WHERE hash_signature = $1
    RETURNING id
)
UPDATE error_logs e SET merged_into = (SELECT id FROM c), occurrence_count = 0
FROM m WHERE e.id = m.id
RETURNING e.hash_signature, m.occurrence_count AS moved;

-- name: merge-repoint
-- Aliases and merged rows that pointed at a member now point at the canonical (no chains).
WITH a AS (
    UPDATE error_aliases SET to_hash = $1, updated_at = NOW()
    WHERE to_hash = any($2::text[]) AND from_hash <> to_hash
)
UPDATE error_logs SET merged_into = (SELECT id FROM error_logs WHERE hash_signature = $1)
WHERE merged_into IN (SELECT id FROM error_logs WHERE hash_signature = any($2::text[]));

-- name: merge-add-alias
INSERT INTO error_aliases (from_hash, to_hash, reason, moved_occurrences, created_by)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (from_hash) DO UPDATE SET
    to_hash = EXCLUDED.to_hash, reason = EXCLUDED.reason, created_by = EXCLUDED.created_by,
    moved_occurrences = EXCLUDED.moved_occurrences, updated_at = NOW();

-- name: merge-log
INSERT INTO error_merge_log (action, from_hash, to_hash, detail, actor) VALUES ($1, $2, $3, $4, $5);

-- name: merge-lock-rows
-- Lock rows in hash order, the order ingest's upsert takes them in: no deadlock between the two.
SELECT id FROM error_logs WHERE hash_signature = any($1::text[]) ORDER BY hash_signature FOR UPDATE;

-- name: merge-sweep-candidates
-- Merged rows a copy counted on before its alias index reloaded, with their canonical rows.
SELECT e.hash_signature AS member, c.hash_signature AS canonical
FROM error_logs e JOIN error_logs c ON c.id = e.merged_into
WHERE e.occurrence_count > 0;

-- name: merge-sweep
-- Events a copy counted on a merged row before its alias index reloaded: move them on.
WITH m AS (
    SELECT e.id, e.hash_signature, e.merged_into, e.occurrence_count
    FROM error_logs e WHERE e.merged_into IS NOT NULL AND e.occurrence_count > 0
    FOR UPDATE
), z AS (
    UPDATE error_logs e SET occurrence_count = 0 FROM m WHERE e.id = m.id
), a AS (
    UPDATE error_aliases a SET moved_occurrences = a.moved_occurrences + m.occurrence_count
    FROM m WHERE a.from_hash = m.hash_signature
)
UPDATE error_logs c SET occurrence_count = c.occurrence_count + s.n
FROM (SELECT merged_into, sum(occurrence_count) AS n FROM m GROUP BY merged_into) s
WHERE c.id = s.merged_into
RETURNING c.id;

-- name: merge-split
-- Undo a merge of one member: the alias becomes a pin to the member's own row, the moved
-- occurrences go back, the pair is recorded so the merge pass never merges it again.
WITH a AS (
    SELECT from_hash, to_hash, moved_occurrences FROM error_aliases WHERE from_hash = $1 FOR UPDATE
), pin AS (
    UPDATE error_aliases SET to_hash = from_hash, moved_occurrences = 0, updated_at = NOW(),
        reason = jsonb_build_object('rule', 'split', 'was', reason, 'by', $3::text)
    WHERE from_hash = $1
), back AS (
    UPDATE error_logs SET occurrence_count = greatest(0, occurrence_count - coalesce((SELECT moved_occurrences FROM a), 0))
    WHERE hash_signature = $2
), blocked AS (
    INSERT INTO error_splits (hash_a, hash_b, created_by)
    VALUES (least($1, $2), greatest($1, $2), $3) ON CONFLICT DO NOTHING
)
UPDATE error_logs SET merged_into = NULL,
    occurrence_count = occurrence_count + coalesce((SELECT moved_occurrences FROM a), 0)
WHERE hash_signature = $1
RETURNING coalesce((SELECT moved_occurrences FROM a), 0) AS moved;

-- name: merge-remap-rows
-- Rows whose fingerprint the rules may have changed (not those a pattern's rule made).
SELECT id, hash_signature, error_type, error_message, fingerprint_version, merged_into
FROM error_logs WHERE fingerprint_version IN ('exact', 'template') ORDER BY id;

-- name: merge-set-version
UPDATE error_logs SET fingerprint_version = $2, fingerprint_template = $3 WHERE hash_signature = $1;

-- name: merge-members
-- The rows merged into one canonical row, with why.
SELECT e.id, e.hash_signature, e.fingerprint_template, a.reason, a.moved_occurrences, a.created_by, a.created_at
FROM error_aliases a LEFT JOIN error_logs e ON e.hash_signature = a.from_hash
WHERE a.to_hash = $1 AND a.from_hash <> a.to_hash
ORDER BY a.created_at, a.from_hash;

-- name: merge-alias-of
SELECT to_hash, reason, created_by, created_at FROM error_aliases WHERE from_hash = $1;

-- name: merge-history
SELECT action, from_hash, to_hash, detail, actor, created_at FROM error_merge_log
WHERE from_hash = $1 OR to_hash = $1 ORDER BY id;

-- name: alias-generation
-- A cheap test the ingest copies poll: the alias index is reloaded only when it moved.
SELECT alias_generation FROM fingerprint_state;

-- name: alias-all
SELECT from_hash, to_hash FROM error_aliases;

-- name: alias-learned
SELECT hash_signature, error_type, tokens FROM error_templates WHERE learned;

-- name: patterns-set-fingerprint-fields
-- A pattern's fingerprint rule (NULL: the message template), set by $3.
UPDATE error_patterns SET fingerprint_fields = $2, updated_by = $3, updated_at = LOCALTIMESTAMP
WHERE id = $1 RETURNING pattern_name;

-- name: errors-pattern
SELECT id, pattern_name, fingerprint_fields FROM error_patterns WHERE id = $1;
