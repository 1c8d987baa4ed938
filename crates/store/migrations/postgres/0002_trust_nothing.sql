-- One owner per run (a lease with a fencing epoch), listings that cannot be fooled (passes,
-- drift, warnings), campaigns the platform stopped sending, raw records, derived counters.

ALTER TABLE sync_runs
    -- The lease: `owner` holds the run until lease_expires_at, renewed by its heartbeat.
    -- lease_epoch grows at every take-over; every write of the run checks it, so a process
    -- that lost its lease (paused, partitioned) cannot write.
    ADD COLUMN lease_epoch BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN lease_expires_at TIMESTAMPTZ,
    -- Where the data comes from: the platform's base URL, or 'simulator'.
    ADD COLUMN platform TEXT,
    -- The listing checkpoint beyond next_page: the pass (a listing the platform changed under
    -- it is listed again), the platform's latest total and the page size it really used, the
    -- total when the pass began and whether it moved since, and whether the listing is proven
    -- complete (only then are absent campaigns marked removed).
    ADD COLUMN listing_pass INTEGER NOT NULL DEFAULT 1,
    ADD COLUMN reported_total BIGINT,
    ADD COLUMN page_limit BIGINT,
    ADD COLUMN pass_total BIGINT,
    ADD COLUMN pass_drift BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN listing_complete BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN drift_events INTEGER NOT NULL DEFAULT 0,
    -- Derived from run_warnings while the run is open, frozen when it ends.
    ADD COLUMN warnings BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN campaigns_removed BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN campaigns_returned BIGINT NOT NULL DEFAULT 0,
    -- Seconds processes worked on the run (summed over resumes), the part of it the rate
    -- limiter held requests back, and the least time the platform's limit allows for the
    -- campaigns it reported.
    ADD COLUMN active_seconds DOUBLE PRECISION NOT NULL DEFAULT 0,
    ADD COLUMN throttled_seconds DOUBLE PRECISION NOT NULL DEFAULT 0,
    ADD COLUMN floor_seconds DOUBLE PRECISION,
    -- Why an interrupted run stopped: cancelled, platform_down, database_down, lease_lost.
    ADD COLUMN stop_reason TEXT
        CHECK (stop_reason IN ('cancelled', 'platform_down', 'database_down', 'lease_lost'));

-- The record as received, so fields adsync does not model are not lost. JSONB where it can
-- hold it; a record JSONB refuses (a \u0000, a number beyond NUMERIC) is kept as a JSONB
-- string holding the exact text (see adsync_raw_jsonb).
ALTER TABLE campaigns
    ADD COLUMN raw JSONB,
    -- Set when a complete listing no longer has the campaign; cleared when it comes back.
    -- Rows are never deleted by a sync.
    ADD COLUMN removed_at TIMESTAMPTZ;

CREATE FUNCTION adsync_raw_jsonb(raw TEXT) RETURNS JSONB
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    RETURN raw::jsonb;
EXCEPTION WHEN others THEN
    RETURN to_jsonb(raw);
END
$$;

-- Which campaigns each pass of an open run listed: the sets the pager checks pages against
-- after a resume, and what removal marking compares with. Emptied when the run ends.
CREATE TABLE listing_seen (
    run_id      BIGINT NOT NULL,
    campaign_id TEXT NOT NULL,
    pass        INTEGER NOT NULL,
    PRIMARY KEY (run_id, campaign_id)
);

-- What the platform did that adsync noticed and worked around, once per kind and run.
CREATE TABLE run_warnings (
    run_id        BIGINT NOT NULL REFERENCES sync_runs (id),
    kind          TEXT NOT NULL,
    message       TEXT NOT NULL,
    occurrences   BIGINT NOT NULL,
    first_seen_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (run_id, kind)
);

-- Pages can be dead letters too (well-formed JSON of the wrong shape); and how each letter
-- was resolved.
ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_stage_check;
ALTER TABLE dead_letters
    ADD CONSTRAINT dead_letters_stage_check CHECK (stage IN ('listing', 'validation', 'sync')),
    ADD COLUMN resolution TEXT
        CHECK (resolution IN ('synced', 'stored', 'listed', 'removed', 'dismissed'));
CREATE INDEX dead_letters_by_run ON dead_letters (run_id) WHERE NOT resolved;
