-- Service extension (analysis and execution stages) on the document's solutions table.
-- The document's columns and the trigger's meaning stay as they are; these sit beside them.
--  * source / playbook_name: where the solution came from (playbook, llm, manual). An LLM's
--    solution is untrusted until it has succeeded approved_success_count times after approval.
--  * content_hash: SHA-256 of the canonical commands; unique per error hash so two analyzers
--    handling the same new error at once create one solution, not two.
--  * verified_*: a command that exits 0 has not necessarily fixed anything. The execution stage
--    watches the error after a run and counts "resolved" outcomes here; ranking prefers them.
--  * consecutive_failures / tripped_at: the circuit breaker. Tripped solutions never run
--    automatically until a person approves a run that succeeds.
--  * choice_reason: why the analysis stage last chose this solution (ranking explanation).
ALTER TABLE solutions
    ADD COLUMN source VARCHAR(20) NOT NULL DEFAULT 'manual',
    ADD COLUMN playbook_name VARCHAR(100),
    ADD COLUMN content_hash VARCHAR(64),
    ADD COLUMN approved_success_count INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN verified_run_count INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN verified_success_count INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN verified_success_rate DECIMAL(5,2),
    ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN tripped_at TIMESTAMP,
    ADD COLUMN choice_reason TEXT;

ALTER TABLE solutions
    ADD CONSTRAINT solutions_source_check CHECK (source IN ('playbook', 'llm', 'manual'));

CREATE UNIQUE INDEX uq_solutions_error_hash_content ON solutions(error_hash, content_hash);
