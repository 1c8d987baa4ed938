-- Dashboard sessions: the cookie holds a random token, the table its SHA-256 hash (nothing
-- here signs anyone in). A session belongs to the key it was opened with: an API key (it
-- ends when the key is revoked) or the configured admin key (it ends when that key changes:
-- `admin_hash` is the hash of the admin key at sign-in).
CREATE TABLE dashboard_sessions (
    token_hash  TEXT PRIMARY KEY,
    key_id      TEXT NOT NULL,
    admin_hash  TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX dashboard_sessions_expiry ON dashboard_sessions (expires_at);
