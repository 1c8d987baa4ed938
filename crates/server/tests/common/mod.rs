//! What the server's black-box tests share: a fresh database per test (a new PostgreSQL
//! database at `DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`, dropped
//! afterwards; or a SQLite file), the real server on 127.0.0.1 port 0, and a reqwest client
//! with typed helpers. Every wait has a deadline.
// Each test binary uses some of these helpers, none uses all of them.
#![allow(dead_code)]

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use adsync_service::{
    Service,
    vault::{Keyring, MasterKey},
};
use adsync_store::{NewRun, RunId, Store, sqlite_ts};
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The longest a whole test may take.
pub const DEADLINE: Duration = Duration::from_secs(60);
/// The password every test tenant is created with; it must never come back or be stored in
/// the clear.
pub const PASSWORD: &str = "pw-Zq8!unguessable-7d1f";

fn random_hex() -> String {
    format!("{:016x}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    // No rand dependency needed for a few unique names: RandomState is randomly keyed.
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// A fresh database; [`Db::destroy`] removes it.
pub struct Db {
    pub store: Store,
    cleanup: Cleanup,
}

enum Cleanup {
    Postgres { admin_url: String, name: String },
    Sqlite { path: std::path::PathBuf },
}

impl Db {
    /// A new PostgreSQL database, migrated.
    pub async fn postgres() -> Db {
        let base = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let name = format!("adsync_server_{}", random_hex());
        let admin = sqlx::PgPool::connect(&base)
            .await
            .expect("PostgreSQL at DATABASE_URL (or 127.0.0.1:5432) must be reachable");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&admin)
            .await
            .expect("create the test database");
        admin.close().await;
        let mut url = url::Url::parse(&base).expect("DATABASE_URL is a URL");
        url.set_path(&format!("/{name}"));
        let store = Store::connect(url.as_str())
            .await
            .expect("connect the test database");
        Db {
            store,
            cleanup: Cleanup::Postgres {
                admin_url: base,
                name,
            },
        }
    }

    /// A new SQLite file, migrated.
    pub async fn sqlite() -> Db {
        let path = std::env::temp_dir().join(format!("adsync-server-{}.db", random_hex()));
        let store = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("create the SQLite database");
        Db {
            store,
            cleanup: Cleanup::Sqlite { path },
        }
    }

    async fn destroy(self) {
        self.store.close().await;
        match self.cleanup {
            Cleanup::Postgres { admin_url, name } => {
                if let Ok(admin) = sqlx::PgPool::connect(&admin_url).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .execute(&admin)
                    .await;
                    admin.close().await;
                }
            }
            Cleanup::Sqlite { path } => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
        }
    }
}

/// The server under test, and a client for it.
#[derive(Clone)]
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub store: Store,
    pub service: Service,
    pub admin: String,
    pub addr: SocketAddr,
}

/// Runs `test` against a server on a fresh PostgreSQL database.
pub async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(TestApp) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    run(Db::postgres().await, test).await;
}

/// Runs `test` against a server with `options` on a fresh PostgreSQL database.
#[allow(dead_code)]
pub async fn on_postgres_with<F, Fut>(options: adsync_server::ServerOptions, test: F)
where
    F: FnOnce(TestApp) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    run_with(Db::postgres().await, options, test).await;
}

/// Runs `test` against a server on a fresh SQLite database.
pub async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(TestApp) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    run(Db::sqlite().await, test).await;
}

async fn run<F, Fut>(db: Db, test: F)
where
    F: FnOnce(TestApp) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    run_with(db, adsync_server::ServerOptions::default(), test).await;
}

async fn run_with<F, Fut>(db: Db, options: adsync_server::ServerOptions, test: F)
where
    F: FnOnce(TestApp) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let _ = rustls::crypto::ring::default_provider().install_default();
    let admin = format!("test-admin-{}", random_hex());
    let keyring = Arc::new(Keyring::new(MasterKey::generate(), vec![]));
    let service = Service::new(
        db.store.clone(),
        keyring,
        Some(SecretString::from(admin.clone())),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(adsync_server::serve(
        listener,
        adsync_server::app_with(service.clone(), options),
        shutdown.clone(),
    ));
    let app = TestApp {
        base: format!("http://{addr}"),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        store: db.store.clone(),
        service,
        admin,
        addr,
    };
    // The test in a task of its own, so that its panic is caught and the database still
    // dropped.
    let outcome = tokio::time::timeout(DEADLINE, tokio::spawn(test(app))).await;
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), server).await;
    db.destroy().await;
    match outcome {
        Err(_) => panic!("the test did not finish within {DEADLINE:?}"),
        Ok(Err(join)) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Ok(Err(join)) => panic!("the test task failed: {join}"),
        Ok(Ok(())) => {}
    }
    stopped
        .expect("the server stops within 10 s of shutdown")
        .expect("the server task did not panic")
        .expect("the server ran without an I/O error");
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    /// The body as JSON (fails the test when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?} (status {})", self.text, self.status))
    }

    /// Asserts the status and the error shape, and returns the error kind.
    pub fn error(&self, status: StatusCode) -> String {
        assert_eq!(self.status, status, "body: {}", self.text);
        let body = self.json();
        let kind = body["error"].as_str().expect("an error kind").to_owned();
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "a message: {body}"
        );
        kind
    }
}

