-- error_occurrences' primary key in time order: (occurred_at, event_identity) instead of
-- (event_identity, occurred_at). The same uniqueness (and the same ON CONFLICT arbiter for
-- the ingest upsert), but a new occurrence's key now lands at the recent end of the index
-- instead of at a random place: event identities are hashes. With a random key every insert
-- touched its own leaf page, and after each checkpoint each such page cost a full-page image
-- in the WAL (8 kB per event once the index outgrows the few pages a small table has); the
-- benchmark's growth section measured that as the main reason the ingest rate fell with a
-- million stored errors. Rebuilds the index once (a lock on error_occurrences while it runs).

ALTER TABLE error_occurrences DROP CONSTRAINT error_occurrences_pkey;
ALTER TABLE error_occurrences ADD PRIMARY KEY (occurred_at, event_identity);
