-- Console sessions kept by the server (issue 21). The signed cookie of issue 15 held the whole
-- session, so signing out only deleted it from the browser: a saved copy still worked until it
-- expired (a review switched the kill switch on with one). The cookie now holds a random token;
-- the row (keyed by the token's SHA-256, so a reader of this table cannot sign in with it) says
-- whether the session still stands. Signing out ends it, an approver can end anyone's from
-- /sessions, and every copy of the service sees that at the next request.
CREATE TABLE console_sessions (
    id BIGSERIAL PRIMARY KEY,
    token_sha256 CHAR(64) NOT NULL UNIQUE,
    user_name VARCHAR(50) NOT NULL,
    groups TEXT[] NOT NULL DEFAULT '{}',
    remote_address TEXT,
    user_agent TEXT,
    created_at TIMESTAMP NOT NULL DEFAULT LOCALTIMESTAMP,
    last_seen_at TIMESTAMP NOT NULL DEFAULT LOCALTIMESTAMP,
    expires_at TIMESTAMP NOT NULL,
    ended_at TIMESTAMP,
    ended_by VARCHAR(50)
);
CREATE INDEX console_sessions_active ON console_sessions (expires_at) WHERE ended_at IS NULL;