impl TestApp {
    /// Sends a request with `key` (none: no Authorization header) and an optional body: JSON
    /// text sent as `application/json`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let res = req.send().await.expect("the server answers");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.expect("a readable body");
        Reply {
            status,
            headers,
            text,
        }
    }

    pub async fn get(&self, path: &str, key: &str) -> Reply {
        self.send(Method::GET, path, Some(key), None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(key), Some(&body.to_string()))
            .await
    }

    pub async fn post_empty(&self, path: &str, key: &str) -> Reply {
        self.send(Method::POST, path, Some(key), None).await
    }

    pub async fn patch(&self, path: &str, key: &str, body: Value) -> Reply {
        self.send(Method::PATCH, path, Some(key), Some(&body.to_string()))
            .await
    }

    pub async fn delete(&self, path: &str, key: &str) -> Reply {
        self.send(Method::DELETE, path, Some(key), None).await
    }

    /// A valid tenant body named `name`.
    pub fn tenant_body(name: &str) -> Value {
        json!({
            "name": name,
            "api_url": "https://ads.example.com",
            "rate_limit": "10/60s",
            "credentials": { "email": "ops@example.com", "password": PASSWORD },
        })
    }

    /// Creates a tenant as admin; returns its id.
    pub async fn create_tenant(&self, name: &str) -> String {
        let reply = self
            .post("/api/v1/tenants", &self.admin, Self::tenant_body(name))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        reply.json()["id"].as_str().unwrap().to_owned()
    }

    /// Creates a key for `tenant` as admin; returns (key id, key).
    pub async fn tenant_key(&self, tenant: &str) -> (String, String) {
        let reply = self
            .post(
                &format!("/api/v1/tenants/{tenant}/api-keys"),
                &self.admin,
                json!({ "name": "test" }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        let body = reply.json();
        (
            body["id"].as_str().unwrap().to_owned(),
            body["key"].as_str().unwrap().to_owned(),
        )
    }

    /// Rows in `table` (a literal of the test).
    pub async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM {table}");
        match &self.store {
            Store::Postgres(p) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(p)
                .await
                .unwrap(),
            Store::Sqlite(p) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(p)
                .await
                .unwrap(),
        }
    }

    /// Starts a run of `tenant` as a CLI would (it holds the tenant's one active slot).
    pub async fn start_run(&self, tenant: &str) -> RunId {
        let (run, _lease) = self
            .store
            .create_run(
                NewRun {
                    tenant,
                    page_size: 10,
                    platform: "simulator",
                    owner: "test:1",
                },
                Duration::from_secs(3600),
            )
            .await
            .unwrap();
        run.id
    }
}

/// A campaign row to insert.
pub struct Row<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub status: &'a str,
    pub budget: &'a str,
    pub impressions: i64,
    pub removed: bool,
}

/// Inserts campaigns of `tenant` stored by `run`, with their raw record, as a sync would.
pub async fn insert_campaigns(store: &Store, tenant: &str, run: RunId, rows: &[Row<'_>]) {
    let created: DateTime<Utc> = "2024-12-11T10:30:00Z".parse().unwrap();
    let now = Utc::now();
    for r in rows {
        let raw = json!({
            "id": r.id, "name": r.name, "status": r.status,
            "budget": serde_json::Number::from_string_unchecked(r.budget.to_owned()),
            "impressions": r.impressions, "clicks": r.impressions / 10, "conversions": 1,
            "created_at": "2024-12-11T10:30:00Z", "extra": { "k": [1, 2] },
        })
        .to_string();
        let removed = r.removed.then_some(now);
        match store {
            Store::Postgres(p) => {
                sqlx::query(
                    "INSERT INTO campaigns (tenant_id, id, name, status, budget, impressions,
                        clicks, conversions, created_at, first_seen_at, updated_at, last_run_id,
                        raw, removed_at)
                     VALUES ($1, $2, $3, $4, CAST($5 AS NUMERIC), $6, $7, 1, $8, $9, $9, $10,
                        adsync_raw_jsonb($11), $12)",
                )
                .bind(tenant)
                .bind(r.id)
                .bind(r.name)
                .bind(r.status)
                .bind(r.budget)
                .bind(r.impressions)
                .bind(r.impressions / 10)
                .bind(created)
                .bind(now)
                .bind(run)
                .bind(&raw)
                .bind(removed)
                .execute(p)
                .await
                .unwrap();
            }
            Store::Sqlite(p) => {
                sqlx::query(
                    "INSERT INTO campaigns (tenant_id, id, name, status, budget, impressions,
                        clicks, conversions, created_at, first_seen_at, updated_at, last_run_id,
                        raw, removed_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $9, $10, $11, $12)",
                )
                .bind(tenant)
                .bind(r.id)
                .bind(r.name)
                .bind(r.status)
                .bind(r.budget)
                .bind(r.impressions)
                .bind(r.impressions / 10)
                .bind(sqlite_ts(created))
                .bind(sqlite_ts(now))
                .bind(run)
                .bind(&raw)
                .bind(removed.map(sqlite_ts))
                .execute(p)
                .await
                .unwrap();
            }
        }
    }
}

/// Inserts one `campaign_metrics` row.
pub async fn insert_metric(
    store: &Store,
    tenant: &str,
    campaign: &str,
    run: RunId,
    impressions: i64,
) {
    let at = Utc::now();
    const SQL: &str = "INSERT INTO campaign_metrics (tenant_id, campaign_id, run_id, observed_at,
        impressions, clicks, conversions) VALUES ($1, $2, $3, $4, $5, 0, 0)";
    match store {
        Store::Postgres(p) => {
            sqlx::query(SQL)
                .bind(tenant)
                .bind(campaign)
                .bind(run)
                .bind(at)
                .bind(impressions)
                .execute(p)
                .await
                .unwrap();
        }
        Store::Sqlite(p) => {
            sqlx::query(SQL)
                .bind(tenant)
                .bind(campaign)
                .bind(run)
                .bind(sqlite_ts(at))
                .bind(impressions)
                .execute(p)
                .await
                .unwrap();
        }
    }
}
