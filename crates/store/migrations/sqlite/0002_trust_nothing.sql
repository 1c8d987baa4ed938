-- One owner per run (a lease with a fencing epoch), listings that cannot be fooled (passes,
-- drift, warnings), campaigns the platform stopped sending, raw records, derived counters.
-- Same columns and meaning as the PostgreSQL migration; see its comments.

ALTER TABLE sync_runs ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sync_runs ADD COLUMN lease_expires_at TEXT;
ALTER TABLE sync_runs ADD COLUMN platform TEXT;
ALTER TABLE sync_runs ADD COLUMN listing_pass INTEGER NOT NULL DEFAULT 1;
ALTER TABLE sync_runs ADD COLUMN reported_total INTEGER;
ALTER TABLE sync_runs ADD COLUMN page_limit INTEGER;
ALTER TABLE sync_runs ADD COLUMN pass_total INTEGER;
ALTER TABLE sync_runs ADD COLUMN pass_drift INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sync_runs ADD COLUMN listing_complete INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sync_runs ADD COLUMN drift_events INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sync_runs ADD COLUMN warnings INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sync_runs ADD COLUMN campaigns_removed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sync_runs ADD COLUMN campaigns_returned INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sync_runs ADD COLUMN active_seconds REAL NOT NULL DEFAULT 0;
ALTER TABLE sync_runs ADD COLUMN throttled_seconds REAL NOT NULL DEFAULT 0;
ALTER TABLE sync_runs ADD COLUMN floor_seconds REAL;
ALTER TABLE sync_runs ADD COLUMN stop_reason TEXT
    CHECK (stop_reason IN ('cancelled', 'platform_down', 'database_down', 'lease_lost'));

-- The record as received (JSON text).
ALTER TABLE campaigns ADD COLUMN raw TEXT;
ALTER TABLE campaigns ADD COLUMN removed_at TEXT;

CREATE TABLE listing_seen (
    run_id      INTEGER NOT NULL,
    campaign_id TEXT NOT NULL,
    pass        INTEGER NOT NULL,
    PRIMARY KEY (run_id, campaign_id)
) WITHOUT ROWID;

CREATE TABLE run_warnings (
    run_id        INTEGER NOT NULL REFERENCES sync_runs (id),
    kind          TEXT NOT NULL,
    message       TEXT NOT NULL,
    occurrences   INTEGER NOT NULL,
    first_seen_at TEXT NOT NULL,
    PRIMARY KEY (run_id, kind)
) WITHOUT ROWID;

-- SQLite cannot change a CHECK constraint in place: rebuild dead_letters (nothing references
-- it) with the 'listing' stage and the resolution column.
CREATE TABLE dead_letters_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id       TEXT NOT NULL,
    run_id          INTEGER NOT NULL REFERENCES sync_runs (id),
    campaign_id     TEXT NOT NULL,
    stage           TEXT NOT NULL CHECK (stage IN ('listing', 'validation', 'sync')),
    payload         TEXT NOT NULL,
    reason          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 1,
    first_failed_at TEXT NOT NULL,
    last_failed_at  TEXT NOT NULL,
    resolved        INTEGER NOT NULL DEFAULT 0,
    resolved_at     TEXT,
    resolution      TEXT
        CHECK (resolution IN ('synced', 'stored', 'listed', 'removed', 'dismissed')),
    UNIQUE (tenant_id, campaign_id, stage)
);
INSERT INTO dead_letters_new (id, tenant_id, run_id, campaign_id, stage, payload, reason,
    attempts, first_failed_at, last_failed_at, resolved, resolved_at)
SELECT id, tenant_id, run_id, campaign_id, stage, payload, reason, attempts, first_failed_at,
    last_failed_at, resolved, resolved_at
FROM dead_letters;
DROP TABLE dead_letters;
ALTER TABLE dead_letters_new RENAME TO dead_letters;
CREATE INDEX dead_letters_by_run ON dead_letters (run_id) WHERE resolved = 0;
