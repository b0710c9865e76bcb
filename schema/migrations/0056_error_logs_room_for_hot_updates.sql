-- Room on each error_logs page for the updates a known error gets. Every repeat of a stored
-- error updates occurrence_count and last_seen_at, neither indexed, so the update can be HOT
-- (the new row version on the same page, no new entry in any of the table's seven indexes,
-- the GIN one included) whenever the page has space for it. Rows were packed full (rows are
-- ~1 kB with raw_log_data), so two updates in three were not HOT (benchmark growth section,
-- pg_stat_user_tables.n_tup_hot_upd), each one adding an entry to every index. 80 % leaves
-- room for one or two new versions per page until pruning reclaims the old ones.
-- Applies to pages written from now on; an existing table gets it for old rows on its next
-- rewrite (VACUUM FULL or pg_repack), which is not needed for correctness.
ALTER TABLE error_logs SET (fillfactor = 80);
