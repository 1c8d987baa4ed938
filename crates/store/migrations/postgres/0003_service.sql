-- adsync as a service: tenants and their sealed credentials, runs as jobs (status 'queued'),
-- the scheduler's state, shared rate budgets, API keys and the audit log.

-- Runs are the job queue. A run is queued, claimed by a worker (running, on a lease: the
-- mechanism of 0002), and ends; one queued-or-running run per tenant.
ALTER TABLE sync_runs DROP CONSTRAINT sync_runs_status_check;
ALTER TABLE sync_runs ADD CONSTRAINT sync_runs_status_check CHECK (status IN
    ('queued', 'running', 'succeeded', 'partial', 'failed', 'interrupted', 'cancelled'));
DROP INDEX sync_runs_one_running;
CREATE UNIQUE INDEX sync_runs_one_active ON sync_runs (tenant_id)
    WHERE status IN ('queued', 'running');
ALTER TABLE sync_runs
    -- Who asked: 'cli', 'schedule', 'api:<key id>', 'retry'.
    ADD COLUMN requested_by TEXT,
    ADD COLUMN queued_at TIMESTAMPTZ,
    -- Not claimed before this (a run requeued after an outage waits a while).
    ADD COLUMN run_after TIMESTAMPTZ,
    -- Claims by workers (the first one and every take-over after a lease ran out).
    ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0,
    -- Set by a cancel request on a running run; its worker stops it.
    ADD COLUMN cancel_requested_at TIMESTAMPTZ;
CREATE INDEX sync_runs_queued ON sync_runs (queued_at) WHERE status = 'queued';
CREATE INDEX sync_runs_leased ON sync_runs (lease_expires_at) WHERE status = 'running';

CREATE TABLE tenants (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    api_url             TEXT NOT NULL,
    client_id           TEXT NOT NULL,
    rate_limit_requests INTEGER NOT NULL CHECK (rate_limit_requests > 0),
    rate_limit_window_ms BIGINT NOT NULL CHECK (rate_limit_window_ms > 0),
    page_size           BIGINT NOT NULL CHECK (page_size > 0),
    -- Cron (5 or 6 fields) in time_zone; NULL: runs only when asked.
    schedule            TEXT,
    time_zone           TEXT NOT NULL DEFAULT 'UTC',
    paused              BOOLEAN NOT NULL DEFAULT FALSE,
    -- The scheduler: the next tick (cron time plus this tenant's fixed jitter), the last
    -- tick that fired, and ticks skipped because a run was still active.
    next_run_at         TIMESTAMPTZ,
    jitter_ms           BIGINT NOT NULL DEFAULT 0,
    last_tick_at        TIMESTAMPTZ,
    ticks_skipped       BIGINT NOT NULL DEFAULT 0,
    -- Fairness: workers claim the queued run of the least recently served tenant first.
    last_served_at      TIMESTAMPTZ,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX tenants_due ON tenants (next_run_at) WHERE NOT paused AND next_run_at IS NOT NULL;

-- Credentials, sealed (see adsync_service::vault): a data key per tenant wrapped by the
-- master key `key_id`; each field a ciphertext bound to its tenant and field.
CREATE TABLE tenant_secrets (
    tenant_id   TEXT PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    key_id      TEXT NOT NULL,
    wrapped_key BYTEA NOT NULL,
    email       BYTEA NOT NULL,
    password    BYTEA NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

-- API keys: only a hash is stored; NULL tenant_id is an admin key.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT REFERENCES tenants (id) ON DELETE CASCADE,
    key_hash     TEXT NOT NULL UNIQUE,
    name         TEXT,
    created_by   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    revoked_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ
);

-- Every mutation, written in the transaction of the change. Never a secret.
CREATE TABLE audit_log (
    id          BIGSERIAL PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    tenant_id   TEXT,
    remote_addr TEXT,
    detail      TEXT
);
CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, id DESC);

-- A rate budget shared by every process and tenant that spends it: the platform limits per
-- client id. `sends` holds the granted send times (ms since the epoch, database clock),
-- ascending, comma-separated: the last `requests` of them, future reservations included.
CREATE TABLE rate_budgets (
    api_url       TEXT NOT NULL,
    client_id     TEXT NOT NULL,
    requests      INTEGER NOT NULL CHECK (requests > 0),
    window_ms     BIGINT NOT NULL CHECK (window_ms > 0),
    sends         TEXT NOT NULL DEFAULT '',
    hold_until_ms BIGINT NOT NULL DEFAULT 0,
    rate_limited  BIGINT NOT NULL DEFAULT 0,
    grants        BIGINT NOT NULL DEFAULT 0,
    updated_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (api_url, client_id)
);
