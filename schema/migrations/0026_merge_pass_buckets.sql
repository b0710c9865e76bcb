-- The merge pass loads only the templates that can form a family with a row stored since its
-- last pass: same error type and same number of tokens. The index serves that lookup, so a
-- pass costs what the new rows touch, not the size of error_logs.
ALTER TABLE error_templates ADD COLUMN width INTEGER GENERATED ALWAYS AS (cardinality(tokens)) STORED;
CREATE INDEX idx_error_templates_bucket ON error_templates(error_type, width);
