-- Workers say they are alive: each process running a worker upserts its row about every half
-- lease (`seen_at`, with the lease ttl it works under) and deletes it when it stops cleanly. A
-- row whose `seen_at` is older than its ttl is a worker that died or lost the database.
CREATE TABLE workers (
    id          TEXT PRIMARY KEY,
    slots       BIGINT NOT NULL,
    running     BIGINT NOT NULL,
    ttl_ms      BIGINT NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    seen_at     TIMESTAMPTZ NOT NULL
);
