//! `adsync serve` as a real process, driven only through its HTTP API: a tenant created
//! through the API syncs, its credentials never come back (not in a response, not in the
//! logs, not in clear in the database) and another tenant's key sees none of it; the service
//! refuses to start on PostgreSQL without a master key; a running run is cancelled through
//! the API, and stays cancelled when a run is asked for at once; a refused start leaves the
//! database untouched; `serve --demo` needs no configuration at all.
//!
//! The simulators run in the test process at time scale 60 (100 campaigns take ~10 s); the
//! server gets a scratch PostgreSQL database of its own, and is stopped with SIGTERM.

mod common;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use adsync_sim::{Profile, SimConfig, Simulator};
use common::{
    DEADLINE, Running, ScratchPg, TempDir, adsync, all_text, random_admin_key, random_master_key,
    run, user_lines,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Campaigns of each simulator: at time scale 60 (10 calls a second) a run takes ~10 s.
const CAMPAIGNS: usize = 100;

/// How often a condition is checked again.
const POLL: Duration = Duration::from_millis(100);

/// How long a server may take to stop after SIGTERM: the workers' shutdown grace (10 s) and
/// a margin.
const STOP: Duration = Duration::from_secs(20);

/// A calm-enough reference simulator (the reference server's quirks) of [`CAMPAIGNS`].
async fn simulator() -> Simulator {
    Simulator::start_local(SimConfig {
        campaigns: CAMPAIGNS,
        time_scale: 60.0,
        ..SimConfig::for_profile(Profile::Reference)
    })
    .await
    .unwrap()
}

/// The body of a new tenant on `sim`.
fn tenant_body(name: &str, sim: &Simulator) -> Value {
    json!({
        "name": name,
        "api_url": sim.url(),
        "rate_limit": sim.config().effective_rate_limit().to_string(),
        "credentials": {
            "email": adsync_sim::REFERENCE_EMAIL,
            "password": adsync_sim::REFERENCE_PASSWORD,
        },
    })
}

// ---- The server -----------------------------------------------------------------------------

/// A response, read whole.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?} (status {})", self.text, self.status))
    }

    /// Asserts the status and returns the body as JSON.
    fn expect(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "body: {}", self.text);
        self.json()
    }

    /// Asserts a 404 in the API's one error shape.
    fn not_found(&self, what: &str) {
        assert_eq!(self.status, StatusCode::NOT_FOUND, "{what}: {}", self.text);
        let body = self.json();
        assert_eq!(body["error"], "not_found", "{what}: {body}");
        assert!(body["message"].is_string(), "{what}: {body}");
    }
}

/// `adsync serve` as a child process (killed when dropped; its log printed if the test
/// fails) and an HTTP client for its API.
struct Server {
    process: Option<Running>,
    /// `http://127.0.0.1:PORT`.
    base: String,
    http: reqwest::Client,
}

impl Server {
    /// Starts `cmd` (an `adsync serve`) and waits until it printed the API's address.
    fn start(cmd: &mut std::process::Command) -> Server {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut process = Running::spawn(cmd);
        let banner = tokio::task::block_in_place(|| {
            process.wait_for_line(true, "adsync API listening on", DEADLINE)
        });
        let base = banner
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .and_then(|url| url.strip_suffix("/api/v1"))
            .unwrap_or_else(|| panic!("no http://HOST:PORT/api/v1 in {banner:?}"))
            .to_owned();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap();
        Server {
            process: Some(process),
            base,
            http,
        }
    }

    fn process(&mut self) -> &mut Running {
        self.process.as_mut().expect("the server still runs")
    }

    /// Waits for a line of stdout containing `needle`.
    fn stdout_line(&mut self, needle: &str) -> String {
        let process = self.process();
        tokio::task::block_in_place(|| process.wait_for_line(true, needle, DEADLINE))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"));
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.expect("a readable body");
        Reply {
            status,
            headers,
            text,
        }
    }

    async fn get(&self, path: &str, key: &str) -> Reply {
        self.send(Method::GET, path, Some(key), None).await
    }

