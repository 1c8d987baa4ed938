-- no-transaction
-- adsync as a service (see the PostgreSQL migration of the same name for what each column
-- means). SQLite cannot change a CHECK constraint in place and sync_runs is referenced by
-- dead_letters and run_warnings, so it is rebuilt the way SQLite documents: foreign keys off
-- (only possible outside a transaction, hence no-transaction), new table, copy, drop,
-- rename, check, all in one transaction.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
CREATE TABLE sync_runs_new (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id            TEXT NOT NULL,
    started_at           TEXT NOT NULL,
    finished_at          TEXT,
    status               TEXT NOT NULL CHECK (status IN
        ('queued', 'running', 'succeeded', 'partial', 'failed', 'interrupted', 'cancelled')),
    page_size            INTEGER NOT NULL CHECK (page_size > 0),
    next_page            INTEGER NOT NULL DEFAULT 1,
    listing_done         INTEGER NOT NULL DEFAULT 0,
    resumes              INTEGER NOT NULL DEFAULT 0,
    owner                TEXT,
    heartbeat_at         TEXT,
    pages                INTEGER NOT NULL DEFAULT 0,
    campaigns_seen       INTEGER NOT NULL DEFAULT 0,
    campaigns_stored     INTEGER NOT NULL DEFAULT 0,
    campaigns_synced     INTEGER NOT NULL DEFAULT 0,
    dead_lettered        INTEGER NOT NULL DEFAULT 0,
    requests             INTEGER NOT NULL DEFAULT 0,
    retries              INTEGER NOT NULL DEFAULT 0,
    rate_limited         INTEGER NOT NULL DEFAULT 0,
    token_refreshes      INTEGER NOT NULL DEFAULT 0,
    limiter_wait_seconds REAL NOT NULL DEFAULT 0,
    error                TEXT,
    lease_epoch          INTEGER NOT NULL DEFAULT 0,
    lease_expires_at     TEXT,
    platform             TEXT,
    listing_pass         INTEGER NOT NULL DEFAULT 1,
    reported_total       INTEGER,
    page_limit           INTEGER,
    pass_total           INTEGER,
    pass_drift           INTEGER NOT NULL DEFAULT 0,
    listing_complete     INTEGER NOT NULL DEFAULT 0,
    drift_events         INTEGER NOT NULL DEFAULT 0,
    warnings             INTEGER NOT NULL DEFAULT 0,
    campaigns_removed    INTEGER NOT NULL DEFAULT 0,
    campaigns_returned   INTEGER NOT NULL DEFAULT 0,
    active_seconds       REAL NOT NULL DEFAULT 0,
    throttled_seconds    REAL NOT NULL DEFAULT 0,
    floor_seconds        REAL,
    stop_reason          TEXT
        CHECK (stop_reason IN ('cancelled', 'platform_down', 'database_down', 'lease_lost')),
    requested_by         TEXT,
    queued_at            TEXT,
    run_after            TEXT,
    attempts             INTEGER NOT NULL DEFAULT 0,
    cancel_requested_at  TEXT
);
INSERT INTO sync_runs_new (id, tenant_id, started_at, finished_at, status, page_size,
    next_page, listing_done, resumes, owner, heartbeat_at, pages, campaigns_seen,
    campaigns_stored, campaigns_synced, dead_lettered, requests, retries, rate_limited,
    token_refreshes, limiter_wait_seconds, error, lease_epoch, lease_expires_at, platform,
    listing_pass, reported_total, page_limit, pass_total, pass_drift, listing_complete,
    drift_events, warnings, campaigns_removed, campaigns_returned, active_seconds,
    throttled_seconds, floor_seconds, stop_reason)
SELECT id, tenant_id, started_at, finished_at, status, page_size,
    next_page, listing_done, resumes, owner, heartbeat_at, pages, campaigns_seen,
    campaigns_stored, campaigns_synced, dead_lettered, requests, retries, rate_limited,
    token_refreshes, limiter_wait_seconds, error, lease_epoch, lease_expires_at, platform,
    listing_pass, reported_total, page_limit, pass_total, pass_drift, listing_complete,
    drift_events, warnings, campaigns_removed, campaigns_returned, active_seconds,
    throttled_seconds, floor_seconds, stop_reason
FROM sync_runs;
DROP TABLE sync_runs;
ALTER TABLE sync_runs_new RENAME TO sync_runs;
CREATE INDEX sync_runs_by_tenant ON sync_runs (tenant_id, id DESC);
CREATE UNIQUE INDEX sync_runs_one_active ON sync_runs (tenant_id)
    WHERE status IN ('queued', 'running');
CREATE INDEX sync_runs_queued ON sync_runs (queued_at) WHERE status = 'queued';
CREATE INDEX sync_runs_leased ON sync_runs (lease_expires_at) WHERE status = 'running';

CREATE TABLE tenants (
    id                   TEXT PRIMARY KEY,
    name                 TEXT NOT NULL,
    api_url              TEXT NOT NULL,
    client_id            TEXT NOT NULL,
    rate_limit_requests  INTEGER NOT NULL CHECK (rate_limit_requests > 0),
    rate_limit_window_ms INTEGER NOT NULL CHECK (rate_limit_window_ms > 0),
    page_size            INTEGER NOT NULL CHECK (page_size > 0),
    schedule             TEXT,
    time_zone            TEXT NOT NULL DEFAULT 'UTC',
    paused               INTEGER NOT NULL DEFAULT 0,
    next_run_at          TEXT,
    jitter_ms            INTEGER NOT NULL DEFAULT 0,
    last_tick_at         TEXT,
    ticks_skipped        INTEGER NOT NULL DEFAULT 0,
    last_served_at       TEXT,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
);
CREATE INDEX tenants_due ON tenants (next_run_at) WHERE paused = 0 AND next_run_at IS NOT NULL;

CREATE TABLE tenant_secrets (
    tenant_id   TEXT PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    key_id      TEXT NOT NULL,
    wrapped_key BLOB NOT NULL,
    email       BLOB NOT NULL,
    password    BLOB NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT REFERENCES tenants (id) ON DELETE CASCADE,
    key_hash     TEXT NOT NULL UNIQUE,
    name         TEXT,
    created_by   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    revoked_at   TEXT,
    last_used_at TEXT
);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    tenant_id   TEXT,
    remote_addr TEXT,
    detail      TEXT
);
CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, id DESC);

CREATE TABLE rate_budgets (
    api_url       TEXT NOT NULL,
    client_id     TEXT NOT NULL,
    requests      INTEGER NOT NULL CHECK (requests > 0),
    window_ms     INTEGER NOT NULL CHECK (window_ms > 0),
    sends         TEXT NOT NULL DEFAULT '',
    hold_until_ms INTEGER NOT NULL DEFAULT 0,
    rate_limited  INTEGER NOT NULL DEFAULT 0,
    grants        INTEGER NOT NULL DEFAULT 0,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (api_url, client_id)
);
PRAGMA foreign_key_check;
COMMIT;
PRAGMA foreign_keys = ON;
