-- Console sessions kept by the server (migration 0081): the cookie holds a random token, the
-- row its SHA-256.

-- name: console-session-start
-- A new session; returns its id.
INSERT INTO console_sessions (token_sha256, user_name, groups, remote_address, user_agent, expires_at)
VALUES ($1, $2, $3::text[], $4, left($5, 200), LOCALTIMESTAMP + make_interval(secs => $6))
RETURNING id;

-- name: console-session-find
-- The session of a token while it stands (not ended, not expired); marks it seen.
UPDATE console_sessions SET last_seen_at = LOCALTIMESTAMP
WHERE token_sha256 = $1 AND ended_at IS NULL AND expires_at > LOCALTIMESTAMP
RETURNING id, user_name, groups;

-- name: console-session-end
-- End the session of a token (signing out).
UPDATE console_sessions SET ended_at = LOCALTIMESTAMP, ended_by = $2
WHERE token_sha256 = $1 AND ended_at IS NULL;

-- name: console-session-end-by-id
-- End one session by id (an approver on /sessions); returns whose it was.
UPDATE console_sessions SET ended_at = LOCALTIMESTAMP, ended_by = $2
WHERE id = $1 AND ended_at IS NULL
RETURNING user_name;

-- name: console-sessions-active
-- Sessions that still stand, most recently seen first.
SELECT id, user_name, groups, remote_address, user_agent, created_at, last_seen_at, expires_at
FROM console_sessions
WHERE ended_at IS NULL AND expires_at > LOCALTIMESTAMP
ORDER BY last_seen_at DESC
LIMIT 500;