    async fn get_public(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, None).await
    }

    async fn post(&self, path: &str, key: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(key), Some(body)).await
    }

    async fn post_empty(&self, path: &str, key: &str) -> Reply {
        self.send(Method::POST, path, Some(key), None).await
    }

    /// Creates a tenant; returns its id.
    async fn create_tenant(&self, key: &str, body: Value) -> (String, Reply) {
        let reply = self.post("/api/v1/tenants", key, body).await;
        let id = reply.expect(StatusCode::CREATED)["id"]
            .as_str()
            .expect("a tenant id")
            .to_owned();
        (id, reply)
    }

    /// Queues a run of the tenant; returns its id.
    async fn queue_run(&self, key: &str, tenant: &str) -> i64 {
        let reply = self
            .post_empty(&format!("/api/v1/tenants/{tenant}/runs"), key)
            .await;
        let body = reply.expect(StatusCode::ACCEPTED);
        assert_eq!(body["status"], "queued", "{body}");
        body["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("a run id: {body}"))
    }

    /// `GET /api/v1/runs/{id}`.
    async fn run(&self, key: &str, id: i64) -> Value {
        self.get(&format!("/api/v1/runs/{id}"), key)
            .await
            .expect(StatusCode::OK)
    }

    /// Polls the run until `done` holds for it (at most `limit`); returns it.
    async fn until_run(
        &self,
        key: &str,
        id: i64,
        limit: Duration,
        what: &str,
        mut done: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let r = self.run(key, id).await;
            if done(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "run {id}: {what} not within {limit:?}: {r:#}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sends SIGTERM and waits for the process to exit (at most [`STOP`]); returns its exit
    /// code and everything it printed.
    fn stop(&mut self) -> (Option<i32>, String) {
        let process = self.process.take().expect("the server still runs");
        process.signal("TERM");
        let asked = Instant::now();
        let output = tokio::task::block_in_place(|| process.finish(STOP));
        println!("stopped {:?} after SIGTERM", asked.elapsed());
        (output.status.code(), all_text(&output))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(p) = &self.process
        {
            let err = p.stderr();
            let tail: Vec<_> = err.lines().rev().take(60).collect();
            eprintln!(
                "--- server stdout:\n{}\n--- server stderr, last lines:\n{}",
                p.stdout(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

/// Every campaign id of the tenant, following `next_cursor`.
async fn campaign_ids(server: &Server, key: &str, tenant: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let mut path = format!("/api/v1/tenants/{tenant}/campaigns?limit=500");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = server.get(&path, key).await.expect(StatusCode::OK);
        for c in page["data"].as_array().expect("data") {
            ids.push(c["id"].as_str().expect("a campaign id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return ids,
        }
    }
    panic!("more than 20 pages of campaigns: {} so far", ids.len());
}

// ---- The database the server wrote ----------------------------------------------------------

/// Every (table, column) of the public schema holding text or bytes, with the number of
/// its values that contain `secret`: as text for text, `json` and arrays, as bytes (UTF-8)
/// for `bytea`.
async fn occurrences_in_database(url: &str, secret: &str) -> Vec<(String, String, i64)> {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let columns: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text
         FROM information_schema.columns c
         WHERE table_schema = 'public'
           AND data_type IN ('text', 'character varying', 'character', 'bytea', 'json', 'jsonb',
                             'ARRAY', 'USER-DEFINED')
           AND EXISTS (SELECT 1 FROM information_schema.tables t
                       WHERE t.table_schema = 'public' AND t.table_name = c.table_name
                         AND t.table_type = 'BASE TABLE')
         ORDER BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut found = Vec::new();
    for (table, column, data_type) in columns {
        let sql = if data_type == "bytea" {
            format!(
                r#"SELECT count(*) FROM "{table}" WHERE position(convert_to($1, 'UTF8') IN "{column}") > 0"#
            )
        } else {
            format!(r#"SELECT count(*) FROM "{table}" WHERE strpos("{column}"::text, $1) > 0"#)
        };
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(secret)
            .fetch_one(&pool)
            .await
            .unwrap();
        found.push((table, column, n));
    }
    pool.close().await;
    found
}

// ---- The tests ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_created_through_the_api_syncs_and_its_secrets_stay_secret() {
    // Arrange: a scratch database, a master key from `adsync keys generate`, an admin key,
    // `adsync serve` with two workers (debug logs: the secrets must stay out of those too).
    let started = Instant::now();
    let dir = TempDir::new("serve_secrets");
    let pg = ScratchPg::create("serve_secrets").await;
    let sim = simulator().await;
    let generated = run(adsync(dir.path()).args(["keys", "generate"]));
    assert!(generated.status.success(), "{}", all_text(&generated));
    let master_key = String::from_utf8(generated.stdout)
        .unwrap()
        .trim()
        .to_owned();
    assert!(master_key.len() >= 40, "a base64 key: {master_key:?}");
    let admin = random_admin_key();
    let password = adsync_sim::REFERENCE_PASSWORD;
    let mut server = Server::start(
        adsync(dir.path())
            .args(["-v", "serve", "--port", "0", "--workers", "2"])
            .args(["--lease-timeout", "5s"])
            .env("DATABASE_URL", &pg.url)
            .env("ADSYNC_MASTER_KEY", &master_key)
            .env("ADSYNC_ADMIN_KEY", &admin),
    );

    // Act, assert: a tenant created with the admin key; its password is not echoed.
    let (tenant, created) = server
        .create_tenant(&admin, tenant_body("acme", &sim))
        .await;
    assert!(!created.text.contains(password), "{}", created.text);
    assert_eq!(created.json()["has_credentials"], true, "{}", created.text);
    assert_eq!(
        created
            .headers
            .get("location")
            .and_then(|v| v.to_str().ok()),
        Some(format!("/api/v1/tenants/{tenant}").as_str())
    );
    assert!(
        !server
            .get(&format!("/api/v1/tenants/{tenant}"), &admin)
            .await
            .text
            .contains(password)
    );

    // A run, queued through the API, done by the embedded workers.
    let run_id = server.queue_run(&admin, &tenant).await;
    let queued_at = Instant::now();
    let done = server
        .until_run(&admin, run_id, DEADLINE, "final", |r| {
            !matches!(r["status"].as_str(), Some("queued" | "running"))
        })
        .await;
    println!(
        "run {run_id} ended {} in {:?}",
        done["status"],
        queued_at.elapsed()
    );
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(done["counters"]["campaigns_synced"], CAMPAIGNS, "{done:#}");
    let ids = campaign_ids(&server, &admin, &tenant).await;
    let distinct: BTreeSet<_> = ids.iter().collect();
    assert_eq!(ids.len(), CAMPAIGNS, "campaigns listed");
    assert_eq!(distinct.len(), CAMPAIGNS, "no campaign listed twice");
    assert_eq!(sim.stats().syncs.len(), CAMPAIGNS, "every campaign synced");

    // A second tenant and a key of its own: it sees nothing of the first.
    let (other, _) = server
        .create_tenant(&admin, tenant_body("globex", &sim))
        .await;
    let created_key = server
        .post(
            &format!("/api/v1/tenants/{other}/api-keys"),
            &admin,
            json!({ "name": "globex reader" }),
        )
        .await;
    let key_body = created_key.expect(StatusCode::CREATED);
    let tenant_key = key_body["key"].as_str().expect("the key").to_owned();
    assert_eq!(
        created_key
            .headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    // The key works for its own tenant, so its 404s below are about scope, not a bad key.
    server
        .get(&format!("/api/v1/tenants/{other}"), &tenant_key)
        .await
        .expect(StatusCode::OK);
    for path in [
        format!("/api/v1/tenants/{tenant}"),
        format!("/api/v1/tenants/{tenant}/runs"),
        format!("/api/v1/tenants/{tenant}/campaigns"),
        format!("/api/v1/runs/{run_id}"),
    ] {
        server.get(&path, &tenant_key).await.not_found(&path);
    }
    server
        .post_empty(&format!("/api/v1/tenants/{tenant}/runs"), &tenant_key)
        .await
        .not_found("queueing a run of another tenant");
    server
        .post_empty(&format!("/api/v1/runs/{run_id}/cancel"), &tenant_key)
        .await
        .not_found("cancelling another tenant's run");
    server
        .post(
            "/api/v1/tenants",
            &tenant_key,
            tenant_body("intruder", &sim),
        )
        .await
        .not_found("creating a tenant with a tenant key");
    let own_log = server
        .get("/api/v1/audit-log", &tenant_key)
        .await
        .expect(StatusCode::OK);
    assert!(
        own_log["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["tenant_id"] != tenant.as_str() && e["target_id"] != tenant.as_str()),
        "a tenant key reads the other tenant's audit entries: {own_log:#}"
    );
    let visible = server
        .get("/api/v1/tenants", &tenant_key)
        .await
        .expect(StatusCode::OK);
    let visible: Vec<_> = visible["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        visible,
        vec![other.clone()],
        "a tenant key lists its own tenant only"
    );
    let all = server
        .get("/api/v1/tenants", &admin)
        .await
        .expect(StatusCode::OK);
    assert_eq!(all["data"].as_array().unwrap().len(), 2, "{all:#}");
    // No key, or a wrong one: 401.
    assert_eq!(
        server.get_public("/api/v1/tenants").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server.get("/api/v1/tenants", "adk_not_a_key").await.status,
        StatusCode::UNAUTHORIZED
    );

    // The audit log: who did what, from where.
    let audit = server
        .get("/api/v1/audit-log", &admin)
        .await
        .expect(StatusCode::OK);
    let entries = audit["data"].as_array().expect("data");
    let of = |action: &str| -> Vec<&Value> {
        entries.iter().filter(|e| e["action"] == action).collect()
    };
    for (action, n) in [
        ("tenant.create", 2),
        ("run.create", 1),
        ("api_key.create", 1),
    ] {
        let found = of(action);
        assert_eq!(found.len(), n, "{action} in {audit:#}");
        for e in found {
            assert_eq!(e["actor"], "admin", "{e}");
            assert!(
                e["remote_addr"]
                    .as_str()
                    .is_some_and(|a| a.contains("127.0.0.1")),
                "an address: {e}"
            );
        }
    }
    assert!(!audit.to_string().contains(password), "{audit:#}");
    assert_eq!(
        of("run.create")[0]["target_id"],
        run_id.to_string(),
        "{audit:#}"
    );

    // Operations: Prometheus, OpenAPI, readiness.
    let metrics = server.get_public("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK, "{}", metrics.text);
    assert!(
        metrics
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        metrics.headers
    );
    for name in ["adsync_runs_total", "adsync_api_requests_total"] {
        assert!(
            metrics.text.lines().any(|l| l.starts_with(name)),
            "{name} in:\n{}",
            metrics.text
        );
    }
    let openapi = server
        .get_public("/api/v1/openapi.json")
        .await
        .expect(StatusCode::OK);
    for path in ["/api/v1/tenants", "/api/v1/runs/{id}"] {
        assert!(
            openapi["paths"][path].is_object(),
            "{path} in the OpenAPI paths"
        );
    }
    server.get_public("/readyz").await.expect(StatusCode::OK);
    server.get_public("/healthz").await.expect(StatusCode::OK);

    // Stop: SIGTERM, a clean exit.
    let (code, printed) = server.stop();
    assert_eq!(code, Some(0), "{printed}");
    println!("the server printed {} bytes", printed.len());

    // No secret in what it printed, nor in clear in any column of its database.
    // The scan finds what is there in clear (a tenant's name).
    let names = occurrences_in_database(&pg.url, "globex").await;
    assert!(
        names
            .iter()
            .any(|(t, c, n)| t == "tenants" && c == "name" && *n == 1),
        "{names:?}"
    );
    for (name, secret) in [
        ("the password", password),
        ("the master key", master_key.as_str()),
        ("the admin key", admin.as_str()),
        ("the tenant's API key", tenant_key.as_str()),
    ] {
        assert!(
            !printed.contains(secret),
            "{name} printed by the server:\n{printed}"
        );
        let found = occurrences_in_database(&pg.url, secret).await;
        assert!(
            found
                .iter()
                .any(|(t, c, _)| t == "tenant_secrets" && c == "password"),
            "the scan covers the sealed credentials: {found:?}"
        );
        let leaks: Vec<_> = found.iter().filter(|(_, _, n)| *n > 0).collect();
        assert!(leaks.is_empty(), "{name} stored in clear: {leaks:?}");
    }
    println!("test took {:?}", started.elapsed());
}

/// `adsync serve --port 0` on a scratch PostgreSQL database with no master key: the
/// database, what the process printed, and how long it took to give up.
async fn serve_without_a_master_key(tag: &str) -> (ScratchPg, std::process::Output, Duration) {
    let dir = TempDir::new(tag);
    let pg = ScratchPg::create(tag).await;
    let started = Instant::now();
    let out = tokio::task::block_in_place(|| {
        Running::spawn(
            adsync(dir.path())
                .args(["serve", "--port", "0"])
                .env("DATABASE_URL", &pg.url)
                .env("ADSYNC_ADMIN_KEY", random_admin_key()),
        )
        .finish(Duration::from_secs(15))
    });
    (pg, out, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_refuses_to_start_on_postgres_without_a_master_key() {
    // Arrange, act
    let (_pg, out, took) = serve_without_a_master_key("serve_no_key").await;

    // Assert: a failure, at once, in one line that says how to make a key.
    println!("refused in {took:?}");
    let (stdout, stderr) = common::text(&out);
    assert!(!out.status.success(), "{}", all_text(&out));
    assert!(
        out.status.code().is_some(),
        "exited, not killed: {}",
        all_text(&out)
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(!stdout.contains("listening"), "{}", all_text(&out));
    let lines = user_lines(&stderr);
    assert_eq!(lines.len(), 1, "one line: {}", all_text(&out));
    assert!(lines[0].contains("adsync keys generate"), "{}", lines[0]);
    assert!(lines[0].contains("ADSYNC_MASTER_KEY"), "{}", lines[0]);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_to_start_without_a_master_key_leaves_the_database_untouched() {
    // Arrange, act
    let (pg, out, _) = serve_without_a_master_key("serve_no_key_untouched").await;

    // Assert: refused, and not one table created (a misconfigured process must not migrate
    // a production schema on its way to failing).
    assert!(!out.status.success(), "{}", all_text(&out));
    let pool = sqlx::PgPool::connect(&pg.url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert!(tables.is_empty(), "created before refusing: {tables:?}");
}

/// `adsync serve` on a scratch database with one tenant of [`CAMPAIGNS`] (~10 s of syncing)
/// whose run is under way.
struct UnderWay {
    // Fields drop in this order: the server dies before its database and simulator.
    server: Server,
    admin: String,
    tenant: String,
    run: i64,
    /// Campaigns synced when it was found under way.
    synced: i64,
    _sim: Simulator,
    _pg: ScratchPg,
    _dir: TempDir,
}

impl UnderWay {
    async fn start(tag: &str) -> UnderWay {
        let dir = TempDir::new(tag);
        let pg = ScratchPg::create(tag).await;
        let sim = simulator().await;
        let admin = random_admin_key();
        let server = Server::start(
            adsync(dir.path())
                .args(["serve", "--port", "0", "--workers", "2"])
                .args(["--lease-timeout", "5s"])
                .env("DATABASE_URL", &pg.url)
                .env("ADSYNC_MASTER_KEY", random_master_key())
                .env("ADSYNC_ADMIN_KEY", &admin),
        );
        let (tenant, _) = server
            .create_tenant(&admin, tenant_body("acme", &sim))
            .await;
        let run = server.queue_run(&admin, &tenant).await;
        let under_way = server
            .until_run(
                &admin,
                run,
                DEADLINE,
                "running with campaigns synced",
                |r| {
                    let status = r["status"].as_str().unwrap_or_default();
                    assert!(
                        matches!(status, "queued" | "running"),
                        "ended before it could be cancelled: {r:#}"
                    );
                    status == "running" && r["counters"]["campaigns_synced"].as_i64() >= Some(10)
                },
            )
            .await;
        UnderWay {
            synced: under_way["counters"]["campaigns_synced"].as_i64().unwrap(),
            server,
            admin,
            tenant,
            run,
            _sim: sim,
            _pg: pg,
            _dir: dir,
        }
    }

    /// `POST /api/v1/runs/{id}/cancel`: 202, the cancellation asked of the worker.
    async fn cancel(&self) {
        let reply = self
            .server
            .post_empty(&format!("/api/v1/runs/{}/cancel", self.run), &self.admin)
            .await;
        let answer = reply.expect(StatusCode::ACCEPTED);
        assert_eq!(answer["id"], self.run, "{answer}");
        assert_eq!(answer["outcome"], "requested", "{answer}");
        assert_eq!(answer["status"], "running", "{answer}");
    }

    /// `POST /api/v1/tenants/{id}/runs`.
    async fn queue_again(&self) -> Reply {
        self.server
            .post_empty(
                &format!("/api/v1/tenants/{}/runs", self.tenant),
                &self.admin,
            )
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_run_can_be_cancelled_through_the_api() {
    // Arrange
    let mut w = UnderWay::start("serve_cancel").await;

    // Act: cancel; once the run is cancelled, queue another.
    let asked = Instant::now();
    w.cancel().await;
    let mut seen = BTreeSet::new();
    // `interrupted` (stop reason `cancelled`) shows for a moment before `cancelled`: see
    // `a_cancelled_run_stays_cancelled_when_a_run_is_queued_at_once` for what that allows.
    let ended = w
        .server
        .until_run(&w.admin, w.run, Duration::from_secs(8), "final", |r| {
            let status = r["status"].as_str().unwrap_or_default().to_owned();
            seen.insert(status.clone());
            !matches!(status.as_str(), "queued" | "running" | "interrupted")
        })
        .await;
    let took = asked.elapsed();
    let again = w.queue_again().await;

    // Assert
    println!(
        "cancel asked with {} campaigns synced; the run ended {} {took:?} later with {} \
         (statuses seen: {seen:?})",
        w.synced, ended["status"], ended["counters"]["campaigns_synced"]
    );
    assert_eq!(ended["status"], "cancelled", "{ended:#}");
    assert_eq!(ended["stop_reason"], "cancelled", "{ended:#}");
    assert!(!ended["cancel_requested_at"].is_null(), "{ended:#}");
    assert!(
        ended["counters"]["campaigns_synced"].as_i64() < Some(CAMPAIGNS as i64),
        "stopped mid-run: {ended:#}"
    );
    assert!(
        ended["lease_expires_at"].is_null(),
        "lease released: {ended:#}"
    );
    let next = again.expect(StatusCode::ACCEPTED);
    assert_eq!(next["status"], "queued", "{next}");
    assert_eq!(
        next["outcome"], "queued",
        "a new run, not the cancelled one: {next}"
    );
    assert_ne!(next["id"], w.run, "{next}");
    let target = w.run.to_string();
    let audit = w
        .server
        .get("/api/v1/audit-log", &w.admin)
        .await
        .expect(StatusCode::OK);
    assert!(
        audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "run.cancel" && e["target_id"] == target.as_str()),
        "run.cancel audited: {audit:#}"
    );
    let (code, printed) = w.server.stop();
    assert_eq!(code, Some(0), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_stays_cancelled_when_a_run_is_queued_at_once() {
    // Arrange
    let mut w = UnderWay::start("serve_cancel_requeue").await;

    // Act: cancel, then ask for a new run until one is accepted, as an impatient client
    // would ("sync now" answers 409 while the cancelled run still runs).
    w.cancel().await;
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut conflicts = 0;
    let accepted = loop {
        let reply = w.queue_again().await;
        if reply.status != StatusCode::CONFLICT {
            break reply;
        }
        conflicts += 1;
        assert!(
            Instant::now() < deadline,
            "409 for 8 s after the cancellation: {}",
            reply.text
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let next = accepted.expect(StatusCode::ACCEPTED);
    let old = w.server.run(&w.admin, w.run).await;

    // Assert: a new run; the cancelled one stays cancelled and is never claimed again.
    println!("accepted after {conflicts} conflicts: {next}; the cancelled run: {old:#}");
    assert_eq!(
        next["outcome"], "queued",
        "the cancelled run was requeued instead of a new run queued: {next}"
    );
    assert_ne!(next["id"], w.run, "{next}");
    assert_eq!(old["status"], "cancelled", "{old:#}");
    assert_eq!(old["attempts"], 1, "never claimed again: {old:#}");
    let (code, printed) = w.server.stop();
    assert_eq!(code, Some(0), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_needs_no_configuration() {
    // Arrange: an empty directory, no database or adsync setting in the environment.
    let dir = TempDir::new("serve_demo");
    let started = Instant::now();

    // Act
    let mut server = Server::start(adsync(dir.path()).args(["serve", "--demo", "--port", "0"]));
    let line = server.stdout_line("demo admin key (this run only):");
    let key = line
        .split_once("demo admin key (this run only):")
        .map(|(_, k)| k.trim().to_owned())
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| panic!("no key in {line:?}"));

    // Assert: three tenants, and the reference one syncs.
    let tenants = server
        .get("/api/v1/tenants", &key)
        .await
        .expect(StatusCode::OK);
    let names: BTreeSet<_> = tenants["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "chaos".to_owned(),
            "reference".to_owned(),
            "tiny-rate-limit".to_owned()
        ]),
        "{tenants:#}"
    );
    let reference = tenants["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "reference")
        .and_then(|t| t["id"].as_str())
        .unwrap()
        .to_owned();
    let deadline = started + Duration::from_secs(40);
    let succeeded = loop {
        let runs = server
            .get(&format!("/api/v1/tenants/{reference}/runs"), &key)
            .await
            .expect(StatusCode::OK);
        if let Some(r) = runs["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["status"] == "succeeded")
        {
            break r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no succeeded run of the reference tenant within 40 s: {runs:#}"
        );
        tokio::time::sleep(POLL).await;
    };
    println!(
        "the reference tenant's run {} succeeded {:?} after the start ({} campaigns synced)",
        succeeded["id"],
        started.elapsed(),
        succeeded["counters"]["campaigns_synced"]
    );
    let (code, printed) = server.stop();
    assert_eq!(code, Some(0), "{printed}");
    let files = dir.files();
    for f in ["adsync-demo.db", "adsync-demo.db.key"] {
        assert!(files.contains(&f.to_owned()), "{f} in {files:?}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("adsync-demo.db.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key file is private: {mode:o}");
    }
}

/// The scheduler, stopped for several ticks and restarted: one catch-up run, not one per
/// missed tick, and the next tick moved past now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_down_for_hours_catches_up_with_one_run() {
    // Arrange: an hourly tenant whose server is stopped; while it is down, five ticks pass
    // (its next run is set five hours back, as if the machine had been off since).
    let dir = TempDir::new("serve_catch_up");
    let pg = ScratchPg::create("serve_catch_up").await;
    let sim = simulator().await;
    let (master, admin) = (random_master_key(), random_admin_key());
    let serve = |dir: &std::path::Path| {
        let mut cmd = adsync(dir);
        cmd.args(["serve", "--port", "0", "--workers", "1"])
            .env("DATABASE_URL", &pg.url)
            .env("ADSYNC_MASTER_KEY", &master)
            .env("ADSYNC_ADMIN_KEY", &admin);
        cmd
    };
    let mut server = Server::start(&mut serve(dir.path()));
    let mut body = tenant_body("hourly", &sim);
    body["schedule"] = json!("0 * * * *");
    let (tenant, _) = server.create_tenant(&admin, body).await;
    let (code, _) = server.stop();
    assert_eq!(code, Some(0));
    let pool = sqlx::PgPool::connect(&pg.url).await.unwrap();
    sqlx::query("UPDATE tenants SET next_run_at = now() - interval '5 hours' WHERE id = $1")
        .bind(&tenant)
        .execute(&pool)
        .await
        .unwrap();

    // Act: the server starts again.
    let server = Server::start(&mut serve(dir.path()));
    let path = format!("/api/v1/tenants/{tenant}/runs");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let listed = server.get(&path, &admin).await.expect(StatusCode::OK);
        if !listed["data"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no catch-up run within {DEADLINE:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    // A few more scheduler passes (it looks every second).
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Assert: one run, queued by the schedule; the next tick is in the future.
    let listed = server.get(&path, &admin).await.expect(StatusCode::OK);
    let all = listed["data"].as_array().unwrap();
    assert_eq!(all.len(), 1, "{listed:#}");
    assert_eq!(all[0]["requested_by"], "schedule", "{listed:#}");
    let t = server
        .get(&format!("/api/v1/tenants/{tenant}"), &admin)
        .await
        .expect(StatusCode::OK);
    let next: chrono::DateTime<chrono::Utc> = t["next_run_at"].as_str().unwrap().parse().unwrap();
    assert!(next > chrono::Utc::now(), "{t:#}");
    assert_eq!(t["ticks_skipped"], 0, "{t:#}");
}
