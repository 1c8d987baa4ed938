-- adsync schema, SQLite. Same tables and columns as PostgreSQL. Timestamps are RFC 3339 text
-- in UTC with microseconds (sortable as text); budget is the exact decimal text with two
-- places ('1100.50'), never a float.

CREATE TABLE sync_runs (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id            TEXT NOT NULL,
    started_at           TEXT NOT NULL,
    finished_at          TEXT,
    status               TEXT NOT NULL
        CHECK (status IN ('running', 'succeeded', 'partial', 'failed', 'interrupted')),
    page_size            INTEGER NOT NULL CHECK (page_size > 0),
    next_page            INTEGER NOT NULL DEFAULT 1,
    listing_done         INTEGER NOT NULL DEFAULT 0,
    resumes              INTEGER NOT NULL DEFAULT 0,
    -- Who works on the run ('host:pid') and when it last said so: a second process must
    -- not resume a run whose owner is alive.
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
    error                TEXT
);
CREATE INDEX sync_runs_by_tenant ON sync_runs (tenant_id, id DESC);
CREATE UNIQUE INDEX sync_runs_one_running ON sync_runs (tenant_id) WHERE status = 'running';

CREATE TABLE campaigns (
    tenant_id     TEXT NOT NULL,
    id            TEXT NOT NULL,
    name          TEXT NOT NULL,
    status        TEXT NOT NULL,
    budget        TEXT NOT NULL CHECK (budget NOT LIKE '-%'),
    impressions   INTEGER NOT NULL CHECK (impressions >= 0),
    clicks        INTEGER NOT NULL CHECK (clicks >= 0),
    conversions   INTEGER NOT NULL CHECK (conversions >= 0),
    created_at    TEXT NOT NULL,
    first_seen_at TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    synced_at     TEXT,
    synced_run_id INTEGER,
    -- No foreign keys on the per-row tables: see the PostgreSQL migration.
    last_run_id   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
) WITHOUT ROWID;

CREATE TABLE campaign_metrics (
    tenant_id   TEXT NOT NULL,
    campaign_id TEXT NOT NULL,
    run_id      INTEGER NOT NULL,
    observed_at TEXT NOT NULL,
    impressions INTEGER NOT NULL,
    clicks      INTEGER NOT NULL,
    conversions INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, campaign_id, run_id)
) WITHOUT ROWID;

CREATE TABLE dead_letters (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id       TEXT NOT NULL,
    run_id          INTEGER NOT NULL REFERENCES sync_runs (id),
    campaign_id     TEXT NOT NULL,
    stage           TEXT NOT NULL CHECK (stage IN ('validation', 'sync')),
    payload         TEXT NOT NULL,
    reason          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 1,
    first_failed_at TEXT NOT NULL,
    last_failed_at  TEXT NOT NULL,
    resolved        INTEGER NOT NULL DEFAULT 0,
    resolved_at     TEXT,
    UNIQUE (tenant_id, campaign_id, stage)
);
