-- The design document (shared/seed/000_8bed3cdb23dfe877.txt), reproduced exactly:
-- five tables, their indexes, and the three sample error patterns.
-- Later migrations extend this; none of them changes what is declared here.

CREATE TABLE error_logs (
    id SERIAL PRIMARY KEY,
    timestamp TIMESTAMP DEFAULT NOW(),
    error_type VARCHAR(100) NOT NULL,
    error_message TEXT NOT NULL,
    source_system VARCHAR(50) NOT NULL,
    severity VARCHAR(20) DEFAULT 'ERROR',
    stack_trace TEXT,
    elasticsearch_id VARCHAR(100),
    raw_log_data JSONB,
    hash_signature VARCHAR(64) UNIQUE NOT NULL,
    created_at TIMESTAMP DEFAULT NOW()
);

CREATE INDEX idx_error_logs_timestamp ON error_logs(timestamp);
CREATE INDEX idx_error_logs_hash ON error_logs(hash_signature);
CREATE INDEX idx_error_logs_type ON error_logs(error_type);

CREATE TABLE solutions (
    id SERIAL PRIMARY KEY,
    error_hash VARCHAR(64) REFERENCES error_logs(hash_signature),
    solution_type VARCHAR(50) NOT NULL,
    solution_description TEXT NOT NULL,
    solution_commands JSONB NOT NULL,
    success_rate DECIMAL(5,2) DEFAULT 0.00,
    execution_count INTEGER DEFAULT 0,
    last_success_at TIMESTAMP,
    ai_analysis TEXT,
    created_at TIMESTAMP DEFAULT NOW(),
    updated_at TIMESTAMP DEFAULT NOW()
);

CREATE INDEX idx_solutions_error_hash ON solutions(error_hash);

CREATE TABLE execution_history (
    id SERIAL PRIMARY KEY,
    error_log_id INTEGER REFERENCES error_logs(id),
    solution_id INTEGER REFERENCES solutions(id),
    execution_status VARCHAR(20) NOT NULL,
    execution_output TEXT,
    execution_time INTERVAL,
    executed_at TIMESTAMP DEFAULT NOW(),
    executed_by VARCHAR(50) DEFAULT 'auto-resolver'
);

CREATE INDEX idx_execution_history_error_log_id ON execution_history(error_log_id);
CREATE INDEX idx_execution_history_executed_at ON execution_history(executed_at);

CREATE TABLE error_patterns (
    id SERIAL PRIMARY KEY,
    pattern_name VARCHAR(100) NOT NULL,
    pattern_regex TEXT NOT NULL,
    error_category VARCHAR(50) NOT NULL,
    priority INTEGER DEFAULT 5,
    auto_resolve BOOLEAN DEFAULT false,
    created_at TIMESTAMP DEFAULT NOW()
);

CREATE TABLE system_status (
    id SERIAL PRIMARY KEY,
    component_name VARCHAR(50) NOT NULL,
    status VARCHAR(20) NOT NULL,
    last_check TIMESTAMP DEFAULT NOW(),
    error_count INTEGER DEFAULT 0,
    last_error_at TIMESTAMP,
    metadata JSONB
);

INSERT INTO error_patterns VALUES
(1, 'Pod CrashLoopBackOff', 'CrashLoopBackOff.*pod.*', 'kubernetes', 1, true),
(2, 'Out of Memory', 'OutOfMemory|OOMKilled.*', 'resource', 2, true),
(3, 'Connection Refused', 'Connection refused.*port.*', 'network', 3, true);

-- The sample rows carry explicit ids; move the sequence past them so the next
-- pattern a user adds does not collide with id 3.
SELECT setval(pg_get_serial_sequence('error_patterns', 'id'), (SELECT max(id) FROM error_patterns));
