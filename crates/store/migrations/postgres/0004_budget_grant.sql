-- A shared rate budget's grant in one statement (autocommit): lock the row (create it if
-- missing), read the clock, plan, write the new log, return the slots. It replaces a
-- transaction of five statements (BEGIN, SELECT ... FOR UPDATE, the clock, UPDATE, COMMIT).
--
-- THE RULE IS planner.rs's (crates/service/src/budget/planner.rs, `plan`) and db.rs's
-- (`Stored::plan`, `parse`, `join`): this is a second spelling of it, not a second rule. The
-- property tests `the_sql_planner_grants_exactly_what_the_rust_planner_grants`
-- (crates/service/tests/budget.rs) and `a_grant_in_sql_is_the_grant_in_rust_on_any_row` and
-- `the_sql_log_reader_reads_what_parse_reads` (crates/service/src/budget/db.rs) keep them
-- equal: change both, and run them.

-- `a + b`, saturating at the ends of BIGINT (Rust's `i64::saturating_add`).
CREATE FUNCTION adsync_sat_add(a BIGINT, b BIGINT) RETURNS BIGINT
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE
        WHEN b > 0 AND a > 9223372036854775807 - b THEN 9223372036854775807
        WHEN b < 0 AND a < (-9223372036854775807 - 1) - b THEN -9223372036854775807 - 1
        ELSE a + b
    END
$$;

-- A stored send log (`rate_budgets.sends`: ms, comma-separated) as numbers; NULL when any
-- entry is not one. db.rs's `parse`: the whole text blank is an empty log; else each entry,
-- trimmed of white space (Rust's `char::is_whitespace`), is an i64 in Rust's `parse` syntax
-- (an optional sign, ASCII digits).
CREATE FUNCTION adsync_budget_parse_sends(sends TEXT) RETURNS BIGINT[]
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE AS $$
DECLARE
    blank TEXT;
    entry TEXT;
    times BIGINT[] := '{}';
BEGIN
    -- What the service writes: read at once.
    IF sends ~ '^-?[0-9]{1,18}(,-?[0-9]{1,18})*$' THEN
        RETURN string_to_array(sends, ',')::BIGINT[];
    END IF;
    blank := E' \t\n\r\f' || chr(11);
    -- chr() above 127 needs a UTF8 database; any other holds no such character anyway.
    IF current_setting('server_encoding') = 'UTF8' THEN
        blank := blank || chr(133) || chr(160) || chr(5760) || chr(8192) || chr(8193)
            || chr(8194) || chr(8195) || chr(8196) || chr(8197) || chr(8198) || chr(8199)
            || chr(8200) || chr(8201) || chr(8202) || chr(8232) || chr(8233) || chr(8239)
            || chr(8287) || chr(12288);
    END IF;
    IF btrim(sends, blank) = '' THEN
        RETURN times;
    END IF;
    FOREACH entry IN ARRAY string_to_array(sends, ',') LOOP
        entry := btrim(entry, blank);
        IF entry !~ '^[+-]?[0-9]+$' THEN
            RETURN NULL;
        END IF;
        IF entry::NUMERIC NOT BETWEEN -9223372036854775808 AND 9223372036854775807 THEN
            RETURN NULL;
        END IF;
        times := times || entry::BIGINT;
    END LOOP;
    RETURN times;
END
$$;

-- planner.rs's `plan`, argument for argument: up to `min(want, N)` slots, at least one, each
-- where fewer than N of the log (read by its running maximum) lie within `W + M` before it,
-- none before `now_ms` or the hold, none more than the horizon after the first; the new log
-- is the last N of the old one and the granted times.
CREATE FUNCTION adsync_budget_plan(
    log BIGINT[], now_ms BIGINT, requests BIGINT, window_ms BIGINT, margin_ms BIGINT,
    hold_until_ms BIGINT, want BIGINT, horizon_ms BIGINT,
    OUT granted BIGINT[], OUT new_log BIGINT[])
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    n BIGINT := GREATEST(requests, 1);
    span BIGINT := adsync_sat_add(GREATEST(window_ms, 0), GREATEST(margin_ms, 0));
    goal BIGINT := LEAST(GREATEST(want, 1), n);
    floor_ms BIGINT := GREATEST(now_ms, hold_until_ms);
    running BIGINT;
    entry BIGINT;
    len INTEGER := 0;
    t BIGINT;
BEGIN
    granted := '{}';
    new_log := '{}';
    FOREACH entry IN ARRAY COALESCE(log, '{}') LOOP
        running := GREATEST(running, entry);
        new_log := new_log || running;
        len := len + 1;
    END LOOP;
    WHILE cardinality(granted) < goal LOOP
        t := floor_ms;
        IF len > 0 THEN
            t := GREATEST(t, new_log[len]);
        END IF;
        IF len >= n THEN
            t := GREATEST(t, adsync_sat_add(new_log[(len - n + 1)::INTEGER], span));
        END IF;
        IF cardinality(granted) > 0
            AND t > adsync_sat_add(granted[1], GREATEST(horizon_ms, 0)) THEN
            EXIT;
        END IF;
        granted := granted || t;
        new_log := new_log || t;
        len := len + 1;
    END LOOP;
    IF len > n THEN
        new_log := new_log[(len - n + 1)::INTEGER : len];
    END IF;
END
$$;

-- One grant, db.rs's `pg_grant`: the row locked (created with the asked limit if missing),
-- then the clock read (`clock_timestamp()`: a wait for the lock must not age it), then
-- `Stored::plan`: the stricter of the stored and the asked limit, an unreadable log counted
-- as a full window from now (and replaced), `now` plus the lead; the row's log, grant counter
-- and `updated_at` written. Returns the slots, the clock reading (ms), the row's own limit,
-- the first 200 characters of an unreadable log (else NULL), and, for mapping the clock to
-- the caller's, the µs from the statement's start to the reading and from the reading to the
-- end of the work (the commit follows).
CREATE FUNCTION adsync_budget_grant(
    budget_url TEXT, budget_client TEXT, ask_requests BIGINT, ask_window_ms BIGINT,
    ask_margin_ms BIGINT, ask_want BIGINT, ask_horizon_ms BIGINT, ask_lead_ms BIGINT,
    OUT slots BIGINT[], OUT clock_ms BIGINT, OUT row_requests BIGINT,
    OUT row_window_ms BIGINT, OUT unreadable_sends TEXT, OUT waited_us BIGINT,
    OUT worked_us BIGINT)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    stored_sends TEXT;
    stored_hold BIGINT;
    clock TIMESTAMPTZ;
    n BIGINT;
    log BIGINT[];
BEGIN
    SELECT b.requests, b.window_ms, b.sends, b.hold_until_ms
        INTO row_requests, row_window_ms, stored_sends, stored_hold
        FROM rate_budgets b
        WHERE b.api_url = budget_url AND b.client_id = budget_client
        FOR UPDATE;
    -- The row exists but for a budget's first grant: lock it first, create it only if missing.
    IF NOT FOUND THEN
        INSERT INTO rate_budgets (api_url, client_id, requests, window_ms, updated_at)
            VALUES (budget_url, budget_client, ask_requests, ask_window_ms, now())
            ON CONFLICT (api_url, client_id) DO NOTHING;
        SELECT b.requests, b.window_ms, b.sends, b.hold_until_ms
            INTO STRICT row_requests, row_window_ms, stored_sends, stored_hold
            FROM rate_budgets b
            WHERE b.api_url = budget_url AND b.client_id = budget_client
            FOR UPDATE;
    END IF;
    clock := clock_timestamp();
    clock_ms := (extract(epoch FROM clock) * 1000)::BIGINT;
    waited_us := (extract(epoch FROM clock - statement_timestamp()) * 1000000)::BIGINT;

    n := LEAST(GREATEST(row_requests, 1), 4294967295, ask_requests);
    log := adsync_budget_parse_sends(stored_sends);
    IF log IS NULL THEN
        unreadable_sends := left(stored_sends, 200);
        log := array_fill(clock_ms, ARRAY[n::INTEGER]);
    END IF;
    SELECT p.granted, p.new_log INTO slots, log
        FROM adsync_budget_plan(
            log, adsync_sat_add(clock_ms, ask_lead_ms), n,
            GREATEST(row_window_ms, ask_window_ms), ask_margin_ms, stored_hold,
            LEAST(ask_want, n), ask_horizon_ms) p;

    UPDATE rate_budgets b
        SET sends = array_to_string(log, ','),
            grants = b.grants + cardinality(slots),
            updated_at = now()
        WHERE b.api_url = budget_url AND b.client_id = budget_client;
    worked_us := (extract(epoch FROM clock_timestamp() - clock) * 1000000)::BIGINT;
END
$$;
